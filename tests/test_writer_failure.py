"""Writer-thread failures become a Python exception on the next call, never an abort; _DONE is
not written and everything flushed before the failure stays readable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.common import decode_native, decode_python

SCRIPT = textwrap.dedent(
    """
    import errno, json, resource, sys
    import numpy as np
    from disco_data_logger import DataLogger, WriterError

    path, limit = sys.argv[1], int(sys.argv[2])
    dl = DataLogger(path, block_bytes=4096, flush_interval=3600)
    sid = dl.register_stream({"m": "x"}, value_scale=None)
    rng = np.random.default_rng(0)
    dl.record(sid, 0, np.arange(100), rng.normal(size=100))
    dl.flush()  # acknowledged: must survive whatever follows
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    events = []
    try:
        for k in range(1, 100000):
            dl.record(sid, k, np.arange(100), rng.normal(size=100))  # incompressible values
            if k % 50 == 0:
                dl.flush()
    except WriterError as exc:
        events.append(("record/flush", exc.errno, str(exc)))
    try:
        dl.close()
        events.append(("close", None, "no error"))
    except WriterError as exc:
        events.append(("close", exc.errno, str(exc)))
    try:
        dl.record(sid, 0, [1], [1.0])
    except Exception as exc:
        events.append(("after", type(exc).__name__, str(exc)))
    print(json.dumps(events))
    """
)


def test_file_too_large_becomes_writer_error(tmp_path: Path) -> None:
    path = tmp_path / "l"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), str(200_000)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # no abort, no signal
    events = json.loads(proc.stdout.strip().splitlines()[-1])
    first = events[0]
    assert first[0] == "record/flush" and first[1] == 27  # EFBIG
    assert "File too large" in first[2] and "00000.seg.zst" in first[2] and "_DONE" in first[2]
    assert events[1][0] == "close"  # the failure was already reported once
    assert events[2][1] == "LoggerClosedError"
    assert not (path / "_DONE").exists()
    # decode_native checks that a torn tail, if the failed write left one, is warned about.
    native, python = decode_native(path), decode_python(path)
    assert len(native) == len(python) >= 51  # the first record and at least one flushed batch
    assert native.records()[0][1] == 0.0


def test_close_reports_failure_when_no_call_came_in_between(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, resource, sys
        import numpy as np
        from disco_data_logger import DataLogger, WriterError
        dl = DataLogger(sys.argv[1], block_bytes=1 << 20, flush_interval=3600)
        sid = dl.register_stream({"m": "x"}, value_scale=None)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        dl.record(sid, 0, np.arange(5000), np.random.default_rng(0).normal(size=5000))
        try:
            dl.close()
            print(json.dumps(["ok"]))
        except WriterError as exc:
            print(json.dumps([exc.errno, str(exc)]))
        """
    )
    path = tmp_path / "l"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    errno_, message = json.loads(proc.stdout.strip().splitlines()[-1])
    assert errno_ == 27 and "File too large" in message
    assert not (path / "_DONE").exists()
