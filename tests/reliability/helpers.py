"""Helpers of the reliability tests: /proc views of this process, torn copies of real segments."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from disco_data_logger.sharding.verify import walk_segment
from tests.common import frame_units


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and their targets (``/proc/self/fd``)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the descriptor listdir itself used, closed by now
    return out


def thread_count() -> int:
    """Native and Python threads of this process (``/proc/self/task``)."""
    return len(os.listdir("/proc/self/task"))


def last_segment(path: Path) -> Path:
    return sorted(path.glob("*.seg.zst"))[-1]


def tear_copy(src: Path, dst: Path, fraction: float) -> tuple[Path, int]:
    """Copy a logger directory and cut its last segment inside its last complete unit, as a
    writer killed in the middle of a write leaves it. Returns the segment and the unit's start
    (where the readers must report the torn tail and where a repair cuts)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.torn-*"))
    seg = last_segment(dst)
    if seg.stat().st_size == 0:  # killed right after opening a new segment: tear the one before
        seg.unlink()
        seg = last_segment(dst)
    already = walk_segment(seg)
    if already.torn_tail:  # the kill itself tore it
        assert already.torn_offset is not None
        return seg, already.torn_offset
    data = seg.read_bytes()
    units = frame_units(data)
    unit = units[-1] if len(units) > 1 else units[0]
    cut = unit.offset + 1 + int((unit.end - unit.offset - 2) * fraction)
    seg.write_bytes(data[:cut])
    return seg, unit.offset


def rss_kb() -> int:
    """Resident memory of this process now (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")
