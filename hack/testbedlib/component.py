"""One background daemon of the testbed: how to start it, how to tell it is ready, and its pidfile."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import procs

# Returns None when the daemon is ready, else a short reason ("connection refused", "node is drain").
Probe = Callable[[], "str | None"]


class ComponentError(RuntimeError):
    """A daemon failed to start or to become ready; carries its name and log tail for the user."""

    def __init__(self, name: str, reason: str, log: Path | None) -> None:
        self.name, self.reason, self.log = name, reason, log
        text = f"component {name!r} failed to start: {reason}"
        if log is not None:
            text += f"\n--- last lines of {log} ---\n{procs.tail(log)}\n--- end of {log} ---"
        super().__init__(text)


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    probe: Probe
    run_dir: Path
    owner: str
    config_files: list[Path] = field(default_factory=list)  # their content is part of the fingerprint
    user: str | None = None  # run as this user (munged); None = root
    ready_timeout: float = 60.0  # generous: the 2 cores are shared with builds and other tests
    port: int | None = None  # a port that must be free before we start (catches foreign daemons)
    cwd: Path | None = None

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.json"

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps(self.argv).encode())
        for f in self.config_files:
            h.update(f.read_bytes() if f.exists() else b"<missing>")
        return h.hexdigest()[:16]

    def record(self) -> procs.ProcRecord | None:
        return procs.ProcRecord.load(self.pidfile)

    def running(self) -> procs.ProcRecord | None:
        rec = self.record()
        return rec if rec is not None and procs.is_alive(rec) else None

    def start(self, env: dict[str, str]) -> str:
        """Start unless our process is already running with the same fingerprint. Returns what happened."""
        fp = self.fingerprint()
        rec = self.running()
        if rec is not None:
            if rec.fingerprint == fp:
                return f"reused (pid {rec.pid})"
            procs.stop(rec)
            what = "restarted (configuration changed)"
        else:
            what = "started"
        if self.port is not None and procs.port_open(self.port):
            raise ComponentError(
                self.name,
                f"port 127.0.0.1:{self.port} is already in use by a process the testbed did not start "
                f"(see `ss -ltnp 'sport = :{self.port}'`); stop it first",
                None,
            )
        rec = procs.spawn(self.name, self.argv, self.log, env, self.owner, fp, user=self.user, cwd=self.cwd)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rec.save(self.pidfile)
        return f"{what} (pid {rec.pid})"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        reason = "not probed yet"
        while True:
            rec = self.running()
            if rec is None:
                raise ComponentError(self.name, "the process exited", self.log)
            reason = self.probe() or ""
            if not reason:
                return
            if time.monotonic() > deadline:
                raise ComponentError(self.name, f"not ready after {self.ready_timeout:.0f}s: {reason}", self.log)
            time.sleep(0.25)

    def stop(self) -> bool:
        rec = self.record()
        stopped = procs.stop(rec) if rec is not None else False
        self.pidfile.unlink(missing_ok=True)
        return stopped


# --- probes -----------------------------------------------------------------------------------


def http_probe(url: str, context: ssl.SSLContext | None = None, expect: str | None = None) -> Probe:
    def probe() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=3, context=context) as r:
                body = r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return f"{url} answered HTTP {e.code}"
        except (OSError, ValueError) as e:
            return f"{url}: {getattr(e, 'reason', e)}"
        if expect is not None and expect not in body:
            return f"{url} answered {body[:200]!r}"
        return None

    return probe


def command_probe(argv: list[str], expect: Callable[[str], str | None] | None = None, env: dict | None = None) -> Probe:
    def probe() -> str | None:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{argv[0]}: {e}"
        if p.returncode != 0:
            return f"`{' '.join(argv)}` exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
        return expect(p.stdout) if expect else None

    return probe


def tls_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    if ca is None:
        # Health endpoints of the controller-manager and scheduler use self-signed serving certs.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def base_env() -> dict[str, str]:
    """The environment daemons get: minimal, so nothing of the caller's shell leaks into them."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["HOME"] = "/root" if os.geteuid() == 0 else os.environ.get("HOME", "/")
    return env
