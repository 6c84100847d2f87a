"""Container logs for /getLogs: Tail, LimitBytes, SinceSeconds, SinceTime, Timestamps, Previous
and Follow, for init and regular containers.

`<kind>-<name>.out` holds the container's output exactly; `<kind>-<name>.ts` holds one RFC 3339
timestamp (30 characters + newline) per output line, written before the line itself. Logs of jobs
written by the Go plugin have no `.ts`: their lines carry no time (they are never dropped by a
since-filter, and `--timestamps` prints the file's modification time).

Semantics follow the kubelet: since-filter first, then tail, then the timestamp prefix, then the
byte limit (the first N bytes of what would be sent). Like the Go plugin, a plain request (no
follow, since or timestamps) gets `job.out` (the batch job's own output) in front. Previous returns
nothing: containers are never restarted.

Reading costs: every request reads `.out` (and `.ts`, for timestamps or a since-filter) at most
once, in READ_CHUNK pieces, and streams the answer as it goes, so no file is ever held in memory
whole; a tail reads the file backwards only as far as the asked lines (after a since-filter, only
those lines are kept in memory). Follow reads only the bytes appended since its last poll, and polls
adaptively: FOLLOW_FIRST_POLL right after new output, slower while the log is idle, never slower
than LogPollSeconds. It ends once the container has exited (its `.status` exists) or the job is
over (or the pod deleted), after the last bytes. The job's state is asked in the background, so a
slow `squeue` never holds back a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plugin_client.models import LogOpts

from .status import parse_time

log = logging.getLogger(__name__)

TS_WIDTH = 31  # "2026-11-25T20:41:10.184585061Z\n"
READ_CHUNK = 1 << 20  # bytes per read: bounds memory per request, and one huge burst cannot stall other followers
LONG_LINE = 1 << 20  # with timestamps, an unfinished line this long is sent in pieces instead of held in memory
TAIL_BLOCK = 64 * 1024  # a tail reads backwards in blocks this big: a few hundred typical lines each
FOLLOW_FIRST_POLL = 0.05  # after new output: a container that just wrote usually writes again within tens of ms
FOLLOW_BACKOFF = 1.5  # each idle poll waits this much longer: ~7 polls from 50 ms up to a 0.5 s LogPollSeconds


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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_at(path: Path, offset: int, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
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
    pairs = list(zip(lines, stamps, strict=True)) if since is None else _since(lines, stamps, since)
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


def parse_stamp_records(raw: bytes, count: int) -> list[str | None]:
    """Pure: `count` fixed-width `.ts` records from `raw`; a missing or malformed one is None."""
    stamps: list[str | None] = []
    for i in range(count):
        record = raw[i * TS_WIDTH:(i + 1) * TS_WIDTH]
        ok = len(record) == TS_WIDTH and record.endswith(b"\n")
        stamps.append(record[:-1].decode("ascii", "replace") if ok else None)
    return stamps


def read_stamps_at(ts: Path, first: int, count: int) -> list[str | None]:
    """Blocking: the stamps of lines first .. first+count-1, in one read of the fixed-width `.ts`."""
    if count <= 0:
        return []
    return parse_stamp_records(_read_at(ts, first * TS_WIDTH, count * TS_WIDTH), count)


def tail_start(read_at: Callable[[int, int], bytes], size: int, lines: int) -> tuple[int, int]:
    """Pure given `read_at(offset, length)`: the offset where the last `lines` lines of a `size`-byte
    file begin, reading backwards only as far as needed, and how many lines start there (fewer if the
    file has fewer). A last line without a newline is a line."""
    if size == 0 or lines <= 0:
        return size, 0
    found = 0
    pos = size - 1  # a newline as the very last byte ends the last line and starts none
    while pos > 0:
        start = max(0, pos - TAIL_BLOCK)
        block = read_at(start, pos - start)
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) >= 0:
            found += 1
            if found == lines:
                return start + i + 1, lines
        pos = start
    return 0, found + 1


def count_newlines(path: Path, end: int) -> int:
    """Blocking: newlines in the first `end` bytes (the index of the line starting at `end`), read in chunks."""
    count, offset = 0, 0
    try:
        with open(path, "rb") as f:
            while offset < end:
                chunk = f.read(min(READ_CHUNK, end - offset))
                if not chunk:
                    break
                count += chunk.count(b"\n")
                offset += len(chunk)
    except OSError:
        pass
    return count


@dataclass
class LineCutter:
    """Pure: cuts appended output into lines, numbered from `next_index` (line i has the i-th `.ts`
    record). An unfinished line waits for its end, unless it grew to LONG_LINE or `final` says no
    more output comes; a piece sent early keeps its line's index for the rest."""

    next_index: int = 0
    partial: bytes = b""

    def feed(self, data: bytes, final: bool = False) -> tuple[int, list[bytes]]:
        """(index of the first returned line, the lines now complete)."""
        lines = split_lines(self.partial + data)
        self.partial = b""
        if lines and not lines[-1].endswith(b"\n") and not final and len(lines[-1]) < LONG_LINE:
            self.partial = lines.pop()
        first = self.next_index
        self.next_index += sum(1 for line in lines if line.endswith(b"\n"))
        return first, lines


def next_poll_delay(previous: float, got_output: bool, ceiling: float) -> float:
    """Pure: the wait before the next follow poll; fast right after output, backing off while idle,
    never above `ceiling` (LogPollSeconds)."""
    if got_output:
        return min(FOLLOW_FIRST_POLL, ceiling)
    return min(ceiling, max(previous, FOLLOW_FIRST_POLL) * FOLLOW_BACKOFF)


def _job_banner(files: LogFiles, lines: int) -> bytes:
    """The last `lines` lines of job.out (all with 0), ending in a newline; small: the batch job's own output."""
    job_lines = split_lines(_read(files.job_out))
    if job_lines and not job_lines[-1].endswith(b"\n"):
        job_lines[-1] += b"\n"
    return b"".join(job_lines[-lines:] if lines > 0 else job_lines)


class LogReader:
    """One container's output from an offset on, stamped and limited as asked. Blocking: each call
    runs in a thread."""

    def __init__(self, files: LogFiles, opts: LogOpts) -> None:
        self.files = files
        self.opts = opts
        self.offset = 0
        self.cutter = LineCutter()
        self.sent = 0
        self.size_at_start = 0
        self.tail_found = 0  # lines a tail found in `.out` (a plain request takes the rest from job.out)

    def start(self, following: bool) -> None:
        """Positions the reader where a tail begins (a since-filter starts at 0: see `since_history`).
        A follow with timestamps holds back an unfinished last line until its end arrives."""
        opts = self.opts
        self.size_at_start = size = _size(self.files.out)
        if opts.tail > 0 and not has_since(opts):
            wanted = opts.tail
            if following and opts.timestamps and size and _read_at(self.files.out, size - 1, 1) != b"\n":
                wanted += 1  # the held-back unfinished line is not one of the tail's lines
            self.offset, self.tail_found = tail_start(lambda at, n: _read_at(self.files.out, at, n), size, wanted)
            if opts.timestamps:
                self.cutter.next_index = count_newlines(self.files.out, self.offset)

    def since_history(self, now: datetime, following: bool) -> Iterator[bytes]:
        """With a since-filter: the lines written since then, up to what is there now, in one pass
        over `.out` and `.ts` in READ_CHUNK pieces. With a tail only its last lines are kept in
        memory, and they come as one piece at the end. Leaves the reader after them."""
        opts = self.opts
        since = since_moment(opts, now)
        assert since is not None
        tail: deque[tuple[bytes, str | None]] | None = deque(maxlen=opts.tail) if opts.tail > 0 else None
        fallback = _mtime_stamp(self.files.out)
        stamped = LogOpts(timestamps=opts.timestamps)
        while not self.exhausted:
            data = _read_at(self.files.out, self.offset, min(READ_CHUNK, self.size_at_start - self.offset))
            self.offset += len(data)
            last = not data or self.offset >= self.size_at_start
            first, lines = self.cutter.feed(data, final=last and not (following and opts.timestamps))
            kept = _since(lines, read_stamps_at(self.files.ts, first, len(lines)), since)
            if tail is not None:
                tail.extend(kept)
            elif kept:
                yield self.limit(render([line for line, _ in kept], [stamp for _, stamp in kept], stamped, now, fallback))
            if last:
                break
        if tail:
            yield self.limit(render([line for line, _ in tail], [stamp for _, stamp in tail], stamped, now, fallback))

    def read(self, final: bool, end: int | None = None) -> tuple[bytes, bool]:
        """What was appended since the last call (up to READ_CHUNK bytes, and not past `end`), and
        whether more is there already. With `final`, an unfinished last line is sent too."""
        want = READ_CHUNK if end is None else max(0, min(READ_CHUNK, end - self.offset))
        data = b""
        if want and _size(self.files.out) > self.offset:  # a stat, not an open, while the log is idle
            data = _read_at(self.files.out, self.offset, want)
        self.offset += len(data)
        more = len(data) == READ_CHUNK and (end is None or self.offset < end)
        if not self.opts.timestamps:
            return self.limit(data), more
        first, lines = self.cutter.feed(data, final and not more)
        if not lines:
            return b"", more
        stamps = read_stamps_at(self.files.ts, first, len(lines))
        fallback = _mtime_stamp(self.files.out) if None in stamps else ""  # Go plugin jobs have no .ts
        out = b"".join((stamp or fallback).encode() + b" " + line for line, stamp in zip(lines, stamps, strict=True))
        return self.limit(out), more

    def limit(self, data: bytes) -> bytes:
        if self.opts.limit_bytes > 0:
            data = data[: max(0, self.opts.limit_bytes - self.sent)]
        self.sent += len(data)
        return data

    @property
    def exhausted(self) -> bool:
        return self.opts.limit_bytes > 0 and self.sent >= self.opts.limit_bytes


def has_since(opts: LogOpts) -> bool:
    return bool(opts.since_seconds) or opts.since_time is not None


def _since(lines: list[bytes], stamps: list[str | None], since: datetime) -> list[tuple[bytes, str | None]]:
    """Pure: the lines stamped at or after `since` (a line without a stamp is always kept)."""
    kept = []
    for line, stamp in zip(lines, stamps, strict=True):
        moment = parse_time(stamp) if stamp else None
        if moment is None or moment >= since:
            kept.append((line, stamp))
    return kept


def snapshot_chunks(files: LogFiles, opts: LogOpts, now: datetime) -> Iterator[bytes]:
    """Blocking (iterate it in a thread): the answer of a non-follow request, in pieces of at most
    about READ_CHUNK bytes (plus stamps; a tail of a since-filter comes in one piece)."""
    reader = LogReader(files, opts)
    reader.start(following=False)
    if has_since(opts):
        yield from reader.since_history(now, following=False)
        return
    if not opts.timestamps:  # plain: the batch job's own output first, as the Go plugin does
        missing = opts.tail - reader.tail_found if opts.tail > 0 else 0
        if opts.tail <= 0 or missing > 0:
            banner = reader.limit(_job_banner(files, missing))
            if banner:
                yield banner
    end = reader.size_at_start  # what is there now: a busy container cannot keep the answer going forever
    while not reader.exhausted:
        chunk, more = reader.read(final=True, end=end)
        if chunk:
            yield chunk
        if not more:
            return


def snapshot(files: LogFiles, opts: LogOpts, now: datetime) -> bytes:
    """Blocking: the whole answer of a non-follow request."""
    return b"".join(snapshot_chunks(files, opts, now))


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator of file pieces, one thread hop per piece."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


async def stream_snapshot(files: LogFiles, opts: LogOpts, now: datetime) -> AsyncIterator[bytes]:
    """The answer of a non-follow request as it is read."""
    async for chunk in _in_thread(snapshot_chunks(files, opts, now)):
        yield chunk


class JobWatch:
    """Asks `job_over` in the background, at most every `interval` seconds and one question at a
    time, so that a slow answer (a squeue under load) never holds back the lines in between."""

    def __init__(self, job_over: Callable[[], Awaitable[bool]], interval: float,
                 clock: Callable[[], float] = time.monotonic, log_fields: Mapping[str, str] | None = None) -> None:
        self._ask = job_over
        self._log_fields = dict(log_fields or {})  # the pod's (logformat.pod_fields)
        self._interval = interval
        self._clock = clock
        self._next = clock()
        self._task: asyncio.Future[bool] | None = None
        self.over = False

    def poll(self) -> bool:
        """Whether the job is known to be over; starts a new question when the last one is old."""
        task = self._task
        if task is not None and task.done():
            self._task = None
            if not task.cancelled():
                error = task.exception()
                if error is not None:
                    log.warning("follow: could not tell whether the job is over: %s", error, extra=self._log_fields)
                elif task.result():
                    self.over = True
        if not self.over and self._task is None and self._clock() >= self._next:
            self._next = self._clock() + self._interval
            self._task = asyncio.ensure_future(self._ask())
        return self.over

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def _follow_step(reader: LogReader, job_over: bool) -> tuple[bytes, bool, bool]:
    """Blocking, one thread hop per poll: (new output, whether it was the last, whether more is
    waiting). The exit is checked before the read, so that read sees everything written before it."""
    ended = job_over or reader.files.status.exists()
    data, more = reader.read(final=ended)
    return data, ended and not more, more


async def follow(files: LogFiles, opts: LogOpts, container_done: Callable[[], Awaitable[bool]], poll_seconds: float,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 log_fields: Mapping[str, str] | None = None) -> AsyncIterator[bytes]:
    """Yield the log as it grows; ends after the container's last bytes (``log_fields``: the pod's, for
    the lines written about it)."""
    reader = LogReader(files, opts)
    await asyncio.to_thread(reader.start, True)
    yield b""  # answer at once (headers out) while the history is read
    if has_since(opts):
        async for chunk in _in_thread(reader.since_history(now(), following=True)):
            yield chunk
    # As often as the idle poll: the status poller's cache bounds the squeue rate, not this.
    watch = JobWatch(container_done, poll_seconds, log_fields=log_fields)
    delay = FOLLOW_FIRST_POLL
    try:
        while not reader.exhausted:
            data, last, more = await asyncio.to_thread(_follow_step, reader, watch.poll())
            if data:
                yield data
            if last:
                return
            if not more:
                delay = next_poll_delay(delay, bool(data), poll_seconds)
                await asyncio.sleep(delay)
    finally:
        await watch.close()
