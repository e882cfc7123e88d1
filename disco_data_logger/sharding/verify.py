"""``verify``: check every segment of an experiment (or of one logger directory).

Three independent checks, so that a problem is found whichever layer it is in:

1. a walk over each segment's frames as the readers walk them (``docs/FORMAT.md`` section 4.1,
   formats 2 and 1), without decompressing: blocks, records declared by the block headers, frame
   and compressed-frame checksums, the footer, a torn tail (a file ending inside a frame), and
   every other skipped part with its kind;
2. a full decode with the native reader, whose ``disco.skipped`` report lists every block it had
   to skip (raw-payload checksums, bad payloads);
3. against the shard journal: every frame of it is readable, every committed stream decodes to
   the record count its commit listed and carries the labels and scales its commit lists in its
   in-band registration, the segment bytes every group commit depends on are present with their
   crc32, segment files of a closed shard still have the size and sha256 it recorded, and every
   shard the experiment index lists is still there.

``repair`` (``verify --repair``) truncates a **torn tail**, and nothing else: the file must end
inside its last frame (what ``kill -9`` of a writer leaves) or in zero bytes (what a crash of the
machine can leave), with no intact frame anywhere after the cut. The whole original file is kept
beside it as ``NNNNN.seg.zst.torn-<UTC time>`` (readers only read ``*.seg.zst``). A segment that
is still open in a running process is never touched, and nothing is repaired while a run holds
the experiment's lock.

Repair touches only regular segment files directly inside a shard directory that is inside the
experiment, and, in a closed shard, only files its manifest lists. Symbolic links are never
followed: a symlinked segment or shard directory is reported as a problem (never "intact"), not
read by the frame walk and not repaired, and neither the truncation nor the backup goes through a
link.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptDataWarning, ExperimentLockedError, SkipKind
from ..layout import SEGMENT_NAME_RE
from ..pyreader import walk_frames
from .index import scan_shards, verify_groups
from .layout import INDEX_DIR, INDEX_STATE, SHARD_ID_RE, SHARDS_DIR
from .lock import live_holders
from .manifest import ShardManifest, fsync_directory
from .storage import is_uri

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
    repairable: bool = True
    """False for a file repair must not touch: a link, not a regular file, not listed."""


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
    path: Path | str
    shards: list[ShardCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Problems of the experiment as a whole (a shard the index lists is gone)."""

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.shards) and not self.problems

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
        for problem in self.problems:
            yield f"! {problem}"
        bad = [s for s in self.shards if not s.ok]
        segments = sum(len(s.segments) for s in self.shards)
        if not bad and not self.problems:
            verdict = "all intact"
        else:
            verdict = ", ".join(x for x in (
                f"{len(bad)} shard(s) with problems" if bad else "",
                f"{len(self.problems)} experiment problem(s)" if self.problems else "") if x)
        yield f"{len(self.shards)} shard(s), {segments} segment(s): {verdict}"

    def problem_summary(self) -> str:
        if self.problems:
            return self.problems[0]
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


def _open_elsewhere(path: Path, ignore_fd: int | None = None) -> list[int]:
    """Processes that hold ``path`` open (Linux ``/proc``; empty where it is not readable),
    not counting this process's descriptor ``ignore_fd``."""
    target = os.path.realpath(path)
    pids: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    me = str(os.getpid())
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            if entry.name == me and fd.name == str(ignore_fd):
                continue
            try:
                if os.readlink(fd) == target:
                    pids.append(int(entry.name))
                    break
            except OSError:
                continue
    return pids


def _regular_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a regular file (a link is never followed), or None."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"cannot be examined: {exc.strerror or exc}"
    if stat.S_ISLNK(mode):
        return f"is a symbolic link (to {os.readlink(path)})"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    return None


def repair_segment(path: str | os.PathLike[str], *,
                   now: datetime.datetime | None = None) -> RepairResult:
    """Truncate the torn tail of one segment, keeping the whole original as a backup.

    Refuses (``repaired=False``, with the reason) unless the segment's only damage is a torn
    tail: a segment with a checksum failure, an unparseable frame, or an intact frame after the
    torn one is left as it is, and so is a segment that a running process still has open, and
    anything that is not a regular file (a symbolic link is never followed).
    """
    seg = Path(path)
    problem = _regular_file_problem(seg)
    if problem is not None:
        return RepairResult(seg.name, False, f"{problem}: only regular segment files are "
                                             "repaired")
    check = walk_segment(seg)
    if check.legacy:
        return RepairResult(seg.name, False, "0.1.x segment: nothing to repair by truncation")
    if not check.torn_tail or check.torn_offset is None:
        return RepairResult(seg.name, False, "no torn tail")
    if check.problems:
        return RepairResult(seg.name, False, f"damaged before its tail ({check.problems[0]}); "
                                             "a truncation would cut intact data")
    # From here on, one descriptor opened without following links: what is checked, backed up
    # and cut is the same regular file, even if the path is swapped meanwhile.
    try:
        fd = os.open(seg, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return RepairResult(seg.name, False, f"cannot be opened for repair: {exc.strerror}")
    with os.fdopen(fd, "r+b") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return RepairResult(seg.name, False, "is not a regular file")
        if st.st_nlink > 1:
            # `merge --into` hard-links shards: cutting this file would cut the other copy too.
            return RepairResult(seg.name, False, f"has {st.st_nlink} hard links (another "
                                                 "experiment shares it, e.g. after merge "
                                                 "--into): copy it to a file of its own first")
        data = fh.read()
        cut = check.torn_offset
        if len(data) != check.bytes or _intact_frame_after(data, cut) is not None:
            return RepairResult(seg.name, False, "the segment changed while it was checked")
        holders = _open_elsewhere(seg, ignore_fd=fh.fileno())
        if holders:
            return RepairResult(seg.name, False, f"open in process(es) {holders}: stop the "
                                                 "writer first (a running writer would keep "
                                                 "appending)")
        stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime(
            "%Y%m%dT%H%M%S%fZ")
        backup = seg.with_name(f"{seg.name}.torn-{stamp}")
        # The backup is complete and on disk before a single byte of the original is cut; it
        # is a new file (O_EXCL), never a link's target.
        out_fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, stat.S_IMODE(st.st_mode))
        with os.fdopen(out_fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        fh.truncate(cut)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_directory(seg.parent)
    return RepairResult(seg.name, True, f"cut at offset {cut} ({len(data) - cut:,} byte(s) "
                                        f"removed); original kept as {backup.name}",
                        cut_at=cut, removed_bytes=len(data) - cut, backup=backup)


def _logger_dirs(root: Path) -> list[tuple[str, Path, str | None]]:
    """(name, directory, problem) of every logger directory to check; a problem means "do not
    look inside" (a symbolic link where a directory of the experiment should be)."""
    shards = root / SHARDS_DIR
    if shards.is_symlink():
        return [(SHARDS_DIR, shards, f"{SHARDS_DIR}/ is a symbolic link (to "
                                     f"{os.readlink(shards)}); not checked, never repaired")]
    if shards.is_dir():
        found: list[tuple[str, Path, str | None]] = []
        shard_names = {p.name for p in scan_shards(root, warn=False)}
        for p in sorted(shards.iterdir()):
            if p.is_symlink():
                found.append((p.name, p, f"shard directory is a symbolic link (to "
                                         f"{os.readlink(p)}); not checked, never repaired"))
            elif p.name in shard_names:
                found.append((p.name, p, None))
        return found
    if any(root.glob("*.seg.zst")) or (root / "streams").is_dir():
        return [(root.name, root, None)]
    raise FileNotFoundError(2, "not an experiment or logger directory (no shards/, no segments)",
                            str(root))


def _missing_shards(root: Path) -> list[str]:
    """Shards the experiment index lists that are no longer in ``shards/``."""
    try:
        state = json.loads((root / INDEX_DIR / INDEX_STATE).read_bytes())
        listed = list(state["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    present = {p.name for p in scan_shards(root)} if (root / SHARDS_DIR).is_dir() else set()
    return [f"shard {name} is listed in the index but its folder {SHARDS_DIR}/{name} is gone "
            "(its commits are lost; `disco-data-logger run` runs them again)"
            for name in listed if name not in present]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _strays_of_open_shard(manifest: ShardManifest | None,
                          files: list[Path]) -> dict[str, str]:
    """Segments of a shard that is still open (or whose writer died) that its writer did not
    write: every sync covers all segment bytes written since the one before, so each segment
    up to the last one a commit covers is covered, and the only uncovered ones a writer leaves
    are the segments after it, numbered on without a gap. Name -> why it is a stray."""
    if manifest is None or manifest.batch is None:
        return {}
    covered = {int(r[0]) for group in manifest.batch.groups for r in group}
    numbers = {int(m.group(1)): f.name for f in files
               if (m := SEGMENT_NAME_RE.match(f.name)) is not None}
    last = max(covered, default=-1)
    tail = last + 1  # the writer's segments after its last commit: last+1, last+2, ... no gap
    while tail in numbers:
        tail += 1
    return {name: "not written by this shard's writer: no commit covers it and it is not one of "
                  "the segments written after the last commit (a stray or copied file; queries "
                  "do not read it)"
            for number, name in numbers.items()
            if number not in covered and not last < number < tail}


def _verify_dir(name: str, path: Path) -> ShardCheck:
    from ..reader import read

    manifest = ShardManifest.load(path, warn=False)
    closed = manifest.closed if manifest is not None else (path / "_DONE").exists()
    shard = ShardCheck(name=name, path=path, closed=closed)
    listed = ({str(e.get("name")) for e in manifest.segments}
              if manifest is not None and manifest.closed else None)
    segment_files = sorted(path.glob("*.seg.zst"))
    strays = _strays_of_open_shard(manifest, segment_files) if listed is None else {}
    for seg in segment_files:
        problem = _regular_file_problem(seg)
        if problem is not None:
            check = SegmentCheck(name=seg.name, repairable=False)
            check.problems.append(f"{problem}: segments must be regular files inside the "
                                  "experiment; not walked, never repaired")
        else:
            check = walk_segment(seg)
        if not SEGMENT_NAME_RE.match(seg.name):
            check.repairable = False
        if listed is not None and seg.name not in listed:
            check.repairable = False
            check.problems.append("not listed in the manifest of this closed shard (a closed "
                                  "shard lists every segment it wrote)")
        elif seg.name in strays:
            check.repairable = False
            check.problems.append(strays[seg.name])
        shard.segments.append(check)

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
    shard.problems.extend(manifest.problems)
    for check in shard.segments:
        if check.torn_tail and closed:
            check.problems.append("torn tail in a shard that was closed cleanly")
    if manifest.state == "writer_failed":
        shard.problems.append(f"the shard's writer failed: {manifest.error or 'unknown error'}")
    batch = manifest.batch
    committed: dict[int, int] = {}
    if batch is not None and len(batch.stream_id):
        sids = np.frombuffer(batch.stream_id, dtype=np.int64)
        records = np.frombuffer(batch.records, dtype=np.int64)
        committed = dict(zip(sids.tolist(), records.tolist(), strict=True))
    shard.committed_streams = len(committed)
    if committed:
        sids = table["stream_id"].to_numpy().astype(np.int64)
        top = max(committed) + 1
        counts = np.bincount(sids[sids < top], minlength=top) if len(sids) else \
            np.zeros(top, dtype=np.int64)
        short = [(sid, want, int(counts[sid])) for sid, want in committed.items()
                 if counts[sid] < want]
        if short:
            sid, want, got = short[0]
            shard.problems.append(f"{len(short)} committed stream(s) lost records "
                                  f"(stream {sid}: {got} of {want})")
        shard.problems.extend(_registrations_agree(path, manifest))
    if batch is not None and batch.groups:
        ok, problems = verify_groups(path, batch.groups, name)
        if not ok.all():
            shard.problems.append(f"{int((~ok).sum())} group commit(s) depend on segment bytes "
                                  f"that are damaged or missing ({problems[0]})")
    if manifest.closed:
        for entry in manifest.segments:
            seg_path = path / entry["name"]
            if not seg_path.exists():
                shard.problems.append(f"segment {entry['name']} listed in the journal is missing")
                continue
            size = seg_path.stat().st_size
            if size != entry.get("bytes"):
                shard.problems.append(f"segment {entry['name']}: {size} bytes, "
                                      f"journal recorded {entry.get('bytes')}")
            elif entry.get("sha256") and _sha256(seg_path) != entry["sha256"]:
                shard.problems.append(f"segment {entry['name']}: sha256 differs from the journal")
    return shard


def _registrations_agree(path: Path, manifest: ShardManifest) -> list[str]:
    """The labels and scales every commit lists equal the stream's in-band registration."""
    from ..reader import read_registrations

    batch = manifest.batch
    if batch is None or not len(batch.stream_id):
        return []
    inband = read_registrations(path, warn=False)
    wrong: list[str] = []
    pos = 0
    for i in range(len(batch)):
        common = batch.commit_labels(i)
        for j in range(pos, pos + batch.n_streams[i]):
            sid = batch.stream_id[j]
            reg = inband.get(sid)
            if reg is None:
                continue  # no records and no registration left: the record count check speaks
            meta = batch.defs.get(batch.meta[j], {})
            want = {**common, **batch.defs.get(batch.residual[j], {}), "stream_id": sid,
                    **{k: v for k, v in meta.items() if v is not None}}
            got = {k: v for k, v in reg.items() if v is not None}
            if got != {k: v for k, v in want.items() if v is not None}:
                wrong.append(str(sid))
        pos += batch.n_streams[i]
    if not wrong:
        return []
    return [f"{len(wrong)} committed stream(s) whose in-band registration differs from the "
            f"journal (stream {wrong[0]})"]


def verify_path(path: str | Path, *, repair: bool = False, storage: Any = None) -> VerifyReport:
    """Check every logger directory under ``path`` (an experiment) or ``path`` itself.

    With ``repair``, every segment with a torn tail is repaired (:func:`repair_segment`) and its
    directory checked again; the report shows the state after the repair, with what was done.

    ``path`` may be an object-store URI (``s3://bucket/prefix``; ``storage``: the config's
    ``storage:`` options): every shard's journal and segments are fetched into the local
    mirror (:mod:`.mirror`) and checked there, plus that each file's pieces join up.
    """
    if is_uri(path):
        return _verify_store(str(path), repair=repair, storage=storage)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such file or directory", str(root))
    if repair:
        holders = live_holders(root)
        if holders:
            raise ExperimentLockedError(
                f"{root} is in use by a run ({holders[0].describe()}; lock file "
                f"{holders[0].path}); --repair waits until no run holds the experiment")
    report = VerifyReport(path=root)
    report.problems.extend(_missing_shards(root))
    real_root = root.resolve()
    for name, logger_dir, problem in _logger_dirs(root):
        if problem is not None:
            report.shards.append(ShardCheck(name=name, path=logger_dir, closed=False,
                                            problems=[problem]))
            continue
        shard = _verify_dir(name, logger_dir)
        inside = logger_dir.resolve() == real_root or real_root in logger_dir.resolve().parents
        if repair and inside and any(seg.torn_tail and seg.repairable
                                     for seg in shard.segments):
            repairs = {seg.name: repair_segment(logger_dir / seg.name)
                       for seg in shard.segments if seg.torn_tail and seg.repairable}
            shard = _verify_dir(name, logger_dir)
            for seg in shard.segments:
                seg.repair = repairs.get(seg.name)
        report.shards.append(shard)
    return report


def _verify_store(uri: str, *, repair: bool, storage: Any) -> VerifyReport:
    from .mirror import StoreMirror

    if repair:
        raise ValueError(f"{uri}: --repair works on a directory only: objects in a store are "
                         "written whole and never cut, so they have no torn tail to repair")
    mirror = StoreMirror(uri, storage)
    with mirror.locked(), mirror.uris_in_warnings():
        mirror.refresh()
        mirror.check_experiment()
        mirror.forget_gone_shards()
        mirror.sync_index()
        store_problems: dict[str, list[str]] = {}
        top: list[str] = []
        for name, stored in sorted(mirror.shards.items()):
            where = f"{uri}/{SHARDS_DIR}/{name}"
            if not SHARD_ID_RE.match(name) or not stored.journal:
                top.append(f"{where}: not a shard (no journal, or not a shard id); ignored")
                continue
            mirror.sync_shard(name)
            store_problems[name] = [f"{where}/{gap}" for gap in stored.gaps()]
            if stored.stray:
                store_problems[name].append(f"{mirror.uri}/{stored.stray[0]}: not part of a "
                                            f"shard's layout ({len(stored.stray)} object(s))")
        report = verify_path(mirror.root)
    report.path = uri
    report.problems = [mirror.display(p) for p in [*top, *report.problems]]
    for shard in report.shards:
        shard.problems = [mirror.display(p) for p in
                          [*store_problems.get(shard.name, []), *shard.problems]]
        for seg in shard.segments:
            seg.problems = [mirror.display(p) for p in seg.problems]
    return report
