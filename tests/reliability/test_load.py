"""Concurrency and load: 8 threads recording for a sustained period through a tiny ring buffer,
a 2-worker sweep of many short replications committed exactly once each, and repeated
open/close cycles without file-descriptor or thread leaks (``/proc/self/fd``, ``/proc/self/task``).

Default sizes keep the suite short; ``--runslow`` runs the long ones (10 s of recording, 1,000
replications, 1,000 cycles)."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from disco_data_logger import DataLogger, read
from disco_data_logger.errors import WriterError
from disco_data_logger.sharding import Coordinator, Experiment
from disco_data_logger.sharding.config import validate_config
from tests.reliability.helpers import open_fds, thread_count

THREADS = 8


def thread_record(t: int, k: int) -> tuple[float, np.ndarray, np.ndarray]:
    n = (t * 7 + k) % 23
    idx = np.arange(n, dtype=np.int64) * (t + 1)
    vals = np.full(n, t * 1e6 + k, dtype=np.float64) + np.arange(n) * 0.5
    return float(k), idx, vals


def test_eight_threads_sustained_through_a_tiny_ring(tmp_path: Path, runslow: bool) -> None:
    seconds = 10.0 if runslow else 2.0
    path = tmp_path / "l"
    counts = [0] * THREADS
    errors: list[BaseException] = []
    with DataLogger(path, ring_bytes=16 * 1024, block_bytes=4096, rotate_bytes=1 << 20,
                    flush_interval=0.05) as dl:
        sids = [dl.register_stream({"thread": t}, epoch_scale=1.0, value_scale=None)
                for t in range(THREADS)]
        stop = time.monotonic() + seconds
        barrier = threading.Barrier(THREADS)

        def work(t: int) -> None:
            try:
                barrier.wait()
                k = 0
                while time.monotonic() < stop:
                    dl.record(sids[t], *thread_record(t, k))
                    k += 1
                    if k % 997 == 0:
                        dl.flush()
                counts[t] = k
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stats = dl.stats()
    assert errors == []
    assert stats["records"] == sum(counts) and all(c > 0 for c in counts)

    table = read(path)
    assert table.num_rows == sum(counts)
    sid_col = table["stream_id"].to_numpy()
    epochs = table["epoch"].to_numpy()
    for t in range(THREADS):
        mine = np.flatnonzero(sid_col == sids[t])
        assert len(mine) == counts[t]
        assert np.array_equal(epochs[mine], np.arange(counts[t], dtype=np.float64))  # in order
        idx = table["indices"].take(mine).to_pylist()
        vals = table["values"].take(mine).to_pylist()
        for k in range(0, counts[t], max(1, counts[t] // 2000)):  # a spread sample, all fields
            _, eidx, evals = thread_record(t, k)
            assert idx[k] == eidx.tolist() and vals[k] == evals.tolist()
        # and every record's values, cheaply: the first value encodes (thread, k)
        firsts = pc.list_element(table["values"].take(mine).filter(
            pc.greater(pc.list_value_length(table["values"].take(mine)), 0)), 0).to_numpy()
        ks = np.array([k for k in range(counts[t]) if thread_record(t, k)[1].size])
        assert np.array_equal(firsts, t * 1e6 + ks)


def sweep_config(output: Path, replications: int) -> dict:
    return {
        "experiment": {"organisation": "acme", "model": "inventory", "name": "load"},
        "output": str(output),
        "replications": replications,
        "seed": 7,
        "entry_point": "disco_data_logger.models.inventory:run",
        "duration": 3,
        "parameters": {"n_skus": 2, "n_stores": 1},
        "execution": {"backend": "multiprocessing", "workers": 2, "retries": 1},
        "logger": {"ring_bytes": "1MiB", "block_bytes": "64KiB", "flush_interval": 0.5},
        "streams": [{"name": "stock", "value_scale": 1.0, "periodicity": 1.0}],
    }


def test_two_workers_many_short_replications_commit_once_each(tmp_path: Path,
                                                             runslow: bool) -> None:
    n = 1000 if runslow else 100
    out = tmp_path / "exp"
    cfg = validate_config(sweep_config(out, n), "load.yaml")
    result = Coordinator(cfg, progress=False).run()
    assert result.committed == n and not result.failed and result.pending == 0

    exp = Experiment.open(out)
    reps = exp.replications
    committed = [t for t, s in zip(reps["task_id"].to_pylist(), reps["status"].to_pylist(),
                                   strict=True) if s == "committed"]
    assert sorted(committed) == [f"p0000-r{r:06d}" for r in range(n)]  # each exactly once
    streams = exp.streams()
    assert streams.num_rows == n and len(set(streams["task_id"].to_pylist())) == n
    assert len({s for s in streams["shard_id"].to_pylist()}) == 2  # both workers took part
    per_task = exp.select("stream=stock", format="list").group_by("task_id").aggregate(
        [("epoch", "count")])
    counts = set(per_task["epoch_count"].to_pylist())
    assert per_task.num_rows == n and len(counts) == 1  # every replication complete, none doubled

    again = Coordinator(cfg, progress=False).run()  # resume: nothing to do, nothing duplicated
    assert again.committed == 0 and again.resumed == n
    assert Experiment.open(out).streams().num_rows == n


def test_open_close_cycles_leak_no_fds_or_threads(tmp_path: Path, runslow: bool) -> None:
    cycles = 1000 if runslow else 200
    rng = np.random.default_rng(1)

    def cycle(i: int) -> None:
        with DataLogger(tmp_path / f"l{i}", ring_bytes=1 << 16, block_bytes=4096,
                        rotate_bytes=4096) as dl:
            sid = dl.register_stream({"i": i}, value_scale=None)
            for k in range(20):
                dl.record(sid, float(k), np.arange(30), rng.normal(size=30))  # rotates segments
        assert read(tmp_path / f"l{i}").num_rows == 20

    cycle(-1)  # warm up: imports, pyarrow's thread pool
    gc.collect()
    fds, threads = open_fds(), thread_count()
    for i in range(cycles):
        cycle(i)
        if i % 10 == 0:  # refused opens and abandoned loggers must not leak either
            with pytest.raises(WriterError):
                DataLogger(tmp_path / f"l{i}")
            dl = DataLogger(tmp_path / f"abandoned{i}")
            dl.register_stream({}, value_scale=1.0)
            dl.close()
    gc.collect()
    leaked = {fd: target for fd, target in open_fds().items() if fds.get(fd) != target}
    assert leaked == {}, f"{len(leaked)} descriptors leaked, e.g. {list(leaked.values())[:5]}"
    assert thread_count() <= threads, f"{thread_count() - threads} threads leaked"


def test_unclosed_loggers_dropped_by_the_program_do_not_pile_up_threads(tmp_path: Path) -> None:
    """A logger the program forgets (never closed) keeps its writer thread until it is
    collected or the interpreter exits; collecting it must release the thread and the file."""
    gc.collect()
    fds, threads = open_fds(), thread_count()
    for i in range(20):
        dl = DataLogger(tmp_path / f"f{i}")
        dl.register_stream({}, value_scale=1.0)
        dl.record(0, 0.0, [1], [1.0])
        del dl
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    extra_threads = thread_count() - threads
    extra_fds = len(set(open_fds()) - set(fds))
    assert (extra_threads, extra_fds) == (0, 0), (
        f"20 forgotten loggers hold {extra_threads} threads and {extra_fds} descriptors")
    for i in range(20):
        assert read(tmp_path / f"f{i}").num_rows == 1
