"""The hand-written stub of the native extension matches the real module (mypy.stubtest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import disco_data_logger
from disco_data_logger import _core


def test_stub_matches_extension() -> None:
    allowlist = Path(__file__).with_name("stubtest_allowlist.txt")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "disco_data_logger._core",
            "--allowlist",
            str(allowlist),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_versions_come_from_one_source() -> None:
    assert _core.__version__ == disco_data_logger.__version__
    assert _core.FORMAT_VERSION == 2  # docs/FORMAT.md: the version the writer writes
