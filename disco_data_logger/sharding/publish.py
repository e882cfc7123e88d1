"""Staging and publishing: a worker's shard on node-local scratch, published to object storage.

A worker whose output is a URI writes its shard exactly as to a local directory (the native
writer, the journal), but under a scratch directory of its own node
(``<scratch>/<location>/<shard_id>/``), and after every durable group commit publishes what the
group made durable, in this order (docs/service.md, "Experiments in object storage"):

1. the **data**: every byte range the group's ``sync`` line names, each as one immutable object
   ``shards/<id>/segments/NNNNN/<start>-<end>`` (15-digit decimal offsets), after checking that
   the staged bytes still have the crc32 the commit recorded;
2. the **commit**: the journal bytes appended since the last publish (whole frames: the group's
   ``commits`` frame and any ``failure`` frames) as ``shards/<id>/journal/<start>-<end>``.

Object stores have no append and no rename, so every object has a unique name that says which
bytes of which file it holds, is written once, whole (a PUT is atomic), and never changed; a
retried upload writes the same bytes under the same name. A commit object is written only after
every data object it depends on, so a reader that sees a commit finds its bytes. A worker that
dies between the two leaves data objects no commit names (never read as results); one that
dies before its commit object is complete leaves no commit at all (object stores show an object
only once it is whole). Only then is the group reported durable to the coordinator.

**Bounded object counts.** Pieces are merged as they accumulate: when the last
:data:`FANOUT` pieces of a file are of the same generation and together hold at most
:data:`FINAL_PIECE_BYTES`, they are uploaded again as one piece (from the staged file) and the
old ones are deleted, so a file is a handful of pieces per :data:`FINAL_PIECE_BYTES` of data,
however many groups wrote it. A merged piece is written before the pieces it replaces are
deleted: a reader always finds a complete cover (it prefers the longest piece at each offset).

**Bounded scratch.** Staged segments rotate at :data:`STAGE_ROTATE_BYTES` at most; a segment
that is sealed (a later one exists) and completely published is deleted from scratch, and the
whole scratch directory goes when the shard closes. Scratch directories of workers that died
(their lock file is no longer held) are swept by the next worker of the same experiment on the
node.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..layout import DONE_MARKER
from .layout import SHARDS_DIR, STORE_JOURNAL_DIR, STORE_SEGMENTS_DIR, piece_name
from .manifest import JOURNAL_NAME
from .storage import ObjectStore

__all__ = ["ShardPublisher", "STAGE_ROTATE_BYTES", "FANOUT", "FINAL_PIECE_BYTES",
           "staging_logger_kwargs"]

STAGE_ROTATE_BYTES = 64 << 20
"""Staged segments rotate at this size at most, so that scratch holds at most about this much
per worker (published, sealed segments are deleted)."""

FANOUT = 16
"""Pieces of one generation merged into one."""

FINAL_PIECE_BYTES = 4 << 20
"""Pieces are merged only while the merged piece stays this small; bigger ones stay as they are
(so a piece holds FINAL_PIECE_BYTES / FANOUT = 256 KiB on average or more, and a group of that
size or more is uploaded once)."""

LOCK_SUFFIX = ".lock"


def staging_logger_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The logger settings of a staged shard: the configured ones, rotation capped."""
    out = dict(kwargs or {})
    rotate = out.get("rotate_bytes")
    out["rotate_bytes"] = STAGE_ROTATE_BYTES if rotate is None else \
        min(int(rotate), STAGE_ROTATE_BYTES)
    return out


def segment_file_name(number: int) -> str:
    return f"{number:05d}.seg.zst"


@dataclass
class _Piece:
    start: int
    end: int
    level: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class PieceLog:
    """The published pieces of one staged file (the journal, or one segment), in order."""

    store: ObjectStore
    folder: str
    """Relative name of the folder the pieces go in (``shards/<id>/journal``)."""
    path: Path
    """The staged file the pieces are cut from."""
    pieces: list[_Piece] = field(default_factory=list)
    published: int = 0

    def add(self, start: int, end: int) -> None:
        """Publish bytes ``start..end`` (which must follow what was published) as one piece."""
        if start != self.published:
            raise AssertionError(f"{self.path}: piece {start}..{end} does not follow "
                                 f"{self.published}")
        if end <= start:
            return
        self.store.put_file_range(f"{self.folder}/{piece_name(start, end)}", self.path,
                                  start, end)
        self.pieces.append(_Piece(start, end))
        self.published = end
        self._merge_full_generations()

    def _merge_full_generations(self) -> None:
        while len(self.pieces) >= FANOUT:
            tail = self.pieces[-FANOUT:]
            level = tail[0].level
            if any(p.level != level for p in tail) or \
                    tail[-1].end - tail[0].start > FINAL_PIECE_BYTES:
                return
            self._merge(len(self.pieces) - FANOUT, level + 1)

    def consolidate(self) -> None:
        """Merge the trailing small pieces into one (a file that will not grow any more)."""
        first = len(self.pieces)
        while first > 0 and self.pieces[-1].end - self.pieces[first - 1].start \
                <= FINAL_PIECE_BYTES:
            first -= 1
        if len(self.pieces) - first >= 2:
            self._merge(first, max(p.level for p in self.pieces[first:]) + 1)

    def _merge(self, first: int, level: int) -> None:
        old = self.pieces[first:]
        merged = _Piece(old[0].start, old[-1].end, level)
        # The merged piece is whole in the store before any piece it replaces is deleted.
        self.store.put_file_range(f"{self.folder}/{piece_name(merged.start, merged.end)}",
                                  self.path, merged.start, merged.end)
        self.pieces[first:] = [merged]
        for piece in old:
            with contextlib.suppress(OSError):  # a leftover piece is harmless: readers skip it
                self.store.delete(f"{self.folder}/{piece_name(piece.start, piece.end)}")


@dataclass
class _SegmentState:
    log: PieceLog
    crc: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    sealed: bool = False
    removed: bool = False


class ShardPublisher:
    """Stages one shard on local scratch and publishes it to ``<store>/shards/<shard_id>/``.

    Owned by the shard's writer (one thread). :meth:`publish` is called after every group
    commit and raises :class:`~disco_data_logger.errors.StorageError` when the store cannot
    be reached: what was not published stays queued and goes out with the next call.
    """

    def __init__(self, store: ObjectStore, shard_id: str,
                 scratch: str | os.PathLike[str] | None = None) -> None:
        self.store = store
        self.shard_id = shard_id
        self.rel = f"{SHARDS_DIR}/{shard_id}"
        if store.list(self.rel):
            raise FileExistsError(
                f"{store.display(self.rel)} already exists: every ShardWriter needs its own "
                "shard id (leave shard_id=None for a fresh one)")
        root = Path(scratch) if scratch is not None else store.options.scratch_dir()
        self.scratch_root = root / store.cache_key
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        self._sweep_dead()
        self.local_dir = self.scratch_root / shard_id
        self._lock_path = self.scratch_root / f"{shard_id}{LOCK_SUFFIX}"
        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.local_dir.mkdir()
        self.journal = PieceLog(store, f"{self.rel}/{STORE_JOURNAL_DIR}",
                                self.local_dir / JOURNAL_NAME)
        self.segments: dict[int, _SegmentState] = {}
        self._pending: list[list[int]] = []

    # -- scratch -------------------------------------------------------------------------------

    def _sweep_dead(self) -> None:
        """Remove the scratch of this experiment's workers that died on this node: whatever it
        held was never reported committed (a dead worker's lock file is free to take)."""
        try:
            entries = list(os.scandir(self.scratch_root))
        except OSError:
            return
        for entry in entries:
            if not entry.name.endswith(LOCK_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                fd = os.open(entry.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live worker
                stale = self.scratch_root / entry.name[:-len(LOCK_SUFFIX)]
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            finally:
                os.close(fd)

    def _segment(self, number: int) -> _SegmentState:
        state = self.segments.get(number)
        if state is None:
            name = segment_file_name(number)
            state = _SegmentState(PieceLog(self.store,
                                           f"{self.rel}/{STORE_SEGMENTS_DIR}/{number:05d}",
                                           self.local_dir / name))
            self.segments[number] = state
        return state

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, sync: Sequence[Sequence[int]], journal_end: int) -> None:
        """Publish a group: its data ranges (``sync``), then the journal up to
        ``journal_end``; then drop the staged segments that are sealed and published."""
        self._pending.extend([list(r) for r in sync])
        self.publish_data([])
        self.journal.add(self.journal.published, journal_end)
        self._drop_published()

    def publish_data(self, ranges: Sequence[Sequence[int]]) -> None:
        """Publish the queued data ranges plus ``ranges`` (checked against their crc32)."""
        self._pending.extend([list(r) for r in ranges])
        while self._pending:
            number, start, end, crc = self._pending[0]
            state = self._segment(number)
            log = state.log
            if end > log.published:
                begin = max(start, log.published)
                got, running, sha = _hash_range(log.path, begin, end, state)
                if begin == start and got != crc:
                    raise OSError(f"{log.path}: staged bytes {start}..{end} changed before "
                                  f"they were published (crc32 {got:#010x}, the commit "
                                  f"recorded {crc:#010x}); not published")
                log.add(begin, end)
                state.crc, state.sha = running, sha
            self._pending.pop(0)
        # A segment below the newest one is sealed: the writer closed it before opening the next.
        if self.segments:
            newest = max(self.segments)
            for number, state in self.segments.items():
                if number < newest:
                    state.sealed = True

    def _drop_published(self) -> None:
        for state in self.segments.values():
            if state.sealed and not state.removed:
                with contextlib.suppress(FileNotFoundError):
                    state.log.path.unlink()
                state.removed = True

    def segments_summary(self) -> list[dict[str, Any]]:
        """Name, bytes, crc32 and sha256 of every segment published (the journal's close line)."""
        return [{"name": segment_file_name(n), "bytes": s.log.published, "crc32": s.crc,
                 "sha256": s.sha.hexdigest()} for n, s in sorted(self.segments.items())]

    def finish(self, journal_end: int, *, done: bool) -> None:
        """The shard closed: publish the rest of the journal (its close line), merge its small
        pieces into one (every reader reads a journal whole), write ``_DONE`` when the shard
        closed cleanly, and remove the scratch. Segment pieces stay as they are: merging them
        would upload their bytes again, and their number is bounded already."""
        for state in self.segments.values():
            state.sealed = True
        self._drop_published()
        self.journal.add(self.journal.published, journal_end)
        self.journal.consolidate()
        if done:
            self.store.put(f"{self.rel}/{DONE_MARKER}", b"")
        self.discard()

    def discard(self) -> None:
        """Remove the scratch directory and release its lock (nothing more will be published)."""
        shutil.rmtree(self.local_dir, ignore_errors=True)
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)
            os.close(self._lock_fd)
            self._lock_fd = -1
        with contextlib.suppress(OSError):
            self.scratch_root.rmdir()  # only when no other worker of the experiment uses it

    def release(self) -> None:
        """Release the scratch lock but keep the files (publishing failed: a later worker on
        this node sweeps them)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _hash_range(path: Path, start: int, end: int, state: _SegmentState) -> tuple[int, int, Any]:
    """crc32 of bytes ``start..end`` of ``path``, and the segment's running crc32 and sha256
    with them added (the state itself is updated only once the bytes are published)."""
    crc = 0
    sha = state.sha.copy()
    running = state.crc
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start
        while left > 0:
            buf = fh.read(min(left, 1 << 20))
            if not buf:
                raise OSError(f"{path}: ends before byte {end}; the staged segment was cut")
            crc = zlib.crc32(buf, crc)
            running = zlib.crc32(buf, running)
            sha.update(buf)
            left -= len(buf)
    return crc, running, sha
