"""The shard journal: what one worker committed, written so that a crash never corrupts it.

A shard keeps one metadata file beside its segments, the **commit journal**
``journal.jsonl.zst`` (format ``disco-shard-journal/2``, docs/service.md describes it byte by
byte). It is the source of truth of the shard: every other metadata file of an experiment (the
index, ``experiment.json``) is rebuilt from the journals and the segments.

The journal is a sequence of **frames**, each appended with one ``write`` and made durable with
one ``fsync``: a zstd skippable frame holding the length and crc32 of the zstd frame that
follows, then that zstd frame, which decompresses to JSON lines. ``zstd -dc journal.jsonl.zst``
prints them. The first frame holds the ``shard`` header; every later frame one **group
commit** (a ``commits`` line with the replications the group commits, in columns, after the
``failure`` lines of the attempts that failed since the previous frame); the last frame of a
closed shard a ``close`` line with the segment files' sizes and checksums. A worker killed
mid-append leaves a torn last frame, which readers ignore: a replication is in the journal
exactly when its whole frame is.

Label sets, scales and parameters are **interned**: each distinct one is defined once per frame
(``defs``) and referred to by number in it; the labels all streams of a replication share are
stored once per commit. Definitions never span frames, so a damaged frame costs only its own
commits. Per-stream record counts and epoch ranges are columns (epochs as
integer ticks where exact).

Shards written before format 2 (``manifest.jsonl`` plus, once closed, ``manifest.json``, format
``disco-shard-manifest/1``) are read as well, never written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import struct
import time
import warnings
import zlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptDataWarning
from ..layout import SEGMENT_NAME_RE, STREAM_META_KEYS
from .layout import (
    JOURNAL_FORMAT,
    JOURNAL_NAME,
    JOURNAL_V1_NAME,
    MANIFEST_FORMAT_V1,
    MANIFEST_NAME,
)

__all__ = [
    "JournalReader",
    "JOURNAL_NAME",
    "JOURNAL_V1_NAME",
    "MANIFEST_NAME",
    "CommitBatch",
    "JournalWriter",
    "SegmentCoverage",
    "ShardManifest",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_checksums",
    "fsync_directory",
    "read_journal",
    "split_sidecar",
    "to_json_line",
]

FRAME_MAGIC = 0x184D2A5E
"""zstd skippable-frame magic of a journal frame header (segments use 0x184D2A5D)."""
FRAME_TAG = b"DDLJ"
_FRAME_HEADER = struct.Struct("<II4sIII")  # magic, size=16, tag, zstd length, zstd crc, header crc
FRAME_HEADER_BYTES = _FRAME_HEADER.size
MAX_FRAME_BYTES = 1 << 30

ZSTD_LEVEL = 3


# ------------------------------------------------------------------------------ file helpers


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())


def fsync_directory(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths turn up in labels and parameters.
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json_line(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=_json_default) + "\n").encode()


def file_checksums(path: Path, chunk: int = 1 << 20) -> dict[str, Any]:
    """Size, crc32 and sha256 of a file in one pass (segments can be large)."""
    crc = 0
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(chunk)
            if not buf:
                break
            size += len(buf)
            crc = zlib.crc32(buf, crc)
            sha.update(buf)
    return {"name": path.name, "bytes": size, "crc32": crc, "sha256": sha.hexdigest()}


def crc32_of_range(path: Path, start: int, end: int, chunk: int = 1 << 20) -> int | None:
    """crc32 of bytes ``start..end`` of a file; None when the file is shorter or missing."""
    crc = 0
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                buf = fh.read(min(chunk, left))
                if not buf:
                    return None
                crc = zlib.crc32(buf, crc)
                left -= len(buf)
    except OSError:
        return None
    return crc


def split_sidecar(sidecar: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a stream's metadata into (labels, stream metadata)."""
    labels = {k: v for k, v in sidecar.items() if k not in STREAM_META_KEYS}
    meta = {k: sidecar[k] for k in STREAM_META_KEYS if k in sidecar}
    return labels, meta


def segment_files(shard_dir: Path) -> list[tuple[int, Path]]:
    """``(number, path)`` of the segment files of a directory, in order (regular files only)."""
    out = []
    try:
        with os.scandir(shard_dir) as it:
            for entry in it:
                match = SEGMENT_NAME_RE.match(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    out.append((int(match.group(1)), Path(entry.path)))
    except FileNotFoundError:
        return []
    return sorted(out)


# ----------------------------------------------------------------------------------- writing


def encode_frame(lines: Sequence[Mapping[str, Any]], cctx: Any) -> bytes:
    """One journal frame: the skippable header, then the zstd frame of the JSON lines."""
    body = b"".join(to_json_line(line) for line in lines)
    compressed = cctx.compress(body)
    if len(compressed) > MAX_FRAME_BYTES:
        raise ValueError(f"journal frame of {len(compressed)} bytes exceeds the format's limit")
    head = struct.pack("<II4sII", FRAME_MAGIC, 16, FRAME_TAG, len(compressed),
                       zlib.crc32(compressed))
    return head + struct.pack("<I", zlib.crc32(head[8:])) + compressed


def _canonical(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, dict):
        return _canonical(a) == _canonical(b)
    return bool(a == b)


def _intern_key(obj: Mapping[str, Any]) -> Any:
    """A hashable key equal for equal JSON objects (cheaper than their JSON text)."""
    key = tuple((k, v.__class__, v) for k, v in obj.items())
    try:
        hash(key)
    except TypeError:
        return _canonical(obj)
    return key


def _epoch_field(epoch: float | None, epoch_scale: float) -> int | float | None:
    """An epoch bound as stored: integer ticks when exact, else the float itself."""
    if epoch is None or not math.isfinite(epoch):
        return None
    try:
        tick = round(epoch / epoch_scale)
    except (OverflowError, ValueError, ZeroDivisionError):
        return float(epoch)
    if abs(tick) < (1 << 53) and tick * epoch_scale == epoch:
        return int(tick)
    return float(epoch)


@dataclass
class StreamCommit:
    """One stream of a replication being committed."""

    stream_id: int
    labels: dict[str, Any]
    meta: dict[str, Any]
    records: int
    min_epoch: float | None
    max_epoch: float | None


class SegmentCoverage:
    """The bytes a shard's segments gained since the last group commit, with their crc32.

    Recorded in every ``commits`` line (``sync``) after the logger was flushed, so that a reader
    can tell, commit by commit, whether the bytes a commit depends on are still there.
    """

    def __init__(self, shard_dir: Path) -> None:
        self.shard_dir = shard_dir
        self.number = 0
        self.offset = 0

    def advance(self) -> list[list[int]]:
        ranges: list[list[int]] = []
        for number, path in segment_files(self.shard_dir):
            if number < self.number:
                continue
            start = self.offset if number == self.number else 0
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size > start:
                crc = crc32_of_range(path, start, size)
                if crc is not None:
                    ranges.append([number, start, size, crc])
            self.number, self.offset = number, max(size, start)
        return ranges


class JournalWriter:
    """Appends a shard's frames to ``journal.jsonl.zst``; owned by the shard's one writer.

    Commits and failures are staged in memory; :meth:`write_group` appends them as one frame
    with one write and one fsync (the group's commit point).
    """

    def __init__(self, shard_dir: Path, shard_id: str, fingerprint: str | None) -> None:
        import zstandard

        self.shard_dir = shard_dir
        self.shard_id = shard_id
        self.path = shard_dir / JOURNAL_NAME
        self.header = {
            "type": "shard",
            "format": JOURNAL_FORMAT,
            "shard_id": shard_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created": time.time(),
            "fingerprint": fingerprint,
        }
        self._cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                              write_content_size=True)
        self._ids: dict[Any, int] = {}
        self._defs: dict[int, Any] = {}
        self._prev_common: dict[str, Any] = {}
        self._commits: dict[str, list[Any]] = _empty_commit_columns()
        self._failures: list[dict[str, Any]] = []
        self.commits = 0
        self.failures = 0
        self.bytes = 0
        # O_APPEND: every frame lands at the end even if the file was touched meanwhile.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._append(encode_frame([self.header], self._cctx))
        fsync_directory(shard_dir)

    @property
    def staged(self) -> int:
        """Commits and failures waiting for the next frame."""
        return len(self._commits["task_id"]) + len(self._failures)

    def _intern(self, obj: Mapping[str, Any]) -> int:
        key = _intern_key(obj)
        ident = self._ids.get(key)
        if ident is None:
            ident = len(self._ids)
            self._ids[key] = ident
            self._defs[ident] = obj
        return ident

    def stage_commit(self, info: Mapping[str, Any], streams: Sequence[StreamCommit]) -> None:
        """Stage one replication's commit (``info``: task id, point, attempt, timing)."""
        cols = self._commits
        labels = [s.labels for s in streams]
        common: dict[str, Any] = dict(labels[0]) if labels else {}
        for other in labels[1:]:
            for key in [k for k, v in common.items() if k not in other or not _same(other[k], v)]:
                del common[key]
        # Labels the previous commit shared too (experiment, model, point) are interned; those
        # that changed (the replication number) are stored inline, once per commit.
        prev = self._prev_common
        stable = {k: v for k, v in common.items() if k in prev and _same(prev[k], v)}
        own = {k: v for k, v in common.items() if k not in stable}
        self._prev_common = common
        params = info.get("params") or {}
        cols["task_id"].append(info["task_id"])
        cols["replication"].append(info.get("replication"))
        cols["point_id"].append(info.get("point_id"))
        cols["point_index"].append(info.get("point_index"))
        cols["attempt"].append(int(info.get("attempt") or 1))
        cols["params"].append(self._intern(dict(params)) if params else None)
        cols["finished"].append(round(float(info["finished"]), 6))
        cols["seconds"].append(round(float(info["seconds"]), 6))
        cols["shared"].append(self._intern(stable) if stable else None)
        cols["own"].append(own)
        cols["streams"].append(len(streams))
        sid_col, lab_col, meta_col = cols["stream_id"], cols["labels"], cols["meta"]
        rec_col, lo_col, hi_col = cols["records"], cols["lo"], cols["hi"]
        intern = self._intern
        for s in streams:
            residual = {k: v for k, v in s.labels.items() if k not in common}
            meta = s.meta
            es = float(meta.get("epoch_scale") or 1.0)
            sid_col.append(int(s.stream_id))
            lab_col.append(intern(residual))
            meta_col.append(intern({k: meta.get(k) for k in _META_KEYS}))
            rec_col.append(int(s.records))
            lo_col.append(_epoch_field(s.min_epoch, es))
            hi_col.append(_epoch_field(s.max_epoch, es))

    def stage_failure(self, failure: Mapping[str, Any]) -> None:
        self._failures.append({"type": "failure", **failure})

    def write_group(self, sync: list[list[int]], stats: Mapping[str, Any] | None) -> int:
        """Append the staged commits and failures as one frame, then fsync: their commit point.

        Returns the number of commits written.
        """
        lines: list[dict[str, Any]] = list(self._failures)
        n = len(self._commits["task_id"])
        if n:
            line: dict[str, Any] = {"type": "commits", "n": n, "sync": sync}
            if self._defs:
                line["defs"] = {str(k): v for k, v in self._defs.items()}
            if stats:
                line["stats"] = dict(stats)
            line.update(self._commits)
            lines.append(line)
        if not lines:
            return 0
        self._append(encode_frame(lines, self._cctx))
        self.commits += n
        self.failures += len(self._failures)
        self._reset_group()
        self._failures = []
        return n

    def _reset_group(self) -> None:
        self._ids = {}
        self._defs = {}
        self._commits = _empty_commit_columns()

    def discard_commits(self) -> None:
        """Drop the staged commits (their records could not be flushed)."""
        self._reset_group()

    def write_close(self, close: Mapping[str, Any]) -> None:
        """Append the ``close`` line (after any staged group)."""
        self._append(encode_frame([{"type": "close", **close}], self._cctx))

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.bytes += len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_META_KEYS = ("epoch_scale", "value_scale", "periodicity", "kind")
_COMMIT_KEYS = ("task_id", "replication", "point_id", "point_index", "attempt", "params",
                "finished", "seconds", "shared", "own", "streams")
_STREAM_KEYS = ("stream_id", "labels", "meta", "records", "lo", "hi")


def _empty_commit_columns() -> dict[str, list[Any]]:
    return {k: [] for k in (*_COMMIT_KEYS, *_STREAM_KEYS)}


# ----------------------------------------------------------------------------------- reading


class JournalProblem(Exception):
    """A part of a journal that cannot be used; the message names the place."""


@dataclass
class CommitBatch:
    """Commits of one shard read from its journal, in columns (one entry per commit or stream).

    A commit's shared labels are ``defs[shared]`` (``-1``: none) updated by its inline labels
    (``own``: one column per key, ``None`` where a commit lacks it); a stream's labels are its
    commit's plus ``defs[residual]``; its scales are ``defs[meta]``; a commit's parameters
    ``defs[params]``. ``group`` maps a commit to the ``sync`` ranges of the frame that committed
    it (``groups``; ``-1`` for format-1 commits, which have none).
    """

    shard_id: str
    task_id: list[str] = field(default_factory=list)
    replication: list[int | None] = field(default_factory=list)
    point_id: list[str | None] = field(default_factory=list)
    point_index: list[int | None] = field(default_factory=list)
    attempt: array = field(default_factory=lambda: array("q"))
    params: array = field(default_factory=lambda: array("q"))
    finished: array = field(default_factory=lambda: array("d"))
    seconds: array = field(default_factory=lambda: array("d"))
    shared: array = field(default_factory=lambda: array("q"))
    own: dict[str, list[Any]] = field(default_factory=dict)
    own_rows: int = 0
    n_streams: array = field(default_factory=lambda: array("q"))
    group: array = field(default_factory=lambda: array("q"))
    stream_id: array = field(default_factory=lambda: array("q"))
    residual: array = field(default_factory=lambda: array("q"))
    meta: array = field(default_factory=lambda: array("q"))
    records: array = field(default_factory=lambda: array("q"))
    min_epoch: array = field(default_factory=lambda: array("d"))
    max_epoch: array = field(default_factory=lambda: array("d"))
    defs: dict[int, Any] = field(default_factory=dict)
    next_def: int = 0
    groups: list[list[list[int]]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.task_id)

    def add_own(self, own: Mapping[str, Any]) -> None:
        """Append one commit's inline labels (once per commit, in commit order)."""
        n = self.own_rows
        for key, value in own.items():
            col = self.own.get(key)
            if col is None:
                col = self.own[key] = [None] * n
            col.append(value)
        for col in self.own.values():
            if len(col) == n:
                col.append(None)
        self.own_rows = n + 1

    def add_own_column(self, owns: Sequence[Mapping[str, Any]]) -> None:
        """Append the inline labels of several commits at once (see :meth:`add_own`)."""
        n = self.own_rows
        keys: dict[str, None] = {}
        for own in owns:
            keys.update(dict.fromkeys(own))
        for key in keys:
            col = self.own.get(key)
            if col is None:
                col = self.own[key] = [None] * n
            col.extend(own.get(key) for own in owns)
        for key, col in self.own.items():
            if key not in keys:
                col.extend([None] * len(owns))
        self.own_rows = n + len(owns)

    def commit_labels(self, i: int) -> dict[str, Any]:
        shared = self.shared[i]
        labels = dict(self.defs.get(shared, {})) if shared >= 0 else {}
        for key, col in self.own.items():
            if col[i] is not None:
                labels[key] = col[i]
        return labels

    def replications(self) -> list[dict[str, Any]]:
        """The commits as format-1 style dicts with their streams (tests, small shards)."""
        out = []
        pos = 0
        for i, tid in enumerate(self.task_id):
            common = self.commit_labels(i)
            streams = []
            for j in range(pos, pos + self.n_streams[i]):
                meta = self.defs.get(self.meta[j], {})
                streams.append({
                    "stream_id": self.stream_id[j],
                    "labels": {**common, **self.defs.get(self.residual[j], {})},
                    "epoch_scale": meta.get("epoch_scale"),
                    "value_scale": meta.get("value_scale"),
                    "periodicity": meta.get("periodicity"),
                    "kind": meta.get("kind"),
                    "records": self.records[j],
                    "min_epoch": _nan_to_none(self.min_epoch[j]),
                    "max_epoch": _nan_to_none(self.max_epoch[j]),
                })
            pos += self.n_streams[i]
            params = self.params[i]
            out.append({
                "task_id": tid,
                "replication": self.replication[i],
                "point_id": self.point_id[i],
                "point_index": self.point_index[i],
                "params": dict(self.defs.get(params, {})) if params >= 0 else {},
                "attempt": self.attempt[i],
                "shard_id": self.shard_id,
                "started": self.finished[i] - self.seconds[i],
                "finished": self.finished[i],
                "seconds": self.seconds[i],
                "streams": streams,
            })
        return out


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass
class JournalRead:
    """What one pass over a journal found (from ``start`` to ``end``)."""

    path: Path
    version: int
    header: dict[str, Any] | None
    batch: CommitBatch
    close: dict[str, Any] | None
    stats: dict[str, Any] | None
    end: int
    torn: bool
    problems: list[str]


@dataclass
class _Frames:
    """Frame iteration state: where the last whole frame ended and whether the file is torn."""

    end: int
    torn: bool = False


def _iter_frames(data: bytes, state: _Frames, name: str,
                 problems: list[str]) -> Iterator[tuple[int, bytes | None]]:
    """``(offset, zstd frame)`` of every frame from ``state.end``; a damaged frame yields None
    and a problem, and unreadable bytes are skipped to the next valid frame header. A file that
    ends inside a frame (an interrupted append) sets ``state.torn``."""
    n = len(data)
    pos = state.end
    magic = struct.pack("<I", FRAME_MAGIC)
    while pos < n:
        header_ok = False
        length = 0
        fcrc = 0
        if n - pos >= FRAME_HEADER_BYTES:
            m, size, tag, length, fcrc, hcrc = _FRAME_HEADER.unpack_from(data, pos)
            header_ok = (m == FRAME_MAGIC and size == 16 and tag == FRAME_TAG
                         and zlib.crc32(data[pos + 8:pos + 20]) == hcrc
                         and length <= MAX_FRAME_BYTES)
        if not header_ok:
            nxt = _next_header(data, pos + 1, magic)
            if nxt is None:
                if _looks_torn(data, pos):
                    state.torn = True
                else:
                    problems.append(f"{name}: unreadable bytes from offset {pos} to the end "
                                    f"({n - pos} bytes) skipped")
                    state.end = n
                return
            problems.append(f"{name}: unreadable bytes at offset {pos} ({nxt - pos} bytes) "
                            "skipped")
            pos = state.end = nxt
            continue
        end = pos + FRAME_HEADER_BYTES + length
        if end > n:
            nxt = _next_header(data, pos + 1, magic)
            if nxt is None:
                state.torn = True  # the writer died while appending this frame
                return
            problems.append(f"{name}: frame at offset {pos} runs past the end of the file; "
                            f"skipped to offset {nxt}")
            pos = state.end = nxt
            continue
        body = data[pos + FRAME_HEADER_BYTES:end]
        state.end = end
        if zlib.crc32(body) != fcrc:
            problems.append(f"{name}: frame at offset {pos}: checksum mismatch, frame skipped")
            yield pos, None
        else:
            yield pos, body
        pos = end


def _looks_torn(data: bytes, pos: int) -> bool:
    """A file ending inside a frame header (or in zeros) is what an interrupted append leaves."""
    rest = data[pos:]
    if not any(rest):
        return True
    head = struct.pack("<I", FRAME_MAGIC)
    return len(rest) < FRAME_HEADER_BYTES and (head.startswith(rest[:4]) or rest[:4] == head)


def _next_header(data: bytes, start: int, magic: bytes) -> int | None:
    at = data.find(magic, start)
    while at != -1:
        if at + FRAME_HEADER_BYTES <= len(data):
            m, size, tag, length, _fcrc, hcrc = _FRAME_HEADER.unpack_from(data, at)
            if (size == 16 and tag == FRAME_TAG and zlib.crc32(data[at + 8:at + 20]) == hcrc
                    and at + FRAME_HEADER_BYTES + length <= len(data)):
                return at
        at = data.find(magic, at + 1)
    return None


def _decompress(body: bytes) -> bytes:
    import zstandard

    out: bytes = zstandard.ZstdDecompressor().decompress(body)
    return out


def _int_or_none(v: Any, what: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise JournalProblem(f"{what} is not an integer ({v!r})")
    return v


def _ints(col: list[Any], what: str, *, nullable: bool = False,
          minimum: int = 0) -> np.ndarray | None:
    """A column of integers >= ``minimum`` as int64 (None when it holds nulls, which only a
    ``nullable`` column may); anything else is a JournalProblem."""
    arr = np.asarray(col) if col else np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "iu" and arr.ndim == 1:
        if len(arr) and int(arr.min()) < minimum:
            raise JournalProblem(f"{what} {int(arr.min())} is not an integer >= {minimum}")
        out: np.ndarray = arr.astype(np.int64, copy=False)
        return out
    for v in col:  # the slow path names the culprit
        if v is None and nullable:
            continue
        if type(v) is not int or v < minimum:
            raise JournalProblem(f"{what} {v!r} is not an integer >= {minimum}")
    return None


def _epochs(col: list[Any], scales: np.ndarray, what: str) -> np.ndarray:
    """Epoch bounds as stored (integer ticks, floats, null) -> float64 epochs (NaN: none)."""
    arr = np.asarray(col) if col else np.zeros(0, dtype=np.int64)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        ints: np.ndarray = arr.astype(np.float64) * scales  # all ticks: the common case
        return ints
    if arr.ndim == 1 and arr.dtype.kind == "f":
        floats: np.ndarray = arr.astype(np.float64)
        return floats
    try:
        values = np.array([math.nan if v is None else v for v in col], dtype=np.float64)
    except (TypeError, ValueError):
        raise JournalProblem(f"{what} holds a non-number") from None
    if any(type(v) is bool for v in col):
        raise JournalProblem(f"{what} holds a boolean")
    ticks = np.fromiter((type(v) is int for v in col), dtype=bool, count=len(col))
    out: np.ndarray = np.where(ticks, values * scales, values)
    return out


def _ids(col: list[Any], base: int) -> np.ndarray:
    """Definition references renumbered by ``base`` (null: -1)."""
    arr = np.asarray(col)
    if arr.dtype.kind in "iu":
        shifted: np.ndarray = arr.astype(np.int64) + base
        return shifted
    return np.array([-1 if x is None else base + x for x in col], dtype=np.int64)


def _extend(target: array, values: np.ndarray) -> None:
    target.frombytes(np.ascontiguousarray(values, dtype=target.typecode).tobytes())


def _add_commits(batch: CommitBatch, line: Mapping[str, Any]) -> None:
    """Append one ``commits`` line to ``batch``, all or nothing.

    Definition numbers are local to the line; they are renumbered into ``batch.defs``.
    """
    n = line.get("n")
    if type(n) is not int or n < 0:
        raise JournalProblem("'n' is missing or not a count")
    raw_defs = line.get("defs") or {}
    if not isinstance(raw_defs, dict):
        raise JournalProblem("'defs' is not an object")
    local: dict[int, Any] = {}
    for key, value in raw_defs.items():
        if not isinstance(key, str) or not key.isdigit():
            raise JournalProblem(f"definition id {key!r} is not a number")
        local[int(key)] = value
    cols = {}
    for key in _COMMIT_KEYS:
        col = line.get(key)
        if not isinstance(col, list) or len(col) != n:
            raise JournalProblem(f"column {key!r} is missing or does not have {n} entries")
        cols[key] = col
    streams = _ints(cols["streams"], "stream count")
    assert streams is not None
    total = int(streams.sum())
    for key in _STREAM_KEYS:
        col = line.get(key)
        if not isinstance(col, list) or len(col) != total:
            raise JournalProblem(f"column {key!r} is missing or does not have {total} entries")
        cols[key] = col

    def check_refs(col: list[Any], what: str, nullable: bool) -> None:
        for ident in set(col):
            if ident is None and nullable:
                continue
            if type(ident) is not int or not isinstance(local.get(ident), dict):
                raise JournalProblem(f"{what} refers to {ident!r}, which this line does not "
                                     "define as an object")

    check_refs(cols["shared"], "shared labels", True)
    check_refs(cols["params"], "params", True)
    check_refs(cols["labels"], "stream labels", False)
    check_refs(cols["meta"], "stream scales", False)
    for i in range(n):
        if not isinstance(cols["own"][i], dict):
            raise JournalProblem(f"labels of commit {i} are not an object")
        if not isinstance(cols["task_id"][i], str) or not cols["task_id"][i]:
            raise JournalProblem(f"task id {cols['task_id'][i]!r} is not a string")
        if cols["point_id"][i] is not None and not isinstance(cols["point_id"][i], str):
            raise JournalProblem(f"point id {cols['point_id'][i]!r} is not a string")
    _ints(cols["replication"], "replication", nullable=True, minimum=-(1 << 62))
    _ints(cols["point_index"], "point_index", nullable=True, minimum=-(1 << 62))
    attempts = _ints(cols["attempt"], "attempt", minimum=1)
    stream_ids = _ints(cols["stream_id"], "stream id")
    records = _ints(cols["records"], "record count")
    scale_of = {}
    for ident in set(cols["meta"]):
        es = local[ident].get("epoch_scale")
        if type(es) not in (int, float) or not es > 0:
            raise JournalProblem(f"epoch_scale {es!r} is not a positive number")
        scale_of[ident] = float(es)
    scales = np.array([scale_of[m] for m in cols["meta"]], dtype=np.float64)
    try:
        finished = [float(x) for x in cols["finished"]]
        seconds = [float(x) for x in cols["seconds"]]
    except (TypeError, ValueError):
        raise JournalProblem("'finished' or 'seconds' holds a non-number") from None
    lo = _epochs(cols["lo"], scales, "'lo'")
    hi = _epochs(cols["hi"], scales, "'hi'")
    sync = line.get("sync") or []
    if not isinstance(sync, list) or not all(
            isinstance(r, list) and len(r) == 4 and all(type(x) is int and x >= 0 for x in r)
            for r in sync):
        raise JournalProblem("'sync' is not a list of [segment, start, end, crc32]")

    # Everything is valid: renumber the definitions and append.
    base = batch.next_def
    for ident, value in local.items():
        batch.defs[base + ident] = value
    batch.next_def = base + (max(local) + 1 if local else 0)
    group = len(batch.groups)
    batch.groups.append(sync)
    assert attempts is not None and stream_ids is not None and records is not None
    batch.add_own_column(cols["own"])
    batch.task_id.extend(cols["task_id"])
    batch.replication.extend(cols["replication"])
    batch.point_id.extend(cols["point_id"])
    batch.point_index.extend(cols["point_index"])
    _extend(batch.attempt, attempts)
    _extend(batch.params, _ids(cols["params"], base))
    _extend(batch.finished, np.asarray(finished, dtype=np.float64))
    _extend(batch.seconds, np.asarray(seconds, dtype=np.float64))
    _extend(batch.shared, _ids(cols["shared"], base))
    _extend(batch.n_streams, streams)
    _extend(batch.group, np.full(n, group, dtype=np.int64))
    _extend(batch.stream_id, stream_ids)
    _extend(batch.residual, _ids(cols["labels"], base))
    _extend(batch.meta, _ids(cols["meta"], base))
    _extend(batch.records, records)
    _extend(batch.min_epoch, lo)
    _extend(batch.max_epoch, hi)


def _check_failure(line: Mapping[str, Any]) -> dict[str, Any]:
    tid = line.get("task_id")
    if not isinstance(tid, str) or not tid:
        raise JournalProblem("failure without a task id")
    out = {k: v for k, v in line.items() if k != "type"}
    for key in ("replication", "point_index", "attempt"):
        _int_or_none(out.get(key), key)
    if not isinstance(out.get("error", ""), (str, type(None))):
        out["error"] = str(out["error"])
    return out


class JournalReader:
    """Reads a format-2 journal from byte ``start`` (0, or a frame boundary an earlier read
    returned as ``end``) up to ``stop`` (default: the end of the file), in chunks of commits.

    Damaged frames and malformed lines are skipped, each reported in ``problems`` with the file,
    the frame offset and the line; a torn last frame is not a problem (``torn``). ``header``,
    ``close``, ``stats``, ``end`` and ``torn`` describe what :meth:`chunks` has read so far.
    """

    def __init__(self, shard_dir: Path, *, start: int = 0, stop: int | None = None,
                 display: str | None = None, data: bytes | None = None) -> None:
        self.shard_dir = shard_dir
        self._data = data
        """The journal's bytes when they are not in a file (read from object storage)."""
        self.path = shard_dir / JOURNAL_NAME
        self.name = display or str(self.path)
        self.start = start
        self.stop = stop
        self.problems: list[str] = []
        self.header: dict[str, Any] | None = None
        self.close: dict[str, Any] | None = None
        self.stats: dict[str, Any] | None = None
        self.end = start
        self.torn = False

    def chunks(self, max_commits: int | None = None) -> Iterator[CommitBatch]:
        """Batches of about ``max_commits`` commits (whole frames; None: one batch), in journal
        order; failure notes travel with the batch read when they were met."""
        if self._data is not None:
            data = self._data if self.stop is None else self._data[:self.stop]
        else:
            with open(self.path, "rb") as fh:
                data = fh.read() if self.stop is None else fh.read(self.stop)
        name = self.name
        batch = CommitBatch(shard_id=self.shard_dir.name)
        frames = _Frames(end=self.start)
        for offset, body in _iter_frames(data, frames, name, self.problems):
            self.end = frames.end
            if body is None:
                continue
            try:
                text = _decompress(body)
            except Exception as exc:  # noqa: BLE001 - zstd errors have no common base to name
                self.problems.append(f"{name}: frame at offset {offset} does not decompress "
                                     f"({exc}); skipped")
                continue
            for lineno, raw in enumerate(text.split(b"\n")[:-1], start=1):
                self._line(batch, raw, f"{name}: frame at offset {offset}, line {lineno}")
            if max_commits is not None and len(batch) >= max_commits:
                yield batch
                batch = CommitBatch(shard_id=self.shard_dir.name)
        self.end = frames.end
        self.torn = frames.torn
        if self.header is not None and self.header.get("format") != JOURNAL_FORMAT:
            self.problems.append(f"{name}: unknown journal format {self.header.get('format')!r}")
        if len(batch) or batch.failures or max_commits is None:
            yield batch

    def _line(self, batch: CommitBatch, raw: bytes, where: str) -> None:
        try:
            line = json.loads(raw)
            if not isinstance(line, dict):
                raise JournalProblem("not a JSON object")
            kind = line.get("type")
            if kind == "shard":
                if self.header is None:
                    self.header = line
            elif kind == "commits":
                _add_commits(batch, line)
                if isinstance(line.get("stats"), dict):
                    self.stats = line["stats"]
            elif kind == "failure":
                batch.failures.append(_check_failure(line))
            elif kind == "close":
                self.close = line
                if isinstance(line.get("stats"), dict):
                    self.stats = line["stats"]
            else:
                raise JournalProblem(f"unknown line type {kind!r}")
        except (ValueError, JournalProblem) as exc:
            self.problems.append(f"{where}: {exc}; line skipped")

    def result(self, batch: CommitBatch) -> JournalRead:
        return JournalRead(path=self.path, version=2, header=self.header, batch=batch,
                           close=self.close, stats=self.stats, end=self.end, torn=self.torn,
                           problems=self.problems)


def read_journal(shard_dir: Path, *, start: int = 0, display: str | None = None) -> JournalRead:
    """Read a format-2 journal from byte ``start`` in one batch (see :class:`JournalReader`)."""
    reader = JournalReader(shard_dir, start=start, display=display)
    (batch,) = list(reader.chunks(None))
    return reader.result(batch)


# ------------------------------------------------------------------------- format 1 (read only)


def _v1_stream(batch: CommitBatch, s: Mapping[str, Any], ids: dict[str, int]) -> None:
    labels = s.get("labels") or {}
    meta = {k: s.get(k) for k in _META_KEYS}
    for key, obj in (("residual", labels), ("meta", meta)):
        canon = _canonical(obj)
        ident = ids.get(canon)
        if ident is None:
            ident = ids[canon] = len(ids)
            batch.defs[ident] = obj
        getattr(batch, key).append(ident)
    sid = s["stream_id"]
    records = s.get("records") or 0
    if isinstance(sid, bool) or not isinstance(sid, int) or sid < 0:
        raise JournalProblem(f"stream id {sid!r} is not a non-negative integer")
    batch.stream_id.append(sid)
    batch.records.append(int(records))
    for key, col in (("min_epoch", batch.min_epoch), ("max_epoch", batch.max_epoch)):
        v = s.get(key)
        col.append(math.nan if v is None else float(v))


def _v1_commit(batch: CommitBatch, rep: Mapping[str, Any], ids: dict[str, int]) -> None:
    if not isinstance(rep, dict):
        raise JournalProblem("replication is not an object")
    tid = rep.get("task_id")
    if not isinstance(tid, str) or not tid:
        raise JournalProblem("commit without a task id")
    streams = rep.get("streams") or []
    if not isinstance(streams, list):
        raise JournalProblem("streams is not a list")
    # Stage into a scratch batch so that a bad stream leaves the real one untouched.
    scratch = CommitBatch(shard_id=batch.shard_id, defs=batch.defs)
    scratch_ids = dict(ids)
    for s in streams:
        if not isinstance(s, dict):
            raise JournalProblem("a stream is not an object")
        try:
            _v1_stream(scratch, s, scratch_ids)
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalProblem(f"stream entry unusable ({exc!r})") from None
    finished = rep.get("finished")
    started = rep.get("started")
    seconds = rep.get("seconds")
    finished_f = float(finished) if isinstance(finished, (int, float)) else 0.0
    if isinstance(seconds, (int, float)):
        seconds_f = float(seconds)
    elif isinstance(started, (int, float)):
        seconds_f = finished_f - float(started)
    else:
        seconds_f = 0.0
    ids.update(scratch_ids)
    batch.task_id.append(tid)
    batch.replication.append(_int_or_none(rep.get("replication"), "replication"))
    batch.point_id.append(rep.get("point_id") if isinstance(rep.get("point_id"), str) else None)
    batch.point_index.append(_int_or_none(rep.get("point_index"), "point_index"))
    batch.attempt.append(int(rep.get("attempt") or 1))
    params = rep.get("params") or {}
    if not isinstance(params, dict):
        raise JournalProblem("params is not an object")
    if params:
        canon = _canonical(params)
        ident = ids.get(canon)
        if ident is None:
            ident = ids[canon] = len(ids)
            batch.defs[ident] = dict(params)
        batch.params.append(ident)
    else:
        batch.params.append(-1)
    batch.finished.append(finished_f)
    batch.seconds.append(seconds_f)
    batch.shared.append(-1)
    batch.add_own({})
    batch.n_streams.append(len(streams))
    batch.group.append(-1)
    for key in ("stream_id", "residual", "meta", "records", "min_epoch", "max_epoch"):
        getattr(batch, key).extend(getattr(scratch, key))


def read_v1(shard_dir: Path, *, display: str | None = None) -> tuple[
        JournalRead, dict[str, Any] | None]:
    """Read a format-1 shard: ``manifest.json`` when readable, else ``manifest.jsonl``.

    Returns the read and the consolidated manifest document (None when absent or unreadable).
    """
    problems: list[str] = []
    batch = CommitBatch(shard_id=shard_dir.name)
    ids: dict[str, int] = {}
    consolidated = shard_dir / MANIFEST_NAME
    journal = shard_dir / JOURNAL_V1_NAME
    doc: dict[str, Any] | None = None
    prefix = display or str(shard_dir)
    try:
        raw = consolidated.read_bytes()
    except FileNotFoundError:
        raw = None
    if raw is not None:
        try:
            loaded = json.loads(raw)
            if not isinstance(loaded, dict) or not isinstance(loaded.get("replications", []),
                                                              list):
                raise ValueError("not a manifest object")
            doc = loaded
        except ValueError as exc:
            problems.append(f"{prefix}/{MANIFEST_NAME}: unreadable ({exc}); rebuilt from "
                            f"{JOURNAL_V1_NAME}")
    header: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    end = 0
    torn = False
    if doc is not None:
        header = {k: doc.get(k) for k in ("shard_id", "host", "pid", "created", "fingerprint")}
        header["format"] = doc.get("format", MANIFEST_FORMAT_V1)
        for i, rep in enumerate(doc.get("replications", [])):
            try:
                _v1_commit(batch, rep, ids)
            except (JournalProblem, TypeError, ValueError) as exc:
                problems.append(f"{prefix}/{MANIFEST_NAME}: replication {i}: {exc}; skipped")
        for failure in doc.get("failures", []) or []:
            if isinstance(failure, dict) and isinstance(failure.get("task_id"), str):
                batch.failures.append(dict(failure))
        stats = doc.get("stats") if isinstance(doc.get("stats"), dict) else None
        try:
            end = journal.stat().st_size
        except FileNotFoundError:
            end = 0
    else:
        try:
            data = journal.read_bytes()
        except FileNotFoundError:
            data = None
        if data is not None:
            lines = data.split(b"\n")
            torn = bool(lines and lines[-1])
            end = len(data) - len(lines[-1])
            for lineno, line in enumerate(lines[:-1], start=1):
                if not line:
                    continue
                where = f"{prefix}/{JOURNAL_V1_NAME} line {lineno}"
                try:
                    entry = json.loads(line)
                    if not isinstance(entry, dict):
                        raise JournalProblem("not a JSON object")
                    kind = entry.get("type")
                    if kind == "shard":
                        header = header or entry
                    elif kind == "commit":
                        _v1_commit(batch, entry.get("replication") or {}, ids)
                        if isinstance(entry.get("stats"), dict):
                            stats = entry["stats"]
                    elif kind == "failure":
                        failure = entry.get("failure")
                        if not isinstance(failure, dict):
                            raise JournalProblem("failure is not an object")
                        batch.failures.append(_check_failure(failure))
                    else:
                        raise JournalProblem(f"unknown line type {kind!r}")
                except (ValueError, TypeError, JournalProblem) as exc:
                    problems.append(f"{where}: {exc}; line skipped")
    read = JournalRead(path=journal, version=1, header=header, batch=batch, close=None,
                       stats=stats, end=end, torn=torn, problems=problems)
    return read, doc


# ------------------------------------------------------------------------------ the manifest


@dataclass
class ShardManifest:
    """Everything one shard committed, read from its journal (format 2) or manifests (format 1).

    ``shard_id`` is always the name of the shard's folder: ids found inside files are never used
    to build a path. ``problems`` lists what could not be read (each naming the file and place).
    """

    shard_id: str
    path: Path
    host: str = ""
    pid: int = 0
    created: float = 0.0
    fingerprint: str | None = None
    closed: bool = False
    state: str = "open"
    """``open`` (no close record: running, killed or stopped), ``closed`` or ``writer_failed``."""
    error: str | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    torn_lines: int = 0
    version: int = 2
    problems: list[str] = field(default_factory=list)
    batch: CommitBatch | None = None
    journal_end: int = 0

    @property
    def replications(self) -> list[dict[str, Any]]:
        """The committed replications with their streams, as dicts (one per commit)."""
        return self.batch.replications() if self.batch is not None else []

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.batch.failures) if self.batch is not None else []

    @property
    def commits(self) -> int:
        return len(self.batch) if self.batch is not None else 0

    @classmethod
    def load(cls, shard_dir: str | os.PathLike[str], *, warn: bool = True,
             display: str | None = None) -> ShardManifest | None:
        """Read ``shard_dir``'s journal; None when it holds neither journal nor manifest.

        Damage is skipped; with ``warn`` each problem is also a :class:`CorruptDataWarning`.
        """
        shard_dir = Path(shard_dir)
        if (shard_dir / JOURNAL_NAME).is_file():
            read = read_journal(shard_dir, display=display and f"{display}/{JOURNAL_NAME}")
            manifest = cls.from_read(shard_dir, read)
        elif (shard_dir / MANIFEST_NAME).is_file() or (shard_dir / JOURNAL_V1_NAME).is_file():
            read, doc = read_v1(shard_dir, display=display)
            manifest = cls.from_read(shard_dir, read)
            if doc is not None:
                manifest.closed = bool(doc.get("closed", False))
                manifest.state = "closed" if manifest.closed else "open"
                segments = doc.get("segments", [])
                manifest.segments = [s for s in segments if _safe_segment_entry(s)] \
                    if isinstance(segments, list) else []
        else:
            return None
        if warn:
            for problem in manifest.problems:
                warnings.warn(problem, CorruptDataWarning, stacklevel=2)
        return manifest

    @classmethod
    def from_read(cls, shard_dir: Path, read: JournalRead) -> ShardManifest:
        header = read.header or {}
        problems = list(read.problems)
        if read.header is None and (read.batch.task_id or read.close):
            problems.append(f"{read.path}: no shard header; the folder name is used as its id")
        claimed = header.get("shard_id")
        if claimed is not None and claimed != shard_dir.name:
            problems.append(f"{read.path}: claims shard id {claimed!r} but lives in "
                            f"{shard_dir.name!r}; the folder name is used")
        pid = header.get("pid")
        created = header.get("created")
        fingerprint = header.get("fingerprint")
        manifest = cls(
            shard_id=shard_dir.name,
            path=shard_dir,
            host=str(header.get("host") or ""),
            pid=pid if isinstance(pid, int) else 0,
            created=float(created) if isinstance(created, (int, float)) else 0.0,
            fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            stats=dict(read.stats or {}),
            torn_lines=int(read.torn),
            version=read.version,
            problems=problems,
            batch=read.batch,
            journal_end=read.end,
        )
        close = read.close
        if close is not None:
            manifest.state = str(close.get("state") or "closed")
            manifest.closed = manifest.state == "closed"
            manifest.error = close.get("error") if isinstance(close.get("error"), str) else None
            segments = close.get("segments", [])
            manifest.segments = [s for s in segments if _safe_segment_entry(s)] \
                if isinstance(segments, list) else []
        return manifest


def _safe_segment_entry(entry: Any) -> bool:
    """A segment entry whose name is a plain segment file name (never a path)."""
    return (isinstance(entry, dict) and isinstance(entry.get("name"), str)
            and SEGMENT_NAME_RE.match(entry["name"]) is not None)


def plain_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if isinstance(v, int | float | str | bool)}


def segments_summary(shard_dir: Path) -> list[dict[str, Any]]:
    """Size, crc32 and sha256 of every segment of a shard (its close record)."""
    return [file_checksums(p) for _n, p in segment_files(shard_dir)]
