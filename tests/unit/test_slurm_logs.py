"""Container logs: tail, bytes, since, timestamps, job.out, follow; reading only what is needed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_client.models import LogOpts
from vnode.plugins.slurm import logs
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


# --- reading only what is needed: pure parts of the reader and the follower ---------------------


def reader_over(data: bytes, reads: list[tuple[int, int]] | None = None) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        if reads is not None:
            reads.append((offset, length))
        return data[offset:offset + length]
    return read_at


@settings(max_examples=300)
@given(data=st.binary(max_size=60).map(lambda b: b.replace(b"\x00", b"\n")), lines=st.integers(0, 12),
       block=st.integers(1, 9))
def test_tail_start_finds_where_the_last_lines_begin_whatever_the_block_size(data: bytes, lines: int, block: int) -> None:
    with patch.object(logs, "TAIL_BLOCK", block):
        offset, found = logs.tail_start(reader_over(data), len(data), lines)
    expected = logs.split_lines(data)[-lines:] if lines > 0 else []
    assert data[offset:] == b"".join(expected)
    assert found == len(expected)


def test_a_tail_of_a_big_log_reads_only_its_end() -> None:
    data = b"".join(b"line %d\n" % i for i in range(200_000))  # ~2.3 MB
    reads: list[tuple[int, int]] = []
    offset, found = logs.tail_start(reader_over(data, reads), len(data), 10)
    assert (data[offset:], found) == (b"".join(b"line %d\n" % i for i in range(199_990, 200_000)), 10)
    assert sum(length for _, length in reads) <= logs.TAIL_BLOCK + 1


def test_line_cutter_holds_an_unfinished_line_and_numbers_lines_by_their_stamp_record() -> None:
    cutter = logs.LineCutter()
    assert cutter.feed(b"one\ntw") == (0, [b"one\n"])
    assert cutter.feed(b"o") == (1, [])
    assert cutter.feed(b"\nthree\nfo") == (1, [b"two\n", b"three\n"])
    assert cutter.feed(b"ur", final=True) == (3, [b"four"])
    assert cutter.feed(b"\n") == (3, [b"\n"])  # the rest of line 3 still carries line 3's stamp
    assert cutter.next_index == 4


@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\x00", b"\n")), max_size=12))
def test_line_cutter_gives_the_same_lines_however_the_output_was_split(pieces: list[bytes]) -> None:
    cutter = logs.LineCutter()
    got: list[tuple[int, bytes]] = []
    for piece in pieces:
        first, lines = cutter.feed(piece)
        got += [(first + i, line) for i, line in enumerate(lines)]
    first, lines = cutter.feed(b"", final=True)
    got += [(first + i, line) for i, line in enumerate(lines)]
    whole = logs.split_lines(b"".join(pieces))
    assert got == list(enumerate(whole))


def test_line_cutter_sends_an_endless_line_in_pieces_instead_of_holding_it() -> None:
    cutter = logs.LineCutter()
    with patch.object(logs, "LONG_LINE", 8):
        assert cutter.feed(b"0123456789") == (0, [b"0123456789"])
        assert cutter.feed(b"ab\n") == (0, [b"ab\n"])
    assert cutter.next_index == 1


def test_poll_delay_is_short_after_output_and_backs_off_to_the_ceiling_while_idle() -> None:
    delays = [logs.next_poll_delay(0.0, True, 0.5)]
    for _ in range(12):
        delays.append(logs.next_poll_delay(delays[-1], False, 0.5))
    assert delays[0] == logs.FOLLOW_FIRST_POLL
    assert delays == sorted(delays)
    assert max(delays) == delays[-1] == 0.5
    assert logs.next_poll_delay(0.5, True, 0.5) == logs.FOLLOW_FIRST_POLL  # output again: fast again


def test_poll_delay_never_exceeds_a_ceiling_below_the_first_poll() -> None:
    assert logs.next_poll_delay(0.0, True, 0.02) == 0.02
    assert logs.next_poll_delay(0.02, False, 0.02) == 0.02


def test_stamp_records_are_fixed_width_and_a_torn_record_has_no_stamp() -> None:
    raw = (STAMPS[0] + "\n" + STAMPS[1] + "\n").encode() + STAMPS[2].encode()[:10]
    assert logs.parse_stamp_records(raw, 4) == [STAMPS[0], STAMPS[1], None, None]


def test_follow_reader_reads_only_the_bytes_appended_since_its_last_read(tmp_path: Path) -> None:
    setup(tmp_path, out=b"old\n", stamps=STAMPS[:1])
    files = files_for(tmp_path, "run", "c")
    reader = logs.LogReader(files, LogOpts(follow=True, tail=1))
    reader.start(following=True)
    assert reader.read(final=False) == (b"old\n", False)
    assert reader.read(final=False) == (b"", False)
    append(files.out, b"new\n")
    assert reader.read(final=False) == (b"new\n", False)
    assert reader.offset == len(b"old\nnew\n")


def test_follow_reader_stamps_a_line_written_in_pieces_with_its_own_record(tmp_path: Path) -> None:
    setup(tmp_path, out=b"one\ntw", stamps=STAMPS[:2])
    files = files_for(tmp_path, "run", "c")
    reader = logs.LogReader(files, LogOpts(follow=True, timestamps=True, tail=1))
    reader.start(following=True)
    assert reader.read(final=False) == (STAMPS[0].encode() + b" one\n", False)  # "tw" waits for its end
    append(files.out, b"o\nth")
    append(files.ts, STAMPS[2].encode() + b"\n")
    assert reader.read(final=False) == (STAMPS[1].encode() + b" two\n", False)
    assert reader.read(final=True) == (STAMPS[2].encode() + b" th", False)


def test_follow_reader_reads_a_burst_in_bounded_pieces(tmp_path: Path) -> None:
    setup(tmp_path, out=b"", stamps=[])
    files = files_for(tmp_path, "run", "c")
    reader = logs.LogReader(files, LogOpts(follow=True))
    reader.start(following=True)
    append(files.out, b"x" * 25)
    with patch.object(logs, "READ_CHUNK", 10):
        pieces = [reader.read(final=False) for _ in range(4)]
    assert pieces == [(b"x" * 10, True), (b"x" * 10, True), (b"x" * 5, False), (b"", False)]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.sampled_from([b"a\n", b"bb\n", b"\n", b"c\rd\n", b"e" * 9 + b"\n"]), max_size=15),
       unfinished=st.sampled_from([b"", b"zz"]), tail=st.integers(0, 6), timestamps=st.booleans(),
       since_seconds=st.sampled_from([0, 50, 55, 120]), limit=st.sampled_from([0, 1, 17, 1000]),
       chunk=st.integers(1, 12))
def test_streamed_snapshot_matches_the_whole_file_pipeline(tmp_path: Path, lines: list[bytes], unfinished: bytes,
                                                           tail: int, timestamps: bool, since_seconds: int,
                                                           limit: int, chunk: int) -> None:
    out = b"".join(lines) + unfinished
    stamps = [f"2026-01-01T12:00:{i:02d}.000000000Z" for i in range(len(logs.split_lines(out)))]
    setup(tmp_path, out=out, stamps=stamps, job_out=b"banner 1\nbanner 2")
    opts = LogOpts(tail=tail, timestamps=timestamps, since_seconds=since_seconds, limit_bytes=limit)
    plain = not (timestamps or since_seconds)
    everything = logs.split_lines(b"banner 1\nbanner 2\n" + out) if plain else logs.split_lines(out)
    every_stamp: list[str | None] = ([None, None] if plain else []) + list(stamps)
    expected = logs.render(everything, every_stamp, opts, NOW, "unused")
    with patch.object(logs, "READ_CHUNK", chunk), patch.object(logs, "TAIL_BLOCK", chunk):
        pieces = list(logs.snapshot_chunks(files_for(tmp_path, "run", "c"), opts, NOW))
    assert b"".join(pieces) == expected
    if plain:  # streamed in READ_CHUNK pieces (after the banner), not the whole file at once
        assert all(len(p) <= chunk for p in pieces[1:])


async def test_job_watch_asks_in_the_background_and_not_more_often_than_its_interval() -> None:
    now = [0.0]
    asked = 0
    answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def job_over() -> bool:
        nonlocal asked
        asked += 1
        return await answer

    watch = logs.JobWatch(job_over, interval=2.0, clock=lambda: now[0])
    assert watch.poll() is False  # asks, does not wait for the answer
    await asyncio.sleep(0)
    now[0] = 5.0
    assert watch.poll() is False  # the first question is still open: no second one
    assert asked == 1
    answer.set_result(False)
    await asyncio.sleep(0)
    now[0] = 5.5
    assert watch.poll() is False  # answered "running"; the next question waits for the interval
    now[0] = 7.5
    watch.poll()
    await asyncio.sleep(0)
    assert asked == 2
    await watch.close()


async def test_job_watch_reports_over_once_answered_and_survives_a_failing_question() -> None:
    answers = iter([RuntimeError("squeue timed out"), True])

    async def job_over() -> bool:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    now = [0.0]
    watch = logs.JobWatch(job_over, interval=1.0, clock=lambda: now[0])
    watch.poll()
    await asyncio.sleep(0)
    now[0] = 1.0
    assert watch.poll() is False  # the failure is logged, and a new question goes out
    await asyncio.sleep(0)
    assert watch.poll() is True
    await watch.close()


async def test_follow_does_not_wait_for_a_slow_job_state_to_send_new_lines(tmp_path: Path) -> None:
    setup(tmp_path, out=b"", stamps=[])
    files = files_for(tmp_path, "run", "c")
    never: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def stuck() -> bool:
        return await never  # a squeue that never answers

    stream = follow(files, LogOpts(follow=True), stuck, 0.05)
    assert await anext(stream) == b""
    append(files.out, b"hello\n")
    assert await asyncio.wait_for(anext(stream), 20) == b"hello\n"
    files.status.write_text("0\n")
    assert [c async for c in stream] == []


def test_a_since_filter_reads_the_log_in_pieces_and_sends_the_kept_lines_as_they_are_found(tmp_path: Path) -> None:
    out = b"".join(b"%d\n" % i for i in range(10))
    setup(tmp_path, out=out, stamps=[f"2026-01-01T12:00:{10 * i:02d}.000000000Z" if i < 6 else
                                     f"2026-01-01T12:00:{50 + i:02d}.000000000Z" for i in range(10)])
    with patch.object(logs, "READ_CHUNK", 4):
        pieces = list(logs.snapshot_chunks(files_for(tmp_path, "run", "c"), LogOpts(since_seconds=25), NOW))
        tailed = list(logs.snapshot_chunks(files_for(tmp_path, "run", "c"), LogOpts(since_seconds=25, tail=3), NOW))
    assert b"".join(pieces) == b"4\n5\n6\n7\n8\n9\n"
    assert len(pieces) > 1
    assert tailed == [b"7\n8\n9\n"]


async def test_follow_with_since_sends_the_recent_history_then_new_lines(tmp_path: Path) -> None:
    setup(tmp_path, out=b"one\ntwo\nthree\nfou", stamps=STAMPS + ["2026-01-01T12:00:59.000000000Z"])
    files = files_for(tmp_path, "run", "c")

    async def not_over() -> bool:
        return False

    stream = follow(files, LogOpts(follow=True, since_seconds=20, timestamps=True), not_over, 0.05, now=lambda: NOW)
    got = [await anext(stream), await anext(stream)]
    assert got == [b"", STAMPS[2].encode() + b" three\n"]  # "fou" waits for the end of its line
    append(files.out, b"r\n")
    files.status.write_text("0\n")
    assert b"".join([c async for c in stream]) == b"2026-01-01T12:00:59.000000000Z four\n"
