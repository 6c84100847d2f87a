"""`kubectl exec` into a pod's container: `srun --jobid=<job> --overlap` starts a step inside the
pod's own allocation (same node, same cgroup and limits) running the container runtime's `exec` with
the container's image, binds, env file and working directory, then the requested argv.

It is a new process in a new container instance of the same image — singularity has no handle on
the running container's namespaces — but it sees the same volumes, environment and node. stdin,
stdout and stderr are streamed; with a tty, srun runs on a local pseudo-terminal with `--pty`, so the
remote side gets a terminal too and window sizes follow the client's. The command's exit code is
returned. When the client goes away the step is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import termios
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from plugin_client.server import ServerExecSession

from .slurm_cli import SlurmCli

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 5.0  # srun forwards SIGTERM to the step; SIGKILL after this


# Runs inside the step: the command's exit code goes to a file and the step itself exits 0, so srun
# does not add its own "task 0: Exited with exit code N" line to the command's stderr.
_RC_WRAPPER = 'rc_file=$1; shift; "$@"; rc=$?; printf \'%s\\n\' "$rc" > "$rc_file"; exit 0'


def srun_args(job_id: str, runtime_argv: Sequence[str], tty: bool, rc_file: str, bash: str = "/bin/bash") -> list[str]:
    """Pure: srun's arguments for one exec."""
    args = [f"--jobid={job_id}", "--overlap", "--nodes=1", "--ntasks=1", "--quiet"]
    if tty:
        args.append("--pty")
    return [*args, bash, "-c", _RC_WRAPPER, "vnode-exec", rc_file, *runtime_argv]


def read_rc(rc_file: Path, fallback: int) -> int:
    """Blocking: the command's exit code as the step recorded it; srun's own code if it could not."""
    try:
        text = rc_file.read_text().strip()
        rc_file.unlink()
    except OSError:
        return fallback
    return int(text) if text.isdigit() else fallback


async def _pump_stdin(session: ServerExecSession, write: asyncio.StreamWriter | int) -> None:
    """stdin into a pipe (StreamWriter) or a terminal (its master fd, where EOF is a ^D)."""
    while data := await session.read_stdin():
        if isinstance(write, int):
            await _write_fd(write, data)
        else:
            write.write(data)
            await write.drain()
    if isinstance(write, int):
        with contextlib.suppress(OSError):
            os.write(write, b"\x04")  # EOF on a terminal is ^D
    else:
        write.close()


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_writer(fd)


async def _pump_out(reader: asyncio.StreamReader, write: Callable[[bytes], Awaitable[None]]) -> None:
    while data := await reader.read(64 * 1024):
        await write(data)


async def _pump_fd(fd: int, session: ServerExecSession) -> None:
    loop = asyncio.get_running_loop()
    while True:
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, fut)
        try:
            await fut
        finally:
            loop.remove_reader(fd)
        try:
            data = os.read(fd, 64 * 1024)
        except BlockingIOError:
            continue
        except OSError:  # EIO: the terminal's other side closed
            return
        if not data:
            return
        await session.write_stdout(data)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _resizes(session: ServerExecSession, fd: int) -> None:
    async for size in session.resizes():
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def run_exec(cli: SlurmCli, job_id: str, runtime_argv: Sequence[str], session: ServerExecSession,
                   rc_file: Path, bash: str = "/bin/bash") -> int:
    args = srun_args(job_id, runtime_argv, session.request.tty, str(rc_file), bash)
    try:
        if session.request.tty:
            code = await _run_tty(cli, args, session)
        else:
            code = await _run_pipes(cli, args, session)
    except BaseException:
        await asyncio.to_thread(read_rc, rc_file, 0)  # remove it
        raise
    return await asyncio.to_thread(read_rc, rc_file, code)


async def _run_pipes(cli: SlurmCli, args: list[str], session: ServerExecSession) -> int:
    req = session.request
    proc = await cli.srun(args, stdin=asyncio.subprocess.PIPE if req.stdin else asyncio.subprocess.DEVNULL,
                          stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    tasks = [asyncio.ensure_future(_pump_out(proc.stdout, session.write_stdout if req.stdout else _discard)),
             asyncio.ensure_future(_pump_out(proc.stderr, session.write_stderr if req.stderr else _discard))]
    stdin_task = asyncio.ensure_future(_pump_stdin(session, proc.stdin)) if req.stdin and proc.stdin else None
    try:
        await asyncio.gather(*tasks)
        return await proc.wait()
    finally:
        for t in [*tasks, *([stdin_task] if stdin_task else [])]:
            t.cancel()
        await asyncio.gather(*tasks, *([stdin_task] if stdin_task else []), return_exceptions=True)
        await _stop(proc)


async def _discard(_data: bytes) -> None:
    return None


async def _run_tty(cli: SlurmCli, args: list[str], session: ServerExecSession) -> int:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    try:
        proc = await cli.srun(args, stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    tasks = [asyncio.ensure_future(_pump_fd(master, session)), asyncio.ensure_future(_resizes(session, master))]
    if session.request.stdin:
        tasks.append(asyncio.ensure_future(_pump_stdin(session, master)))
    try:
        await tasks[0]  # output ends when the terminal closes
        return await proc.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _stop(proc)
        os.close(master)
