"""Test doubles for the kubelet front's backend Protocols (vnode/kubelet/backends.py).

Real behaviour where it matters: the exec backend runs a real local subprocess (optionally on
a real pty), so bytes, EOF, exit codes and resizes go through an actual process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import struct
import termios
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vnode.kubelet.backends import (
    AccessDecision,
    ExecNotSupported,
    ExecSpec,
    OutputChannel,
    TerminalSize,
    UserInfo,
)
from vnode.kubelet.requests import LogOptions


def make_pod(namespace: str, name: str, *, uid: str = "0e3c6f7a-1111-2222-3333-444455556666",
             containers: Sequence[str] = ("main",), node: str = "vnode-test") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
        "spec": {"nodeName": node, "containers": [{"name": c, "image": "busybox"} for c in containers]},
        "status": {"phase": "Running"},
    }


@dataclass
class StaticPods:
    pods: list[dict[str, Any]] = field(default_factory=list)

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        for pod in self.pods:
            meta = pod["metadata"]
            if meta["namespace"] == namespace and meta["name"] == name:
                return pod
        return None

    async def list_pods(self) -> Sequence[Mapping[str, Any]]:
        return list(self.pods)


@dataclass
class StaticLogs:
    """Serves fixed log text; with follow, appends ``follow_lines`` one by one, then ends."""

    text: bytes = b""
    follow_lines: list[bytes] = field(default_factory=list)
    follow_interval: float = 0.05
    calls: list[tuple[str, str, str, LogOptions]] = field(default_factory=list)

    async def logs(self, namespace: str, pod: str, container: str, options: LogOptions) -> AsyncIterator[bytes]:
        self.calls.append((namespace, pod, container, options))
        return self._stream(options)

    async def _stream(self, options: LogOptions) -> AsyncIterator[bytes]:
        lines = self.text.splitlines(keepends=True)
        if options.tail_lines is not None:
            lines = lines[-options.tail_lines:] if options.tail_lines else []
        for line in lines:
            yield line
        if options.follow:
            for line in self.follow_lines:
                await asyncio.sleep(self.follow_interval)
                yield line


class SubprocessSession:
    """An ExecSession backed by a local process (argv list, never a shell string)."""

    def __init__(self, proc: asyncio.subprocess.Process, master_fd: int | None) -> None:
        self.proc = proc
        self._master = master_fd
        self._closed = False

    @classmethod
    async def start(cls, spec: ExecSpec) -> SubprocessSession:
        if spec.tty:
            master, slave = pty.openpty()
            proc = await asyncio.create_subprocess_exec(
                *spec.command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
            )
            os.close(slave)
            return cls(proc, master)
        proc = await asyncio.create_subprocess_exec(
            *spec.command,
            stdin=asyncio.subprocess.PIPE if spec.stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, None)

    async def send_stdin(self, data: bytes) -> None:
        if self._master is not None:
            os.write(self._master, data)  # test helper: small writes to a pty do not block
            return
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self._master is not None:
            os.write(self._master, b"\x04")  # ^D: EOF for the terminal's line discipline
        elif self.proc.stdin is not None:
            self.proc.stdin.close()

    async def resize(self, size: TerminalSize) -> None:
        if self._master is not None:
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))

    async def output(self) -> AsyncIterator[tuple[OutputChannel, bytes]]:
        if self._master is not None:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    data = await loop.run_in_executor(None, os.read, self._master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    return
                if not data:
                    return
                yield "stdout", data
        queue: asyncio.Queue[tuple[OutputChannel, bytes] | None] = asyncio.Queue(16)

        async def pump(channel: OutputChannel, reader: asyncio.StreamReader | None) -> None:
            while reader is not None:
                data = await reader.read(65536)
                if not data:
                    break
                await queue.put((channel, data))
            await queue.put(None)

        tasks = [asyncio.create_task(pump("stdout", self.proc.stdout)),
                 asyncio.create_task(pump("stderr", self.proc.stderr))]
        try:
            open_streams = 2
            while open_streams:
                item = await queue.get()
                if item is None:
                    open_streams -= 1
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self) -> int:
        return await self.proc.wait()

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._master is not None and not self._closed:
            self._closed = True
            os.close(self._master)


@dataclass
class SubprocessExec:
    """ExecBackend running the requested command locally; attach is unsupported."""

    specs: list[ExecSpec] = field(default_factory=list)
    sessions: list[SubprocessSession] = field(default_factory=list)

    async def exec(self, spec: ExecSpec) -> SubprocessSession:
        self.specs.append(spec)
        session = await SubprocessSession.start(spec)
        self.sessions.append(session)
        return session

    async def attach(self, spec: ExecSpec) -> SubprocessSession:
        raise ExecNotSupported("attach not supported by this plugin")


class NoExec:
    async def exec(self, spec: ExecSpec) -> SubprocessSession:
        raise ExecNotSupported()

    async def attach(self, spec: ExecSpec) -> SubprocessSession:
        raise ExecNotSupported()


@dataclass
class InMemoryReviews:
    """ReviewClient: tokens map to users; ``grants`` maps a user name to allowed
    (verb, subresource) pairs. Counts calls so caching can be checked."""

    tokens: dict[str, UserInfo] = field(default_factory=dict)
    grants: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    token_calls: int = 0
    sar_calls: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    async def token_review(self, token: str) -> UserInfo | None:
        self.token_calls += 1
        return self.tokens.get(token)

    async def subject_access_review(self, user: UserInfo, verb: str, resource: str,
                                    subresource: str, name: str) -> AccessDecision:
        self.sar_calls.append((user.name, verb, resource, subresource, name))
        if (verb, subresource) in self.grants.get(user.name, set()) or ("*", "*") in self.grants.get(user.name, set()):
            return AccessDecision(True, "granted in test")
        return AccessDecision(False, f"no grant for {user.name}")

