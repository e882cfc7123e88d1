"""Threads that cannot be started: the native core never aborts the process.

A child process gets a large stack limit (every thread reserves that much address space) and then
an address-space limit that leaves room for one such thread at most. Decoding on eight threads
must then finish on fewer, with the same records; a ``DataLogger`` whose writer thread cannot
start must raise a ``WriterError`` naming its directory. Before, both ended in
``std::terminate`` ("terminate called without an active exception") or a bare ``RuntimeError``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from disco_data_logger import DataLogger
from tests.common import Decoded, assert_same_records, decode_python

STACK = 512 << 20

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path

    from disco_data_logger import DataLogger, reader
    from disco_data_logger.errors import WriterError

    def address_space() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmSize")

    mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]
    # Room for the work and at most one thread's stack (none for "write").
    room = stack + stack // 2 if mode == "read" else stack // 2
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + room, resource.RLIM_INFINITY))
    if mode == "read":
        cols = reader.decode_columns(path, threads=8)
        import numpy as np
        np.savez(out, stream_id=cols.stream_id, epoch=cols.epoch, offsets=cols.offsets,
                 indices=cols.indices, values=cols.values)
        print(json.dumps({"records": len(cols)}))
    else:
        try:
            DataLogger(path)
            print(json.dumps({"error": None}))
        except WriterError as exc:
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    """
)


def run_child(mode: str, path: Path, out: Path) -> dict[str, Any]:
    def limit_stack() -> None:
        hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
        resource.setrlimit(resource.RLIMIT_STACK, (STACK, hard))

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(out)],
        capture_output=True, text=True, timeout=300, preexec_fn=limit_stack,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "terminate called" not in proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def write_many_blocks(path: Path) -> None:
    rng = np.random.default_rng(7)
    with DataLogger(path, block_bytes=4096, rotate_bytes=32 << 10, flush_interval=3600) as dl:
        sids = [dl.register_stream({"m": f"s{k}"}, value_scale=None) for k in range(4)]
        for step in range(3000):
            sid = sids[step % 4]
            idx = np.sort(rng.choice(200, size=16, replace=False))
            dl.record(sid, float(step), idx, rng.normal(size=16))


def test_decode_with_threads_that_cannot_start(tmp_path: Path) -> None:
    path = tmp_path / "log"
    write_many_blocks(path)
    assert len(list(path.glob("*.seg.zst"))) >= 8
    got = run_child("read", path, tmp_path / "cols.npz")
    assert got["records"] == 3000
    with np.load(tmp_path / "cols.npz") as z:
        native = Decoded(z["stream_id"], z["epoch"], z["offsets"], z["indices"], z["values"], [])
    assert_same_records(native, decode_python(path))


def test_writer_thread_that_cannot_start(tmp_path: Path) -> None:
    path = tmp_path / "log"
    got = run_child("write", path, tmp_path / "unused")
    assert got["type"] == "WriterError", got
    assert "writer thread" in got["error"] and str(path) in got["error"]
