"""DataLogger round trips through the real native writer, checked by both readers."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sparse_array import Vector

from disco_data_logger import DataLogger, LoggerClosedError, WriterError, pyreader, read
from tests.common import both_readers, by_stream, decode_native, decode_python, quantise


def test_round_trip_quantised_and_exact(tmp_path: Path) -> None:
    d = tmp_path / "log"
    rng = np.random.default_rng(1)
    expected = []
    with DataLogger(d) as dl:
        q = dl.register_stream(
            {"entity": "A", "measure": "stock"}, epoch_scale=1e-3, value_scale=1e-2
        )
        x = dl.register_stream({"entity": "B", "measure": "cost"}, value_scale=None)
        for t in range(300):
            idx = np.sort(rng.choice(1000, 5, replace=False))
            vals = rng.normal(50, 10, 5)
            sid = q if t % 2 else x
            dl.record(sid, t * 0.25, idx, vals)
            want = [quantise(v, 1e-2) for v in vals] if sid == q else list(vals)
            expected.append((sid, quantise(t * 0.25, 1e-3 if sid == q else 1e-6), idx, want))
    for decode in (decode_native, decode_python):
        got = decode(d).records()
        assert len(got) == len(expected)
        got_by, want_by = by_stream(got), by_stream(expected)
        assert got_by.keys() == want_by.keys()
        for sid in want_by:
            pairs = zip(want_by[sid], got_by[sid], strict=True)
            for (sid_, ep, idx, vals), (gsid, gep, gidx, gvals) in pairs:
                assert (gsid, gep) == (sid_, ep)
                np.testing.assert_array_equal(gidx, idx)
                np.testing.assert_array_equal(gvals, np.array(vals))


def test_exact_stream_keeps_bits(tmp_path: Path) -> None:
    specials = np.array([-0.0, 0.1, np.nan, np.inf, -np.inf, 5e-324, 1.7976931348623157e308])
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        for t in range(3):
            dl.record(s, t, np.arange(len(specials)), specials)
    for decode in (decode_native, decode_python):
        got = decode(tmp_path / "l")
        np.testing.assert_array_equal(
            got.values.view(np.uint64), np.tile(specials, 3).view(np.uint64)
        )


@both_readers
def test_empty_vectors_huge_indices_and_backwards_epochs(tmp_path: Path, decode) -> None:
    big = np.array([0, 2**62, 2**63 - 2, 2**63 - 1], dtype=np.int64)
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, epoch_scale=1.0, value_scale=1.0)
        dl.record(s, 10, [], [])
        dl.record(s, 5, big, [1, -2, 3, -4])  # epochs may go backwards
        dl.record(s, -1e15, big, [1, -2, 3, -5])
        dl.record(s, 7, [], [])
    got = decode(tmp_path / "l").records()
    assert [r[1] for r in got] == [10.0, 5.0, -1e15, 7.0]
    assert [len(r[2]) for r in got] == [0, 4, 4, 0]
    np.testing.assert_array_equal(got[1][2], big)
    np.testing.assert_array_equal(got[2][3], [1, -2, 3, -5])


@both_readers
def test_many_streams_and_rotation(tmp_path: Path, decode) -> None:
    rng = np.random.default_rng(7)
    n_streams = 300
    dl = DataLogger(tmp_path / "l", rotate_bytes=60_000, block_bytes=4096)
    with dl:
        sids = [
            dl.register_stream({"entity": str(i)}, epoch_scale=1e-3, value_scale=1e-3)
            for i in range(n_streams)
        ]
        expected = []
        for k in range(6000):
            sid = sids[k % n_streams]
            idx = np.unique(rng.integers(0, 10_000, 8))
            vals = rng.normal(0, 100, len(idx))
            dl.record(sid, k * 0.001, idx, vals)
            expected.append((sid, idx, vals))
    stats = dl.stats()  # after close: every segment is written
    segments = sorted((tmp_path / "l").glob("*.seg.zst"))
    assert len(segments) >= 3 and stats["segments"] == len(segments)
    got = decode(tmp_path / "l").records()
    assert len(got) == len(expected)
    got_by, want_by = by_stream(got), by_stream(expected)
    assert got_by.keys() == want_by.keys()
    for sid, want in want_by.items():
        for (_, idx, vals), (gsid, _ep, gidx, gvals) in zip(want, got_by[sid], strict=True):
            assert gsid == sid
            np.testing.assert_array_equal(gidx, idx)
            np.testing.assert_allclose(gvals, vals, atol=0.5e-3 + 1e-12)


def test_unsorted_indices_are_sorted_with_values(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        dl.record(s, 0, np.array([9, 2, 5]), np.array([0.9, 0.2, 0.5]))
    ((_, _, idx, vals),) = decode_native(tmp_path / "l").records()
    assert idx.tolist() == [2, 5, 9] and vals.tolist() == [0.2, 0.5, 0.9]


def test_arrays_are_copied(tmp_path: Path) -> None:
    idx = np.array([1, 2, 3])
    vals = np.array([1.0, 2.0, 3.0])
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        dl.record(s, 0, idx, vals)
        idx[:] = [7, 8, 9]
        vals[:] = 0
        dl.record(s, 1, idx, vals)
    got = decode_native(tmp_path / "l").records()
    assert got[0][2].tolist() == [1, 2, 3] and got[0][3].tolist() == [1.0, 2.0, 3.0]
    assert got[1][2].tolist() == [7, 8, 9]


def test_accepts_lists_and_other_dtypes(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        dl.record(s, 0, [3, 1], [1, 2])
        dl.record(s, 1, np.array([4], dtype=np.uint32), np.array([2.5], dtype=np.float32))
        dl.record(s, 2, np.arange(10, dtype=np.int16)[::3], np.ones(4, dtype=np.int8))
    got = decode_native(tmp_path / "l").records()
    assert got[0][2].tolist() == [1, 3] and got[0][3].tolist() == [2.0, 1.0]
    assert got[1][2].tolist() == [4] and got[1][3].tolist() == [2.5]
    assert got[2][2].tolist() == [0, 3, 6, 9]


def test_record_vector(tmp_path: Path) -> None:
    v = Vector(np.array([2, 7], dtype=np.uint32), np.array([1.5, -2.0]))
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        dl.record_vector(s, 3.0, v)
        with pytest.raises(TypeError, match="sparse_array.Vector"):
            dl.record_vector(s, 3.0, ([1], [2.0]))
    ((sid, ep, idx, vals),) = decode_native(tmp_path / "l").records()
    assert (sid, ep, idx.tolist(), vals.tolist()) == (0, 3.0, [2, 7], [1.5, -2.0])


@both_readers
def test_record_many_bulk(tmp_path: Path, decode) -> None:
    rng = np.random.default_rng(3)
    with DataLogger(tmp_path / "l") as dl:
        a = dl.register_stream({"m": "a"}, epoch_scale=1e-3, value_scale=1e-3)
        b = dl.register_stream({"m": "b"}, value_scale=None)
        lengths = rng.integers(0, 20, 500)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        idx = np.concatenate([np.sort(rng.choice(10_000, n, replace=False)) for n in lengths])
        vals = rng.normal(size=len(idx)).round(3)
        sids = np.where(np.arange(500) % 3 == 0, a, b)
        epochs = np.arange(500) * 0.5
        dl.record_many(sids, epochs, offsets, idx, vals)
        dl.record_many(a, [1000.0], [0, 2], [5, 6], [1.0, 2.0])  # one id for all records
    got = by_stream(decode(tmp_path / "l").records())
    assert sum(map(len, got.values())) == 501
    expected = by_stream([(int(sids[k]), k) for k in range(500)])
    for sid, ks in expected.items():
        for (_, k), (gsid, gep, gidx, gvals) in zip(ks, got[sid], strict=False):
            assert gsid == sid and gep == epochs[k]
            np.testing.assert_array_equal(gidx, idx[offsets[k] : offsets[k + 1]])
            np.testing.assert_allclose(gvals, vals[offsets[k] : offsets[k + 1]], atol=1e-9)
    assert len(got[b]) == len(expected[b]) and len(got[a]) == len(expected[a]) + 1
    assert got[a][-1][2].tolist() == [5, 6]


def test_sidecars_done_marker_and_streams(tmp_path: Path) -> None:
    d = tmp_path / "l"
    dl = DataLogger(d)
    s = dl.register_stream({"entity": "A", "n": 3}, epoch_scale=0.5, value_scale=None)
    ps = dl.register_periodic_stream(
        {"entity": "B"}, value_scale=0.1, periodicity=2.0, kind="accumulator"
    )
    meta = json.loads((d / "streams" / "00000000.json").read_text())
    assert meta == {"entity": "A", "n": 3, "stream_id": s, "epoch_scale": 0.5, "value_scale": None}
    pmeta = json.loads((d / "streams" / "00000001.json").read_text())
    assert (
        pmeta["periodicity"] == 2.0
        and pmeta["kind"] == "accumulator"
        and pmeta["stream_id"] == ps.stream_id
    )
    assert dl.streams[s]["entity"] == "A"
    assert not (d / "_DONE").exists()
    dl.close()
    assert (d / "_DONE").exists() and (d / "_DONE").stat().st_size == 0
    dl.close()  # idempotent
    with pytest.raises(LoggerClosedError, match="closed"):
        dl.record(s, 0, [1], [1.0])


def test_flush_makes_data_readable_while_open(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l", flush_interval=3600) as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        dl.record(s, 0, [1], [1.0])
        dl.flush()
        assert len(decode_native(tmp_path / "l")) == 1
        assert len(decode_python(tmp_path / "l")) == 1
        dl.record(s, 1, [1], [2.0])
        assert len(list(dl.decode_all_segments())) == 2  # flushes first


def test_flush_interval_bounds_the_loss_window(tmp_path: Path) -> None:
    import time

    with DataLogger(tmp_path / "l", flush_interval=0.05) as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        dl.record(s, 0, [1], [1.0])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and dl.stats()["blocks"] == 0:
            time.sleep(0.01)
        assert dl.stats()["blocks"] == 1  # written by the timer, without flush() or close()
        assert len(decode_native(tmp_path / "l")) == 1


def test_to_arrow_to_parquet_decode_all(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, epoch_scale=1e-3, value_scale=1e-3)
        for t in range(10):
            dl.record(s, t, [t, t + 1], [t, -t])
        table = dl.to_arrow()
        dl.to_parquet(tmp_path / "out.parquet")
        records = list(dl.decode_all_segments())
    assert table.column_names == ["stream_id", "epoch", "indices", "values"]
    assert str(table.schema.field("indices").type) == "list<item: int64>"
    assert pq.read_table(tmp_path / "out.parquet").equals(table)
    assert [r[1] for r in records] == list(map(float, range(10)))
    assert records[3][2].tolist() == [3, 4] and records[3][3].tolist() == [3.0, -3.0]


def test_read_label_columns_and_rule(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        a = dl.register_stream({"entity": "a", "measure": "stock"}, value_scale=None)
        b = dl.register_stream({"entity": "b", "measure": "stock"}, value_scale=None)
        c = dl.register_stream({"entity": "a", "measure": "demand"}, value_scale=None)
        for sid in (a, b, c):
            dl.record(sid, sid, [sid], [float(sid)])
    t = read(tmp_path / "l", "measure=stock", label_columns=True)
    assert t["stream_id"].to_pylist() == [a, b]
    assert t["entity"].to_pylist() == ["a", "b"]
    assert read(tmp_path / "l", {"entity": "a"})["stream_id"].to_pylist() == [a, c]
    assert read(tmp_path / "l", stream_ids=[c])["stream_id"].to_pylist() == [c]
    # without sidecars the in-band registrations still select and decode
    for f in (tmp_path / "l" / "streams").iterdir():
        f.unlink()
    assert read(tmp_path / "l", "measure=demand")["stream_id"].to_pylist() == [c]


def test_stats_and_stream_stats(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=0.01)
        for t in range(100):
            dl.record(s, 10 - t * 0.1, [1, 2, 3], [1.0, 2.0, float(t)])
        dl.flush()
        st = dl.stats()
        assert st["records"] == 100 and st["nonzeros"] == 300 and st["streams"] == 1
        assert st["blocks"] >= 1 and st["compressed_bytes"] > 0 and st["raw_bytes"] > 0
        records, lo, hi = dl.stream_stats()[s]
        assert records == 100 and lo == pytest.approx(0.1) and hi == 10.0


def test_refuses_directory_with_segments(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l") as dl:
        dl.register_stream({"m": "x"}, value_scale=None)
    with pytest.raises(WriterError, match="already holds"):
        DataLogger(tmp_path / "l")


def test_unwritable_directory_fails_in_constructor(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc/ddl-cannot-write-here")  # even root cannot create files in /proc
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    with pytest.raises(OSError):
        DataLogger(target)


def test_concurrent_threads_record_into_one_logger(tmp_path: Path) -> None:
    n_threads, per_thread = 8, 2000
    with DataLogger(tmp_path / "l", ring_bytes=16 << 10, block_bytes=2048) as dl:
        sids = [
            dl.register_stream({"thread": i}, epoch_scale=1.0, value_scale=1.0)
            for i in range(n_threads)
        ]
        barrier = threading.Barrier(n_threads)
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                barrier.wait()
                for k in range(per_thread):
                    dl.record(sids[i], k, [i, 100 + k % 7], [k, i])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
    got = decode_native(tmp_path / "l")
    assert len(got) == n_threads * per_thread
    for i in range(n_threads):
        mine = [r for r in got.records() if r[0] == sids[i]]
        assert [r[1] for r in mine] == [
            float(k) for k in range(per_thread)
        ]  # per-thread order kept
        assert all(r[3][0] == k for k, r in enumerate(mine))


def test_backpressure_blocks_and_is_counted(tmp_path: Path) -> None:
    # Incompressible values at zstd level 19: the writer is far slower than the producer, so a
    # 64 KiB ring must fill and block record(); the wait is counted, and nothing is lost.
    rng = np.random.default_rng(5)
    n = 400
    with DataLogger(tmp_path / "l", ring_bytes=64 << 10, block_bytes=16 << 10, zstd_level=19) as dl:
        s = dl.register_stream({"m": "noise"}, value_scale=None)
        for k in range(n):
            dl.record(s, k, np.arange(512), rng.random(512))
    stats = dl.stats()
    assert stats["stalls"] > 0 and stats["stall_seconds"] > 0
    assert stats["queue_peak_bytes"] <= (64 << 10) + (16 << 10) + 512 * 20  # bounded by the ring
    assert len(decode_native(tmp_path / "l")) == n


def test_stream_stats_for_some_streams_and_stream_info(tmp_path: Path) -> None:
    from disco_data_logger import UnknownStreamError

    with DataLogger(tmp_path / "l") as dl:
        sids = [dl.register_stream({"i": i}, value_scale=None) for i in range(5)]
        for k, sid in enumerate(sids):
            for t in range(k):
                dl.record(sid, float(t), [1], [1.0])
        assert dl.stream_stats([4, 1]) == {4: (4, 0.0, 3.0), 1: (1, 0.0, 0.0)}
        assert dl.stream_info(3) == {
            "i": 3,
            "stream_id": 3,
            "epoch_scale": 1e-6,
            "value_scale": None,
        }
        with pytest.raises(UnknownStreamError):
            dl.stream_stats([7])
        with pytest.raises(UnknownStreamError):
            dl.stream_info(7)


def test_interpreter_exit_closes_open_loggers(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from disco_data_logger import DataLogger\n"
        "dl = DataLogger(sys.argv[1], flush_interval=3600)\n"
        "sid = dl.register_stream({'m': 'x'}, value_scale=None)\n"
        "for t in range(1000):\n"
        "    dl.record(sid, t, [t], [float(t)])\n"
        "KEEP = dl  # never closed by the script\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "l")], timeout=60)
    assert proc.returncode == 0
    assert (tmp_path / "l" / "_DONE").exists()
    assert len(decode_native(tmp_path / "l")) == 1000


def test_without_sidecars_the_directory_holds_no_streams_folder_and_still_reads(tmp_path):
    with DataLogger(tmp_path / "d", sidecars=False) as dl:
        sid = dl.register_stream({"measure": "queue"}, value_scale=0.5)
        dl.record(sid, 1.0, [2, 5], [1.5, 3.0])
    assert not (tmp_path / "d" / "streams").exists()
    table = read(tmp_path / "d", "measure=queue")
    assert table["values"].to_pylist() == [[1.5, 3.0]]


def test_retired_streams_are_forgotten_and_their_ids_never_reused(tmp_path):
    with DataLogger(tmp_path / "d", sidecars=False) as dl:
        first = dl.register_stream({"n": 0}, value_scale=1.0)
        dl.record(first, 0.0, [1], [1.0])
        dl.retire_streams([first])
        assert first not in dl.streams
        second = dl.register_stream({"n": 1}, value_scale=1.0)
        dl.record(second, 0.0, [1], [2.0])
    assert second == first + 1
    assert read(tmp_path / "d")["stream_id"].to_pylist() == [first, second]


def test_recording_into_a_retired_stream_says_it_was_retired(tmp_path):
    from disco_data_logger import UnknownStreamError

    with DataLogger(tmp_path / "d", sidecars=False) as dl:
        kept = dl.register_stream({"n": "kept"}, value_scale=1.0)
        gone = dl.register_stream({"n": "gone"}, value_scale=1.0)
        never = dl.register_stream({"n": "never recorded"}, value_scale=1.0)
        dl.record(gone, 0.0, [1], [1.0])
        dl.retire_streams([gone, never])
        dl.retire_streams([gone])  # again: nothing happens
        for sid in (gone, never):
            with pytest.raises(UnknownStreamError, match=f"stream {sid} was retired"):
                dl.record(sid, 1.0, [1], [1.0])
            with pytest.raises(UnknownStreamError, match="retired"):
                dl.record_many(sid, [1.0], [0, 1], [1], [1.0])
        with pytest.raises(UnknownStreamError, match="unknown stream id 7"):
            dl.record(7, 1.0, [1], [1.0])
        dl.record(kept, 2.0, [2], [2.0])
        assert dl.stream_stats() == {kept: (1, 2.0, 2.0)}
        assert dl.stats()["streams"] == 1
    # what was recorded before the retirement stays, and every stream is still described
    got = decode_native(tmp_path / "d")
    assert sorted(got.stream_id.tolist()) == [kept, gone]
    from disco_data_logger.reader import read_registrations

    names = {sid: meta["n"] for sid, meta in read_registrations(tmp_path / "d").items()}
    assert names == {kept: "kept", gone: "gone", never: "never recorded"}


RSS_SCRIPT = """
import os, sys, tempfile
import numpy as np
from disco_data_logger import DataLogger

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

dl = DataLogger(sys.argv[1], sidecars=False, flush_interval=3600)
idx, vals = np.arange(8), np.ones(8)

def replications(first, count):
    # as the experiment service does: 10 streams a replication, retired once it is committed
    for r in range(first, first + count):
        sids = [dl.register_stream({"organisation": "o", "model": "m", "replication": r,
                                    "stream": f"s{k}"}, value_scale=0.01) for k in range(10)]
        for sid in sids:
            dl.record(sid, 1.0, idx, vals)
            dl.record(sid, 2.0, idx, vals)
        if r % 50 == 0:
            dl.flush()
        dl.retire_streams(sids)

replications(0, 3_000)  # warm-up: allocator pools, the writer's string table at its bound
before = rss()
replications(2_000, int(sys.argv[2]))
print((rss() - before) / (10 * int(sys.argv[2])))
dl.close()
"""


@pytest.mark.skipif("san.so" in os.environ.get("LD_PRELOAD", ""),
                    reason="under a sanitizer the allocator keeps freed memory in quarantine")
def test_memory_stays_flat_when_streams_come_and_go(tmp_path):
    """200,000 streams registered, recorded and retired: the logger's memory (native core,
    writer and Python side) grows by a few bytes per stream at most (RSS, measured)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "d"), "20000"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    per_stream = float(proc.stdout.strip())
    assert per_stream <= 4.0, f"{per_stream:.1f} bytes of RSS per stream"
    assert len(decode_native(tmp_path / "d")) == 2 * 10 * 23_000


FORK_SCRIPT = """
import os, sys
import numpy as np
from disco_data_logger import DataLogger, LoggerForkedError

dl = DataLogger(sys.argv[1], flush_interval=0.05)
sid = dl.register_stream({"m": "x"}, value_scale=None)
ps = dl.register_periodic_stream({"m": "p"}, value_scale=None, periodicity=1.0)
dl.record(sid, 0.0, [1], [1.0])
ps.record(0.0, [1], [1.0])
pid = os.fork()
if pid == 0:
    calls = {
        "record": lambda: dl.record(sid, 1.0, [1], [1.0]),
        "record_many": lambda: dl.record_many(sid, [1.0], [0, 1], [1], [1.0]),
        "record_vector": lambda: dl._core.record(sid, 1.0, np.array([1]), np.array([1.0])),
        "register_stream": lambda: dl.register_stream({"m": "child"}, value_scale=None),
        "retire_streams": lambda: dl.retire_streams([sid]),
        "flush": dl.flush,
        "stats": dl.stats,
        "stream_stats": dl.stream_stats,
        "periodic record": lambda: ps.record(2.0, [1], [1.0]),
        "periodic close": lambda: ps.close(3.0),
        "close": dl.close,
    }
    failed = []
    for name, call in calls.items():
        try:
            call()
        except LoggerForkedError as exc:
            assert "created in another process" in str(exc), exc
        else:
            failed.append(name)
    if failed:
        print("no error in the child:", failed, flush=True)
        os._exit(3)
    sys.exit(0)  # a normal interpreter exit: atexit handlers and finalisers run
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status), status
assert os.WEXITSTATUS(status) == 0, os.WEXITSTATUS(status)
for k in range(2, 1000):  # the parent keeps writing
    dl.record(sid, float(k), [k], [float(k)])
ps.close(5.0)
dl.close()
print("parent ok")
"""


def test_a_forked_child_gets_a_clear_error_and_the_parent_keeps_writing(tmp_path):
    """Issue 9 item 10: a real os.fork() of a process with an open logger (writer thread running,
    a periodic stream open). In the child every call raises LoggerForkedError, nothing hangs,
    and the child's interpreter exit neither hangs nor aborts; the parent loses nothing."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parent ok" in proc.stdout
    assert (tmp_path / "d" / "_DONE").exists()
    got = by_stream(decode_native(tmp_path / "d").records())
    assert [r[1] for r in got[0]] == [0.0, *map(float, range(2, 1000))]
    assert [r[1] for r in got[1]] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_arrays_used_in_place_only_when_their_layout_allows(tmp_path: Path) -> None:
    """Native int64/float64 1-D arrays are read where they are; any other layout (byte order,
    strides, alignment) is converted first, never misread."""
    raw = np.zeros(8 * 3 + 1, dtype=np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=np.float64, count=3, offset=1)
    unaligned[:] = [1.5, 2.5, 3.5]
    cases = [
        (np.array([1, 2, 3], dtype=">i8"), np.array([1.0, 2.0, 3.0], dtype=">f8")),
        (np.arange(12, dtype=np.int64)[::4], np.arange(12, dtype=np.float64)[::4]),
        (np.array([4, 5, 6], dtype=np.int64), unaligned),
        (np.array([[7, 8, 9]], dtype=np.int64)[0], np.array([[7.0], [8.0], [9.0]])[:, 0]),
    ]
    with DataLogger(tmp_path / "l") as dl:
        s = dl.register_stream({"m": "x"}, value_scale=None)
        for k, (idx, vals) in enumerate(cases):
            dl.record(s, float(k), idx, vals)
    got = decode_native(tmp_path / "l").records()
    for (idx, vals), (_, _, gidx, gvals) in zip(cases, got, strict=True):
        assert gidx.tolist() == np.asarray(idx).tolist()
        assert gvals.tolist() == np.asarray(vals).tolist()


def test_read_threads_and_selection_give_the_same_records(tmp_path: Path) -> None:
    """One segment decoded on one thread, on two, and for a selection of streams: the same
    records (the selection's are exactly those of the full read)."""
    rng = np.random.default_rng(11)
    with DataLogger(tmp_path / "l", block_bytes=8192) as dl:
        sids = [dl.register_stream({"s": k}, epoch_scale=1e-3, value_scale=1e-2)
                for k in range(12)]
        for t in range(3000):
            sid = sids[int(rng.integers(0, 12))]
            idx = np.sort(rng.choice(500, int(rng.integers(0, 20)), replace=False))
            dl.record(sid, t * 0.01, idx, rng.normal(0, 100, len(idx)))
    assert len(list((tmp_path / "l").glob("*.seg.zst"))) == 1
    one = read(tmp_path / "l", threads=1)
    two = read(tmp_path / "l", threads=2)
    assert one.equals(two) and one.num_rows == 3000
    picked = [sids[3], sids[7]]
    some = read(tmp_path / "l", stream_ids=picked)
    mask = np.isin(one["stream_id"].to_numpy(), picked)
    assert some.equals(one.filter(mask))
    by_label = read(tmp_path / "l", {"s": 3}, threads=1)
    expected = int((one["stream_id"].to_numpy() == sids[3]).sum())
    assert by_label["stream_id"].to_pylist() == [sids[3]] * expected
    with pytest.raises(ValueError, match="threads"):
        read(tmp_path / "l", threads=-1)


def test_read_only_the_named_segments(tmp_path: Path) -> None:
    """``segments=`` reads only the named files of a directory, in both readers; a copy of a
    segment under another name is then not read (no record counted twice)."""
    from disco_data_logger.reader import decode_columns

    path = tmp_path / "l"
    rng = np.random.default_rng(5)
    with DataLogger(path, block_bytes=4096, rotate_bytes=16 << 10) as dl:
        sids = [dl.register_stream({"s": k}, value_scale=None) for k in range(3)]
        for t in range(900):
            dl.record(sids[t % 3], float(t), np.arange(8), rng.normal(size=8))
    names = sorted(p.name for p in path.glob("*.seg.zst"))
    assert len(names) >= 3
    everything = read(path)
    (path / "00050.seg.zst").write_bytes((path / names[0]).read_bytes())
    assert read(path).num_rows > everything.num_rows  # the copy is read when not excluded
    assert read(path, segments=names).equals(everything)
    assert read(path, segments=iter(names)).equals(everything)
    python = decode_python(path)
    assert len(python) > everything.num_rows
    first_two = read(path, segments=names[:2], stream_ids=[sids[1]])
    oracle = pyreader.read_directory(path, stream_ids=[sids[1]], segments=names[:2])
    assert first_two["epoch"].to_pylist() == oracle.epoch.tolist()
    assert 0 < first_two.num_rows < everything.num_rows / 3
    assert read(path, segments=[]).num_rows == 0
    cols = decode_columns(path, stream_ids=[sids[2]])
    assert set(cols.registrations) == {sids[2]}  # only the selected streams' registrations
    assert cols.streams[sids[2]]["s"] == 2
    bare = decode_columns(path, stream_ids=[sids[2]], registrations=False)
    assert bare.registrations == {} and np.array_equal(bare.epoch, cols.epoch)
    for bad in (["../00000.seg.zst"], ["x"], "00000.seg.zst"):
        with pytest.raises(ValueError, match="segment file name"):
            read(path, segments=bad)


def test_a_rule_reads_the_registrations_of_the_named_segments_only(tmp_path: Path) -> None:
    """Without sidecars (a service shard) a rule matches labels from the in-band registrations:
    with ``segments=`` only those of the named files count, so a stray segment that registers
    the same stream id under other labels neither adds nor changes a match."""
    from disco_data_logger.reader import read_registrations

    def write(path: Path, measure: str, value: float) -> None:
        with DataLogger(path, sidecars=False) as dl:
            sid = dl.register_stream({"measure": measure}, value_scale=None)
            dl.record(sid, 1.0, [0, 2], [value, value])

    write(tmp_path / "mine", "stock", 1.0)
    write(tmp_path / "other", "orders", 9.0)
    mine = tmp_path / "mine"
    (mine / "00007.seg.zst").write_bytes((tmp_path / "other" / "00000.seg.zst").read_bytes())
    listed = ["00000.seg.zst"]
    assert read_registrations(mine, segments=listed)[0]["measure"] == "stock"
    assert read_registrations(mine, segments=["00007.seg.zst"])[0]["measure"] == "orders"
    stock = read(mine, "measure=stock", segments=listed)
    assert stock["values"].to_pylist() == [[1.0, 1.0]]
    assert read(mine, "measure=orders", segments=listed).num_rows == 0
    assert read(mine, "measure=stock", segments=[]).num_rows == 0
    with pytest.raises(ValueError, match="segment file name"):
        read_registrations(mine, segments=["../other/00000.seg.zst"])


def test_label_columns_follow_the_one_label_rule(tmp_path: Path) -> None:
    """``label_columns`` types each label by ``labels.label_array`` over the streams (the rule of
    the experiment index): integers stay int64, integers with floats become float64, lists and
    mixed kinds become their compact JSON text, missing labels null."""
    labels = [{"n": 1, "x": 1, "tags": [1, 2]}, {"n": 2, "x": 2.5, "tags": "a"}, {"n": 3}]
    with DataLogger(tmp_path / "l") as dl:
        sids = [dl.register_stream(lab, value_scale=None) for lab in labels]
        for t, k in enumerate([0, 1, 2, 1, 0]):
            dl.record(sids[k], float(t), [t], [1.0])
    table = read(tmp_path / "l", label_columns=True)
    streams = [sids.index(s) for s in table["stream_id"].to_pylist()]
    assert sorted(streams) == [0, 0, 1, 1, 2]
    assert table["n"].type == pa.int64()
    assert table["n"].to_pylist() == [[1, 2, 3][k] for k in streams]
    assert table["x"].type == pa.float64()
    assert table["x"].to_pylist() == [[1.0, 2.5, None][k] for k in streams]
    assert table["tags"].to_pylist() == [["[1,2]", "a", None][k] for k in streams]
    assert read(tmp_path / "l", label_columns=["x"]).column_names[-1] == "x"
