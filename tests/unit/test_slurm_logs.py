"""Container logs: tail, bytes, since, timestamps, job.out, follow."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from plugin_client.models import LogOpts
from vnode.plugins.slurm.logs import files_for, follow, snapshot

NOW = datetime(2026, 1, 1, 12, 1, 0, tzinfo=UTC)
STAMPS = ["2026-01-01T12:00:00.000000001Z", "2026-01-01T12:00:30.000000000Z", "2026-01-01T12:00:50.500000000Z"]


def setup(tmp: Path, out: bytes = b"one\ntwo\nthree\n", stamps: list[str] | None = STAMPS, job_out: bytes = b"job banner\n") -> Path:
    (tmp / "run-c.out").write_bytes(out)
    if stamps is not None:
        (tmp / "run-c.ts").write_text("".join(s + "\n" for s in stamps))
    (tmp / "job.out").write_bytes(job_out)
    return tmp


def snap(tmp: Path, **opts: object) -> bytes:
    return snapshot(files_for(tmp, "run", "c"), LogOpts(**opts), NOW)  # type: ignore[arg-type]


def test_plain_logs_are_job_out_then_the_container_output_like_the_go_plugin(tmp_path: Path) -> None:
    assert snap(setup(tmp_path)) == b"job banner\none\ntwo\nthree\n"


def test_tail_counts_lines(tmp_path: Path) -> None:
    assert snap(setup(tmp_path), tail=2) == b"two\nthree\n"
    assert snap(tmp_path, tail=10) == b"job banner\none\ntwo\nthree\n"


def test_limit_bytes_keeps_the_first_bytes(tmp_path: Path) -> None:
    assert snap(setup(tmp_path), limit_bytes=13) == b"job banner\non"


def test_timestamps_prefix_each_line_with_its_capture_time(tmp_path: Path) -> None:
    assert snap(setup(tmp_path), timestamps=True) == (
        b"2026-01-01T12:00:00.000000001Z one\n2026-01-01T12:00:30.000000000Z two\n2026-01-01T12:00:50.500000000Z three\n")


def test_since_seconds_drops_older_lines(tmp_path: Path) -> None:
    assert snap(setup(tmp_path), since_seconds=31) == b"two\nthree\n"


def test_since_time_drops_older_lines(tmp_path: Path) -> None:
    assert snap(setup(tmp_path), since_time=datetime(2026, 1, 1, 12, 0, 40, tzinfo=UTC)) == b"three\n"


def test_since_then_tail_then_timestamps_then_limit(tmp_path: Path) -> None:
    data = snap(setup(tmp_path), since_seconds=59, tail=1, timestamps=True, limit_bytes=34)
    assert data == b"2026-01-01T12:00:50.500000000Z thr"


def test_logs_written_by_the_go_plugin_have_no_timestamps_but_still_work(tmp_path: Path) -> None:
    setup(tmp_path, stamps=None)
    assert snap(tmp_path, since_seconds=1) == b"one\ntwo\nthree\n"  # nothing to drop lines by
    assert snap(tmp_path, timestamps=True).count(b"Z ") == 3


def test_missing_container_output_is_empty_not_an_error(tmp_path: Path) -> None:
    assert snapshot(files_for(tmp_path, "init", "nope"), LogOpts(), NOW) == b""


def test_binary_output_and_a_last_line_without_newline_are_kept(tmp_path: Path) -> None:
    setup(tmp_path, out=b"\x00\xff\r\n\xe9par\rtial", stamps=STAMPS[:2])
    assert snap(tmp_path, tail=2) == b"\x00\xff\r\n\xe9par\rtial"
    assert snap(tmp_path, timestamps=True).count(b"Z ") == 2


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


async def collect(stream: object, limit: float = 20.0) -> list[bytes]:
    chunks: list[bytes] = []

    async def run() -> None:
        async for c in stream:  # type: ignore[attr-defined]
            chunks.append(c)

    await asyncio.wait_for(run(), limit)
    return chunks


async def test_follow_streams_new_lines_and_ends_when_the_container_ends(tmp_path: Path) -> None:
    setup(tmp_path, out=b"first\n", stamps=STAMPS[:1])
    files = files_for(tmp_path, "run", "c")

    async def not_over() -> bool:
        return False

    async def writer() -> None:
        await asyncio.sleep(0.2)
        append(files.ts, STAMPS[1].encode() + b"\n")
        append(files.out, b"second\n")
        await asyncio.sleep(0.2)
        append(files.ts, STAMPS[2].encode() + b"\n")
        append(files.out, b"thi")  # a line in two writes: sent once complete
        await asyncio.sleep(0.2)
        append(files.out, b"rd\n")
        files.status.write_text("0\n")

    task = asyncio.ensure_future(writer())
    chunks = await collect(follow(files, LogOpts(follow=True, timestamps=True), not_over, 0.05))
    await task
    assert b"".join(chunks) == (b"2026-01-01T12:00:00.000000001Z first\n2026-01-01T12:00:30.000000000Z second\n"
                                b"2026-01-01T12:00:50.500000000Z third\n")
    assert b"job banner" not in b"".join(chunks)


async def test_follow_with_tail_starts_from_the_last_lines(tmp_path: Path) -> None:
    setup(tmp_path)
    files = files_for(tmp_path, "run", "c")
    files.status.write_text("0\n")

    async def over() -> bool:
        return True

    chunks = await collect(follow(files, LogOpts(follow=True, tail=1), over, 0.05))
    assert b"".join(chunks) == b"three\n"


async def test_follow_ends_when_the_job_is_over_without_a_status_file(tmp_path: Path) -> None:
    setup(tmp_path, out=b"x\n")
    files = files_for(tmp_path, "run", "c")

    async def over() -> bool:
        return True

    assert b"".join(await collect(follow(files, LogOpts(follow=True), over, 0.05))) == b"x\n"


async def test_follow_stops_at_the_byte_limit(tmp_path: Path) -> None:
    setup(tmp_path, out=b"abcdef\n")
    files = files_for(tmp_path, "run", "c")

    async def not_over() -> bool:
        return False

    assert b"".join(await collect(follow(files, LogOpts(follow=True, limit_bytes=3), not_over, 0.05))) == b"abc"
