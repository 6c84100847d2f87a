"""Processes the benchmark starts (agent, plugins), each stopped by its own pid, and a sampler
of one process's CPU time and resident memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .stats import parse_proc_stat, parse_proc_status_kib

TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE = 30.0  # seconds a process gets after SIGTERM (the agent drains its workers)
SAMPLE_PERIOD = 0.2  # seconds between RSS samples; short bursts last a few seconds


@dataclass
class Proc:
    """A child process with its output in a log file; `stop()` signals exactly this pid."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.env, cwd=self.cwd)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def cpu_seconds(pid: int) -> float:
    return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text()).seconds(TICKS)


def rss_kib(pid: int) -> int:
    return parse_proc_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS")


@dataclass
class Sampler:
    """Samples one pid's RSS in the background; `window()` gives CPU seconds and peak RSS since
    the last `mark()`."""

    pid: int
    peak_kib: int = 0
    _cpu_mark: float = 0.0
    _task: asyncio.Task[None] | None = None
    series: list[tuple[float, int]] = field(default_factory=list)  # (unix time, RSS KiB)

    def start(self) -> Sampler:
        self.mark()
        self._task = asyncio.ensure_future(self._run())
        return self

    def mark(self) -> None:
        self._cpu_mark = cpu_seconds(self.pid)
        self.peak_kib = rss_kib(self.pid)

    def window(self) -> tuple[float, int]:
        with contextlib.suppress(OSError):
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
        return cpu_seconds(self.pid) - self._cpu_mark, self.peak_kib

    async def _run(self) -> None:
        while True:
            try:
                rss = rss_kib(self.pid)
            except OSError:
                return  # the process is gone
            self.peak_kib = max(self.peak_kib, rss)
            self.series.append((time.time(), rss))
            await asyncio.sleep(SAMPLE_PERIOD)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
