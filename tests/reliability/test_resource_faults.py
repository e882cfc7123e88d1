"""Resource faults while a real writer runs (docs/reliability.md): a full filesystem, permission
loss, the output directory deleted. Each ends in a ``WriterError`` from the next call naming the
file and the cause, never an abort; ``_DONE`` is not written; what was flushed before stays
readable.

The writer is a separate process that flushes a first batch, reports it, waits for the test to
inject the fault, then records on until the error. ``RLIMIT_FSIZE`` (file too large) is covered by
``tests/test_writer_failure.py``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.common import assert_same_records, decode_native, decode_python

WRITER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from disco_data_logger import DataLogger, WriterError

    def values(k):
        return np.random.default_rng(k).normal(size=64)  # incompressible: the disk fills fast

    path, rotate = sys.argv[1], int(sys.argv[2])
    dl = DataLogger(path, rotate_bytes=rotate, block_bytes=8192, flush_interval=3600)
    sid = dl.register_stream({"m": "x"}, value_scale=None)
    k = 0
    for _ in range(100):
        dl.record(sid, float(k), np.arange(64), values(k))
        k += 1
    dl.flush()
    print(json.dumps({"acked": k}), flush=True)
    sys.stdin.readline()  # the test injects the fault now
    events = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            dl.record(sid, float(k), np.arange(64), values(k))
            k += 1
            if k % 20 == 0:
                dl.flush()
        events.append(["record/flush", None, "no error in 60 s"])
    except WriterError as exc:
        events.append(["record/flush", exc.errno, str(exc)])
    for call in ("flush", "close"):
        try:
            getattr(dl, call)()
            events.append([call, None, "no error"])
        except Exception as exc:
            events.append([call, type(exc).__name__, str(exc)])
    try:
        dl.record(sid, 0.0, [1], [1.0])
    except Exception as exc:
        events.append(["after", type(exc).__name__, str(exc)])
    print(json.dumps(events), flush=True)
    """
)


def expected_values(k: int) -> np.ndarray:
    return np.random.default_rng(k).normal(size=64)


def run_writer(path: Path, rotate: int, inject: Callable[[], None],
               prefix: Sequence[str] = ()) -> tuple[int, list[list[Any]]]:
    with subprocess.Popen([*prefix, sys.executable, "-c", WRITER, str(path), str(rotate)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        assert first, proc.stderr.read()
        acked = json.loads(first)["acked"]
        inject()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"writer died (status {proc.returncode}): {err[-3000:]}"
    return acked, json.loads(out.strip().splitlines()[-1])


def check_fault(events: list[list[Any]], code: int, words: str, path: Path) -> None:
    where, err, message = events[0]
    assert where == "record/flush" and err == code, events
    assert words in message and str(path) in message, message
    assert "_DONE" in message  # says what the failure means for the directory
    # the failure was reported once; afterwards the logger is closed
    assert events[-1][1] == "LoggerClosedError", events


def check_readable(path: Path, acked: int) -> int:
    """Everything acknowledged is there, exactly; both readers agree on the rest."""
    native, python = decode_native(path), decode_python(path)
    assert_same_records(native, python)
    assert len(native) >= acked
    for k, (sid, epoch, idx, vals) in enumerate(native.records()):
        assert (sid, epoch) == (0, float(k))
        np.testing.assert_array_equal(idx, np.arange(64))
        np.testing.assert_array_equal(vals, expected_values(k))
    return len(native)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (needs root and a kernel that lets us mount)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("disk-full test needs root to mount a small tmpfs; the RLIMIT_FSIZE "
                    "fallback is tests/test_writer_failure.py")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the RLIMIT_FSIZE "
                    "fallback is tests/test_writer_failure.py")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full(small_fs: Path, tmp_path: Path) -> None:
    path = small_fs / "log"
    acked, events = run_writer(path, 256 * 1024, lambda: None)
    check_fault(events, errno.ENOSPC, "No space left on device", path)
    assert not (path / "_DONE").exists()
    rescued = tmp_path / "rescued"  # read it where the reader has room (and unmount after)
    shutil.copytree(path, rescued)
    assert check_readable(rescued, acked) >= acked


def without_root_override() -> list[str]:
    """A command prefix under which root obeys file permissions (as a user's job would)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root bypasses file permissions and setpriv (util-linux), which drops "
                    "CAP_DAC_OVERRIDE for the writer, is not installed")
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def test_permission_lost_mid_run(tmp_path: Path) -> None:
    """The directory turns read-only while the writer runs: the next segment cannot be created.
    As root, the writer runs without CAP_DAC_OVERRIDE, so that permissions apply to it."""
    path = tmp_path / "log"
    acked, events = run_writer(path, 64 * 1024, lambda: path.chmod(0o555),
                               without_root_override())
    check_fault(events, errno.EACCES, "Permission denied", path)
    assert not (path / "_DONE").exists()
    path.chmod(0o755)
    assert check_readable(path, acked) >= acked


def test_output_directory_moved_away_mid_run(tmp_path: Path) -> None:
    """A cleanup job moves the directory away: segments already open keep their data (readable
    where it went), the next segment cannot be created where the logger writes."""
    path = tmp_path / "log"
    moved = tmp_path / "trash"
    acked, events = run_writer(path, 64 * 1024, lambda: path.rename(moved))
    check_fault(events, errno.ENOENT, "No such file or directory", path)
    assert not (path / "_DONE").exists() and not (moved / "_DONE").exists()
    assert check_readable(moved, acked) >= acked


def test_output_directory_deleted_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "log"
    acked, events = run_writer(path, 64 * 1024, lambda: shutil.rmtree(path))
    check_fault(events, errno.ENOENT, "No such file or directory", path)
    assert not path.exists()  # nothing was re-created behind the user's back
    assert acked == 100
