"""Crash safety (SPEC section 3): a writer process killed with SIGKILL at a random moment loses
nothing it had acknowledged with flush(), and the readers invent nothing after it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.common import assert_same_records, by_stream, decode_native, decode_python

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from disco_data_logger import DataLogger

    def record_k(k):
        rng = np.random.default_rng(k)
        n = int(rng.integers(0, 40))
        idx = np.sort(rng.choice(10_000, n, replace=False))
        return k % 3, float(k), idx, rng.normal(0, 100, n)

    path, flush_every, block_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    dl = DataLogger(path, block_bytes=block_bytes, flush_interval=0.02, rotate_bytes=50_000)
    dl.register_stream({"m": "q"}, epoch_scale=1.0, value_scale=0.001)
    dl.register_stream({"m": "x"}, epoch_scale=1.0, value_scale=None)
    dl.register_stream({"m": "q2"}, epoch_scale=1.0, value_scale=1.0)
    k = 0
    while True:
        dl.record(*record_k(k))
        k += 1
        if k % flush_every == 0:
            dl.flush()
            print(k, flush=True)  # acknowledged: everything before k is on its way to disk
    """
)


def expected_record(k: int) -> tuple[int, float, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(k)
    n = int(rng.integers(0, 40))
    idx = np.sort(rng.choice(10_000, n, replace=False))
    vals = rng.normal(0, 100, n)
    sid = k % 3
    if sid == 0:
        vals = np.round(vals / 0.001) * 0.001
    elif sid == 2:
        vals = np.round(vals)
    return sid, float(k), idx, vals


def kill_once(path: Path, rng: random.Random) -> tuple[int, int]:
    flush_every = rng.choice([1, 7, 50, 300])
    block_bytes = rng.choice([512, 4096, 65536])
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(flush_every), str(block_bytes)],
        stdout=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None
        acked = 0
        for _ in range(rng.randint(1, 6)):
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        time.sleep(rng.random() * 0.05)  # then kill at a random moment, mid-record or mid-write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return acked, flush_every


def check_recovered(path: Path, acked: int) -> None:
    native = decode_native(path)  # also asserts a torn tail is warned about exactly when skipped
    python = decode_python(path)
    assert_same_records(native, python)
    assert native.skipped_at() == python.skipped_at()
    assert len(native) >= acked, f"lost acknowledged records: {len(native)} < {acked}"
    # Blocks are written in order and only the tail can be lost, so what comes back is records
    # 0 .. K-1 for some K: within a block stream by stream, each stream in recording order.
    ks = [int(ep) for _, ep, _, _ in native.records()]
    assert sorted(ks) == list(range(len(ks))), "not a prefix of what was recorded"
    for sid, records in by_stream(native.records()).items():
        assert [r[1] for r in records] == sorted(r[1] for r in records), f"stream {sid} order"
    for sid, ep, idx, vals in native.records():
        esid, eep, eidx, evals = expected_record(int(ep))
        assert (sid, ep) == (esid, eep), f"record {int(ep)} differs"
        np.testing.assert_array_equal(idx, eidx)
        np.testing.assert_allclose(vals, evals, rtol=0, atol=1e-9)


def test_sigkill_never_loses_acknowledged_records(tmp_path: Path) -> None:
    rng = random.Random(20261128)
    kills = int(os.environ.get("DDL_CRASH_KILLS", "50"))
    for i in range(kills):
        path = tmp_path / f"run{i}"
        acked, _ = kill_once(path, rng)
        check_recovered(path, acked)
        assert not (path / "_DONE").exists()


@pytest.mark.slow
def test_sigkill_long_mode(tmp_path: Path) -> None:
    rng = random.Random(7)
    for i in range(500):
        path = tmp_path / f"run{i}"
        acked, _ = kill_once(path, rng)
        check_recovered(path, acked)
