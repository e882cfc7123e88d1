"""``verify``: check every segment of an experiment (or of one logger directory).

Three independent checks, so that a problem is found whichever layer it is in:

1. a walk over each segment's frames as the readers walk them (``docs/FORMAT.md`` section 4.1,
   formats 2 and 1), without decompressing: blocks, records declared by the block headers, frame
   and compressed-frame checksums, the footer, a torn tail (a file ending inside a frame), and
   every other skipped part with its kind;
2. a full decode with the native reader, whose ``disco.skipped`` report lists every block it had
   to skip (raw-payload checksums, bad payloads);
3. against the shard manifest: every committed stream decodes to the record count its commit
   listed, and segment files of a closed shard still have the size and sha256 it recorded.

``repair`` (``verify --repair``) truncates a **torn tail**, and nothing else: the file must end
inside its last frame (what ``kill -9`` of a writer leaves) or in zero bytes (what a crash of the
machine can leave), with no intact frame anywhere after the cut. The whole original file is kept
beside it as ``NNNNN.seg.zst.torn-<UTC time>`` (readers only read ``*.seg.zst``). A segment that
is still open in a running process is never touched.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptDataWarning, SkipKind
from ..pyreader import walk_frames
from .manifest import ShardManifest, fsync_directory
from .shard import SHARDS_DIR

__all__ = ["RepairResult", "SegmentCheck", "ShardCheck", "VerifyReport", "repair_segment",
           "verify_path", "walk_segment"]

_SKIPPABLE_MAGIC = 0x184D2A5D
_DDL_MAGICS = (b"DDL2", b"DDL1")


@dataclass
class SegmentCheck:
    """What the frame walk found in one segment file."""

    name: str
    bytes: int = 0
    blocks: int = 0
    records: int = 0
    checksum_failures: int = 0
    torn_tail: bool = False
    torn_offset: int | None = None  # where the torn frame starts: what a repair would cut
    footer: bool = False
    legacy: bool = False
    version: int | None = None  # 2 or 1; None for 0.1.x and for files of no known format
    skipped: list[dict[str, Any]] = field(default_factory=list)  # the walk's typed reports
    problems: list[str] = field(default_factory=list)
    repair: RepairResult | None = None


@dataclass
class RepairResult:
    """What ``repair_segment`` did to one segment (or why it left it alone)."""

    name: str
    repaired: bool
    message: str
    cut_at: int | None = None
    removed_bytes: int = 0
    backup: Path | None = None


@dataclass
class ShardCheck:
    """The checks of one logger directory (a shard, or a plain DataLogger directory)."""

    name: str
    path: Path
    closed: bool
    segments: list[SegmentCheck] = field(default_factory=list)
    committed_streams: int = 0
    decoded_records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.problems for s in self.segments)


@dataclass
class VerifyReport:
    path: Path
    shards: list[ShardCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.shards)

    def lines(self) -> Iterator[str]:
        yield (f"{'shard/segment':<44} {'bytes':>12} {'blocks':>7} {'records':>10} "
               f"{'crc fail':>8} {'torn':>5} {'footer':>6}")
        for shard in self.shards:
            state = "closed" if shard.closed else "NOT CLOSED (worker stopped or died)"
            yield f"{shard.name}  [{state}, {shard.committed_streams} committed streams]"
            for seg in shard.segments:
                yield (f"  {seg.name:<42} {seg.bytes:>12,} {seg.blocks:>7,} {seg.records:>10,} "
                       f"{seg.checksum_failures:>8} {'yes' if seg.torn_tail else 'no':>5} "
                       f"{'yes' if seg.footer else 'no':>6}")
                if seg.torn_tail:
                    yield (f"    torn tail at offset {seg.torn_offset}: "
                           f"{seg.bytes - (seg.torn_offset or 0):,} byte(s) of an unfinished frame")
                if seg.repair is not None:
                    yield f"    {'repaired' if seg.repair.repaired else 'not repaired'}: " \
                          f"{seg.repair.message}"
                for problem in seg.problems:
                    yield f"    ! {problem}"
            for problem in shard.problems:
                yield f"  ! {problem}"
        bad = [s for s in self.shards if not s.ok]
        segments = sum(len(s.segments) for s in self.shards)
        yield (f"{len(self.shards)} shard(s), {segments} segment(s): "
               + ("all intact" if not bad else f"{len(bad)} shard(s) with problems"))

    def problem_summary(self) -> str:
        for shard in self.shards:
            for seg in shard.segments:
                if seg.problems:
                    return f"{shard.name}/{seg.name}: {seg.problems[0]}"
            if shard.problems:
                return f"{shard.name}: {shard.problems[0]}"
        return "no problems"


def walk_segment(path: Path) -> SegmentCheck:
    """Walk a segment's frames and check what can be checked without decompressing.

    The walk is the readers' (FORMAT.md section 4.1): damage is skipped up to the next valid
    frame, so everything after it is still checked. A torn tail is what a crash leaves and what
    ``repair`` may cut: the file ends inside its last frame (or in zeros, where the file grew but
    the data never reached the disk) and no intact frame follows.
    """
    data = path.read_bytes()
    check = SegmentCheck(name=path.name, bytes=len(data))
    walk = walk_frames(path, data)
    if walk.version == 0:
        check.legacy = True  # 0.1.x: one zstd frame per record, nothing to walk; decode checks it
        return check
    check.version = walk.version
    check.blocks, check.records, check.footer = walk.blocks, walk.records, walk.footer
    check.skipped = walk.skipped
    for item in walk.skipped:
        kind, at, length = item["kind"], int(item["offset"]), int(item["length"])
        to_the_end = at + length == len(data)
        zeros = (kind in (SkipKind.CORRUPT_FRAME, SkipKind.AFTER_FOOTER) and to_the_end
                 and not any(data[at:]))
        if kind == SkipKind.TORN_TAIL or zeros:
            later = _intact_frame_after(data, at)
            if later is None:
                check.torn_tail = True
                check.torn_offset = at
                continue
            check.problems.append(f"frame at offset {at} runs past the end of the file but an "
                                  f"intact frame follows at offset {later}; "
                                  f"{len(data) - at} bytes skipped")
            continue
        if kind in (SkipKind.BAD_BLOCK, SkipKind.CORRUPT_FRAME):
            check.checksum_failures += 1
        check.problems.append(f"{kind} at offset {at} ({length:,} bytes): {item['reason']}")
    return check


def _intact_frame_after(data: bytes, start: int) -> int | None:
    """Offset of the first complete skippable frame with a valid DDL2 or DDL1 checksum after
    ``start``.

    A torn tail holds at most the beginning of one frame; an intact frame after the damage means
    the damage is in the middle of the file, and cutting there would lose intact data.
    """
    magic = struct.pack("<I", _SKIPPABLE_MAGIC)
    at = data.find(magic, start + 1)
    while at != -1:
        if at + 8 <= len(data):
            size = struct.unpack_from("<I", data, at + 4)[0]
            payload = data[at + 8:at + 8 + size]
            if (9 <= size == len(payload) and payload[:4] in _DDL_MAGICS
                    and zlib.crc32(payload[:-4]) == struct.unpack_from("<I", payload, size - 4)[0]):
                return at
        at = data.find(magic, at + 1)
    return None


def _open_elsewhere(path: Path) -> list[int]:
    """Processes that hold ``path`` open (Linux ``/proc``; empty where it is not readable)."""
    target = os.path.realpath(path)
    pids: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    pids.append(int(entry.name))
                    break
            except OSError:
                continue
    return pids


def repair_segment(path: str | os.PathLike[str], *,
                   now: datetime.datetime | None = None) -> RepairResult:
    """Truncate the torn tail of one segment, keeping the whole original as a backup.

    Refuses (``repaired=False``, with the reason) unless the segment's only damage is a torn
    tail: a segment with a checksum failure, an unparseable frame, or an intact frame after the
    torn one is left as it is, and so is a segment that a running process still has open.
    """
    seg = Path(path)
    check = walk_segment(seg)
    if check.legacy:
        return RepairResult(seg.name, False, "0.1.x segment: nothing to repair by truncation")
    if not check.torn_tail or check.torn_offset is None:
        return RepairResult(seg.name, False, "no torn tail")
    if check.problems:
        return RepairResult(seg.name, False, f"damaged before its tail ({check.problems[0]}); "
                                             "a truncation would cut intact data")
    data = seg.read_bytes()
    cut = check.torn_offset
    if len(data) != check.bytes or _intact_frame_after(data, cut) is not None:
        return RepairResult(seg.name, False, "the segment changed while it was checked")
    holders = _open_elsewhere(seg)
    if holders:
        return RepairResult(seg.name, False, f"open in process(es) {holders}: stop the writer "
                                             "first (a running writer would keep appending)")
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    backup = seg.with_name(f"{seg.name}.torn-{stamp}")
    # The backup is complete and on disk before a single byte of the original is cut.
    with open(backup, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    shutil.copystat(seg, backup)
    with open(seg, "r+b") as fh:
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_directory(seg.parent)
    return RepairResult(seg.name, True, f"cut at offset {cut} ({len(data) - cut:,} byte(s) "
                                        f"removed); original kept as {backup.name}",
                        cut_at=cut, removed_bytes=len(data) - cut, backup=backup)


def _logger_dirs(root: Path) -> list[tuple[str, Path]]:
    shards = root / SHARDS_DIR
    if shards.is_dir():
        return [(p.name, p) for p in sorted(shards.iterdir()) if p.is_dir()]
    if any(root.glob("*.seg.zst")) or (root / "streams").is_dir():
        return [(root.name, root)]
    raise FileNotFoundError(2, "not an experiment or logger directory (no shards/, no segments)",
                            str(root))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify_dir(name: str, path: Path) -> ShardCheck:
    from ..reader import read

    manifest = ShardManifest.load(path)
    closed = manifest.closed if manifest is not None else (path / "_DONE").exists()
    shard = ShardCheck(name=name, path=path, closed=closed)
    segment_files = sorted(path.glob("*.seg.zst"))
    for seg in segment_files:
        shard.segments.append(walk_segment(seg))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptDataWarning)
        table = read(path)
    shard.decoded_records = table.num_rows
    skipped: list[dict[str, Any]] = json.loads(
        (table.schema.metadata or {}).get(b"disco.skipped", b"[]"))
    by_segment = {s.name: s for s in shard.segments}
    for item in skipped:
        seg_name = Path(str(item.get("segment", ""))).name
        reason = str(item.get("reason", "skipped"))
        kind = item.get("kind")
        target = by_segment.get(seg_name)
        if target is not None and target.torn_tail and (
                kind == SkipKind.TORN_TAIL or item.get("offset") == target.torn_offset):
            continue  # already reported by the walk
        if target is not None and any(
                (s["offset"], s["kind"]) == (item.get("offset"), kind) for s in target.skipped):
            continue  # the walk found the same part
        message = f"decoder skipped offset {item.get('offset')} ({kind}): {reason}"
        if target is not None:
            if kind in (SkipKind.BAD_BLOCK, SkipKind.BAD_SECTION):
                target.checksum_failures += 1
            target.problems.append(message)
        else:
            shard.problems.append(message)

    if manifest is None:
        return shard
    for check in shard.segments:
        if check.torn_tail and closed:
            check.problems.append("torn tail in a shard that was closed cleanly")
    committed: dict[int, int] = {}
    for rep in manifest.replications:
        for s in rep.get("streams", []):
            committed[int(s["stream_id"])] = int(s.get("records") or 0)
    shard.committed_streams = len(committed)
    if committed:
        sids = table["stream_id"].to_numpy().astype(np.int64)
        counts = np.bincount(sids, minlength=max(committed) + 1) if len(sids) else \
            np.zeros(max(committed) + 1, dtype=np.int64)
        short = [(sid, want, int(counts[sid])) for sid, want in committed.items()
                 if counts[sid] < want]
        if short:
            sid, want, got = short[0]
            shard.problems.append(f"{len(short)} committed stream(s) lost records "
                                  f"(stream {sid}: {got} of {want})")
    if manifest.closed:
        for entry in manifest.segments:
            seg_path = path / entry["name"]
            if not seg_path.exists():
                shard.problems.append(f"segment {entry['name']} listed in the manifest is missing")
                continue
            size = seg_path.stat().st_size
            if size != entry.get("bytes"):
                shard.problems.append(f"segment {entry['name']}: {size} bytes, "
                                      f"manifest recorded {entry.get('bytes')}")
            elif entry.get("sha256") and _sha256(seg_path) != entry["sha256"]:
                shard.problems.append(f"segment {entry['name']}: sha256 differs from the manifest")
    return shard


def verify_path(path: str | Path, *, repair: bool = False) -> VerifyReport:
    """Check every logger directory under ``path`` (an experiment) or ``path`` itself.

    With ``repair``, every segment with a torn tail is repaired (:func:`repair_segment`) and its
    directory checked again; the report shows the state after the repair, with what was done.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such file or directory", str(root))
    report = VerifyReport(path=root)
    for name, logger_dir in _logger_dirs(root):
        shard = _verify_dir(name, logger_dir)
        if repair and any(seg.torn_tail for seg in shard.segments):
            repairs = {seg.name: repair_segment(logger_dir / seg.name)
                       for seg in shard.segments if seg.torn_tail}
            shard = _verify_dir(name, logger_dir)
            for seg in shard.segments:
                seg.repair = repairs.get(seg.name)
        report.shards.append(shard)
    return report
