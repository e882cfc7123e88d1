"""Readers never allocate more than the data justifies (FORMAT.md section 3), also under an
address-space limit (``ulimit -v``, batch schedulers, ``vm.overcommit_memory=2``), where memory
that is reserved but never touched still counts."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from tests.common import frame_units

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "golden_v1"

READ_UNDER_LIMIT = textwrap.dedent(
    """
    import json, resource, sys, warnings
    limit = int(sys.argv[2])
    from disco_data_logger import read, pyreader   # imports before the limit: pyarrow maps a lot
    import pyarrow
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    out = {}
    for name, fn in (("native", lambda p: read(p).num_rows),
                     ("python", lambda p: len(pyreader.read_directory(p).stream_id))):
        try:
            out[name] = fn(sys.argv[1])
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))
    """
)

LIMIT = 2 << 30  # 2 GiB of address space: ~4x what reading these files needs


def forge_raw_size(dst: Path, raw_size: int, fix_crc: bool) -> None:
    shutil.copytree(GOLDEN, dst)
    seg = dst / "00000.seg.zst"
    data = bytearray(seg.read_bytes())
    block = next(u for u in frame_units(bytes(data)) if u.kind == 3)
    struct.pack_into("<I", data, block.offset + 8 + 16, raw_size)
    if fix_crc:
        struct.pack_into("<I", data, block.offset + 8 + 32,
                         zlib.crc32(bytes(data[block.offset + 8:block.offset + 8 + 32])))
    seg.write_bytes(bytes(data))


def read_under_limit(path: Path) -> dict[str, object]:
    import json

    proc = subprocess.run([sys.executable, "-c", READ_UNDER_LIMIT, str(path), str(LIMIT)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_intact_files_read_under_the_limit(tmp_path: Path) -> None:
    shutil.copytree(GOLDEN, tmp_path / "g")
    got = read_under_limit(tmp_path / "g")
    assert got["native"] == got["python"] and isinstance(got["native"], int)


@pytest.mark.parametrize("raw_size,fix_crc", [(0xFFFFFFFF, False), (1 << 28, True)],
                         ids=["bad-crc", "valid-crc-at-bound"])
def test_forged_raw_size_reserves_no_gigabytes(tmp_path: Path, raw_size: int,
                                              fix_crc: bool) -> None:
    forge_raw_size(tmp_path / "f", raw_size, fix_crc)
    got = read_under_limit(tmp_path / "f")
    assert isinstance(got["python"], int) and got["python"] > 0
    assert got["native"] == got["python"], got
