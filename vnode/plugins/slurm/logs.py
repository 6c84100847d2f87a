"""Container logs for /getLogs: Tail, LimitBytes, SinceSeconds, SinceTime, Timestamps, Previous
and Follow, for init and regular containers.

`<kind>-<name>.out` holds the container's output exactly; `<kind>-<name>.ts` holds one RFC 3339
timestamp (30 characters + newline) per output line, written before the line itself. Logs of jobs
written by the Go plugin have no `.ts`: their lines carry no time (they are never dropped by a
since-filter, and `--timestamps` prints the file's modification time).

Semantics follow the kubelet: since-filter first, then tail, then the timestamp prefix, then the
byte limit (the first N bytes of what would be sent). Like the Go plugin, a plain request (no
follow, since or timestamps) gets `job.out` (the batch job's own output) in front. Previous returns
nothing: containers are never restarted. Follow sends new output within LogPollSeconds and ends once
the container has exited (its `.status` exists) or the job is over, after the last bytes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plugin_client.models import LogOpts

from .status import parse_time

TS_WIDTH = 31  # "2026-11-25T20:41:10.184585061Z\n"
READ_CHUNK = 1 << 20  # follow mode reads at most this much per poll, so one huge burst cannot stall others


@dataclass(frozen=True)
class LogFiles:
    out: Path
    ts: Path
    status: Path
    job_out: Path


def files_for(pod_dir: Path, kind: str, container: str) -> LogFiles:
    base = f"{kind}-{container}"
    return LogFiles(pod_dir / f"{base}.out", pod_dir / f"{base}.ts", pod_dir / f"{base}.status", pod_dir / "job.out")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _mtime_stamp(path: Path) -> str:
    try:
        moment = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def since_moment(opts: LogOpts, now: datetime) -> datetime | None:
    if opts.since_time is not None:
        return opts.since_time.astimezone(UTC)
    if opts.since_seconds > 0:
        return now - timedelta(seconds=opts.since_seconds)
    return None


def render(lines: list[bytes], stamps: list[str | None], opts: LogOpts, now: datetime, fallback_stamp: str) -> bytes:
    """Pure: the since/tail/timestamps/limit pipeline over lines (each with its line ending)."""
    since = since_moment(opts, now)
    pairs = list(zip(lines, stamps, strict=True))
    if since is not None:
        kept = []
        for line, stamp in pairs:
            moment = parse_time(stamp) if stamp else None
            if moment is None or moment >= since:
                kept.append((line, stamp))
        pairs = kept
    if opts.tail > 0:
        pairs = pairs[-opts.tail:]
    if opts.timestamps:
        data = b"".join((stamp or fallback_stamp).encode() + b" " + line for line, stamp in pairs)
    else:
        data = b"".join(line for line, _ in pairs)
    if opts.limit_bytes > 0:
        data = data[: opts.limit_bytes]
    return data


def split_lines(data: bytes) -> list[bytes]:
    """Lines ending in a newline (only: a lone carriage return is part of a line, as for the kubelet and the .ts file)."""
    if not data:
        return []
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def read_stamps(ts: Path, count: int) -> list[str | None]:
    raw = _read(ts).decode("ascii", "replace").splitlines()
    stamps: list[str | None] = [s if s else None for s in raw[:count]]
    if len(stamps) < count:
        stamps += [stamps[-1] if stamps else None] * (count - len(stamps))
    return stamps


def snapshot(files: LogFiles, opts: LogOpts, now: datetime) -> bytes:
    """Blocking: the whole answer of a non-follow request."""
    lines = split_lines(_read(files.out))
    stamps = read_stamps(files.ts, len(lines))
    plain = not (opts.follow or opts.timestamps or opts.since_seconds or opts.since_time)
    if plain:
        job_lines = split_lines(_read(files.job_out))
        if job_lines and not job_lines[-1].endswith(b"\n"):
            job_lines[-1] += b"\n"
        lines = job_lines + lines
        no_stamps: list[str | None] = [None] * len(job_lines)
        stamps = no_stamps + stamps
    return render(lines, stamps, opts, now, _mtime_stamp(files.out))


class Follower:
    """Incremental reader of one container's output for follow mode (blocking calls, run in a thread)."""

    def __init__(self, files: LogFiles, opts: LogOpts) -> None:
        self.files = files
        self.opts = opts
        self.offset = 0
        self.line_no = 0  # index of the line that starts at `offset` (or is in progress)
        self.at_line_start = True
        self.partial = b""  # with timestamps, an unfinished line waits for its end
        self.sent = 0

    def start(self, now: datetime) -> bytes:
        """Everything already there, filtered like a snapshot; positions the reader at the end."""
        data = _read(self.files.out)
        lines = split_lines(data)
        complete = lines if not lines or lines[-1].endswith(b"\n") else lines[:-1]
        if self.opts.timestamps and len(complete) < len(lines):
            self.partial = lines[-1]
        initial = complete if self.opts.timestamps else lines
        stamps = read_stamps(self.files.ts, len(initial))
        opts = LogOpts(tail=self.opts.tail, timestamps=self.opts.timestamps, since_seconds=self.opts.since_seconds,
                       since_time=self.opts.since_time)
        out = render(initial, stamps, opts, now, _mtime_stamp(self.files.out))
        self.offset = len(data)
        self.line_no = data.count(b"\n")
        self.at_line_start = data.endswith(b"\n") or not data
        return self._limit(out)

    def _stamp(self, index: int) -> str:
        try:
            with open(self.files.ts, "rb") as f:
                f.seek(index * TS_WIDTH)
                raw = f.read(TS_WIDTH)
        except OSError:
            raw = b""
        if len(raw) == TS_WIDTH and raw.endswith(b"\n"):
            return raw[:-1].decode("ascii", "replace")
        return _mtime_stamp(self.files.out)

    def poll(self, final: bool) -> bytes:
        """New output since the last call. With `final`, an unfinished last line is sent too."""
        try:
            with open(self.files.out, "rb") as f:
                f.seek(self.offset)
                data = f.read(READ_CHUNK)
        except OSError:
            data = b""
        self.offset += len(data)
        if not self.opts.timestamps:
            return self._limit(data)
        out = []
        buf = self.partial + data
        self.partial = b""
        for line in split_lines(buf):
            if not line.endswith(b"\n") and not final:
                self.partial = line
                break
            out.append(self._stamp(self.line_no).encode() + b" " + line)
            if line.endswith(b"\n"):
                self.line_no += 1
        return self._limit(b"".join(out))

    def more_pending(self) -> bool:
        try:
            return os.path.getsize(self.files.out) > self.offset
        except OSError:
            return False

    def _limit(self, data: bytes) -> bytes:
        if self.opts.limit_bytes > 0:
            data = data[: max(0, self.opts.limit_bytes - self.sent)]
        self.sent += len(data)
        return data

    @property
    def exhausted(self) -> bool:
        return self.opts.limit_bytes > 0 and self.sent >= self.opts.limit_bytes


async def follow(files: LogFiles, opts: LogOpts, container_done: Callable[[], Awaitable[bool]], poll_seconds: float,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> AsyncIterator[bytes]:
    """Yield the log as it grows; ends after the container's last bytes."""
    follower = Follower(files, opts)
    first = await asyncio.to_thread(follower.start, now())
    yield first
    while not follower.exhausted:
        done = await asyncio.to_thread(files.status.exists) or await container_done()
        chunk = await asyncio.to_thread(follower.poll, done)
        if chunk:
            yield chunk
        if done and not await asyncio.to_thread(follower.more_pending):
            tail = await asyncio.to_thread(follower.poll, True)
            if tail:
                yield tail
            return
        if not chunk:
            await asyncio.sleep(poll_seconds)
