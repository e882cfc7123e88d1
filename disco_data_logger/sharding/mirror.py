"""Reading an experiment in object storage: a local mirror of exactly what a command needs.

An experiment at ``s3://bucket/prefix`` holds the same things as one on a disk, with each shard's
journal and segments cut into immutable pieces (:mod:`.publish`)::

    experiment.json, index/state.json, index/replications.parquet, index/parts/streams-*.parquet
    shards/<id>/journal/<start>-<end>                 bytes start..end of the journal
    shards/<id>/segments/<NNNNN>/<start>-<end>        bytes start..end of segment NNNNN
    shards/<id>/_DONE                                  the shard closed cleanly

Every command works on a URI through :class:`StoreMirror`: one listing tells which objects
exist; the index files are fetched when they changed; a shard's journal and segments are
reassembled, piece by piece with ranged reads of only the bytes not fetched before, into a
local folder (``<cache>/experiments/<location>/shards/<id>/``) that the existing readers, the
native decoder included, read as they read a shard on a disk. So a merge fetches only the
journal bytes and segment bytes it has not seen (to check the new commits' ``sync`` ranges,
as on a disk), ``inspect`` after a merge fetches only the index, and a query fetches only the
shards holding the streams it selected. What a merge writes goes back to the store in the
order that keeps the index consistent at every moment: new parts, the replications table,
``index/state.json`` (the commit point), ``experiment.json``, then the parts no state lists.

The index describes store shards by what the store holds (journal and segment sizes, no inode
or modification time of a local copy), so any machine that merges finds it up to date. The
mirror is a cache: a segment file in it can be dropped at any time and is fetched again when
needed (the least recently used shards go when it holds more than ``storage.cache_bytes``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotAnExperimentError
from ..layout import DONE_MARKER
from .layout import (
    EXPERIMENT_JSON,
    INDEX_DIR,
    INDEX_PARTS_DIR,
    INDEX_STATE,
    JOURNAL_NAME,
    LEGACY_STREAMS_INDEX,
    PIECE_NAME_RE,
    REPLICATIONS_INDEX,
    SHARD_ID_RE,
    SHARDS_DIR,
    STATE_FORMAT,
    STORE_JOURNAL_DIR,
    STORE_SEGMENTS_DIR,
)
from .storage import ObjectStore, StorageOptions

__all__ = ["StoreMirror", "StoreShard", "cover", "parse_listing"]

_LOCK_FILE_RE = re.compile(r"^run(\.part-[0-9]+-of-[0-9]+)?\.lock$")
_SEGMENT_DIR_RE = re.compile(r"^[0-9]{5}$")
_SYNCED = ".synced.json"
_PART_NAME_RE = re.compile(r"^streams-[A-Za-z0-9-]+\.parquet$")


@dataclass
class Piece:
    start: int
    end: int
    rel: str


def cover(pieces: Sequence[Piece]) -> tuple[list[Piece], int, int]:
    """The pieces that make a file from byte 0 on, the longest at each offset (a merged piece
    and the pieces it replaces may both exist for a moment), and where the cover ends.

    Returns ``(pieces, end, furthest)``: ``end`` is where the contiguous bytes stop,
    ``furthest`` the end of the furthest piece (more than ``end``: a piece is missing).
    """
    by_start: dict[int, Piece] = {}
    for p in pieces:
        if p.end > p.start and (p.start not in by_start or p.end > by_start[p.start].end):
            by_start[p.start] = p
    chosen: list[Piece] = []
    pos = 0
    while pos in by_start:
        p = by_start[pos]
        chosen.append(p)
        pos = p.end
    furthest = max((p.end for p in pieces), default=0)
    return chosen, pos, furthest


@dataclass
class StoreShard:
    """What the store holds of one shard."""

    name: str
    journal: list[Piece] = field(default_factory=list)
    segments: dict[int, list[Piece]] = field(default_factory=dict)
    done: bool = False
    stray: list[str] = field(default_factory=list)

    @property
    def journal_end(self) -> int:
        return cover(self.journal)[1]

    def segment_ends(self) -> dict[int, int]:
        return {n: cover(p)[1] for n, p in sorted(self.segments.items())}

    def gaps(self) -> list[str]:
        """Files whose pieces do not join up (a piece missing in the middle)."""
        out = []
        for what, pieces in [(JOURNAL_NAME, self.journal),
                             *((f"{n:05d}.seg.zst", p) for n, p in self.segments.items())]:
            _chosen, end, furthest = cover(pieces)
            if furthest > end:
                out.append(f"{what}: the pieces stop at byte {end}, but pieces up to byte "
                           f"{furthest} exist (a piece is missing)")
        return out


def parse_listing(names: Mapping[str, Any]) -> tuple[dict[str, StoreShard], list[str]]:
    """The shards a listing of an experiment holds, and the names under ``shards/`` that are
    not part of the layout (stray objects)."""
    shards: dict[str, StoreShard] = {}
    stray: list[str] = []
    prefix = SHARDS_DIR + "/"
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split("/")
        shard = shards.setdefault(parts[0], StoreShard(parts[0]))
        rest = parts[1:]
        if len(rest) == 2 and rest[0] == STORE_JOURNAL_DIR:
            match = PIECE_NAME_RE.match(rest[1])
            if match:
                shard.journal.append(Piece(int(match.group(1)), int(match.group(2)), name))
                continue
        elif len(rest) == 3 and rest[0] == STORE_SEGMENTS_DIR and _SEGMENT_DIR_RE.match(rest[1]):
            match = PIECE_NAME_RE.match(rest[2])
            if match:
                shard.segments.setdefault(int(rest[1]), []).append(
                    Piece(int(match.group(1)), int(match.group(2)), name))
                continue
        elif rest == [DONE_MARKER]:
            shard.done = True
            continue
        shard.stray.append(name)
        stray.append(name)
    return shards, stray


class StoreMirror:
    """One experiment in object storage and its local mirror (see the module docstring)."""

    def __init__(self, uri: str, options: StorageOptions | Mapping[str, Any] | None = None, *,
                 store: ObjectStore | None = None) -> None:
        self.store = store if store is not None else ObjectStore(uri, options)
        self.uri = self.store.uri
        self.options = self.store.options
        self.root = self.options.cache_dir() / "experiments" / self.store.cache_key
        (self.root / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        self.listing: dict[str, tuple[int, int]] = {}
        self.shards: dict[str, StoreShard] = {}
        self.stray: list[str] = []
        self._lock_depth = 0
        self._lock_fd = -1

    # -- the listing and the local lock ---------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the mirror's lock: two commands of this machine never fill it at once."""
        if self._lock_depth == 0:
            fd = os.open(self.root / ".mirror.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def refresh(self) -> None:
        """List the experiment's objects (one paginated listing)."""
        self.listing = self.store.list_detailed("")
        self.shards, self.stray = parse_listing(self.listing)

    def display(self, text: str) -> str:
        """``text`` with the mirror's paths written as the store's URIs."""
        return text.replace(str(self.root), self.uri)

    @contextlib.contextmanager
    def uris_in_warnings(self) -> Iterator[None]:
        """Warnings raised inside name the store's objects, not the mirror's files."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    message = w.message
                    if isinstance(message, Warning) and str(self.root) in str(message):
                        message = type(message)(self.display(str(message)))
                    warnings.warn_explicit(message, w.category, w.filename, w.lineno)

    # -- is it an experiment --------------------------------------------------------------------

    def check_experiment(self) -> None:
        """Refuse a location that holds no experiment (nothing is written to it)."""
        marks = bool(self.shards)
        if not marks and any(_LOCK_FILE_RE.match(n) for n in self.listing if "/" not in n):
            marks = True
        for rel in (EXPERIMENT_JSON, f"{INDEX_DIR}/{INDEX_STATE}"):
            if marks or rel not in self.listing:
                continue
            try:
                doc = json.loads(self.store.get(rel))
            except (ValueError, FileNotFoundError):
                continue
            if isinstance(doc, dict) and (str(doc.get("format", "")).startswith(
                    "disco-experiment-index/") or doc.get("format") == STATE_FORMAT):
                marks = True
        if not marks:
            raise NotAnExperimentError(
                f"{self.uri}: not an experiment (no {SHARDS_DIR}/, no {EXPERIMENT_JSON} and no "
                f"{INDEX_DIR}/{INDEX_STATE} of disco-data-logger there); nothing was written")

    def foreign_index(self) -> list[str]:
        """``experiment.json`` or ``index/`` objects of another program (a run would replace
        them), when nothing else marks the location as an experiment."""
        try:
            self.check_experiment()
            return []
        except NotAnExperimentError:
            pass
        return [n for n in (EXPERIMENT_JSON, INDEX_DIR)
                if n in self.listing or any(k.startswith(n + "/") for k in self.listing)]

    # -- the index files ------------------------------------------------------------------------

    def _synced(self) -> dict[str, list[int]]:
        try:
            doc = json.loads((self.root / _SYNCED).read_bytes())
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def sync_index(self) -> None:
        """Bring ``experiment.json`` and ``index/`` of the mirror up to the store's."""
        synced = self._synced()
        index_dir = self.root / INDEX_DIR
        parts_dir = index_dir / INDEX_PARTS_DIR
        parts_dir.mkdir(parents=True, exist_ok=True)
        wanted = [EXPERIMENT_JSON, f"{INDEX_DIR}/{INDEX_STATE}",
                  f"{INDEX_DIR}/{REPLICATIONS_INDEX}", f"{INDEX_DIR}/{LEGACY_STREAMS_INDEX}"]
        store_parts = {n.rsplit("/", 1)[1] for n in self.listing
                       if n.startswith(f"{INDEX_DIR}/{INDEX_PARTS_DIR}/")
                       and n.count("/") == 2 and _PART_NAME_RE.match(n.rsplit("/", 1)[1])}
        for name in os.listdir(parts_dir):
            if name not in store_parts:
                with contextlib.suppress(OSError):
                    os.unlink(parts_dir / name)
        wanted += sorted(f"{INDEX_DIR}/{INDEX_PARTS_DIR}/{n}" for n in store_parts)
        for rel in wanted:
            local = self.root / rel
            meta = self.listing.get(rel)
            if meta is None:
                with contextlib.suppress(FileNotFoundError):
                    local.unlink()
                synced.pop(rel, None)
                continue
            if synced.get(rel) == list(meta) and local.is_file() \
                    and local.stat().st_size == meta[0]:
                continue
            try:
                data = self.store.get(rel)
            except FileNotFoundError:
                continue  # removed since the listing: the next command sees it gone
            _write_local(local, data)
            synced[rel] = list(meta)
        _write_local(self.root / _SYNCED, json.dumps(synced).encode())

    def index_stats(self) -> dict[str, tuple[int, int, int]]:
        out = {}
        for rel in (EXPERIMENT_JSON, f"{INDEX_DIR}/{INDEX_STATE}",
                    f"{INDEX_DIR}/{REPLICATIONS_INDEX}", f"{INDEX_DIR}/{LEGACY_STREAMS_INDEX}"):
            try:
                st = os.stat(self.root / rel)
                out[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
            except OSError:
                pass
        return out

    def write_back(self, before: Mapping[str, tuple[int, int, int]]) -> None:
        """Upload what a merge wrote into the mirror, parts first and ``state.json`` last but
        one (the commit point), then drop the store's parts the new state does not list."""
        try:
            state = json.loads((self.root / INDEX_DIR / INDEX_STATE).read_bytes())
        except (OSError, ValueError):
            return
        after = self.index_stats()
        if after.get(f"{INDEX_DIR}/{INDEX_STATE}") == before.get(f"{INDEX_DIR}/{INDEX_STATE}"):
            return  # the merge found nothing new and wrote nothing
        keep = [p["name"] for p in state.get("parts", []) if isinstance(p, dict)]
        prefix = f"{INDEX_DIR}/{INDEX_PARTS_DIR}/"
        on_store = {n[len(prefix):] for n in self.listing if n.startswith(prefix)}
        synced = self._synced()
        uploaded: list[str] = []
        for name in keep:
            if name not in on_store:
                uploaded.append(prefix + name)
        for rel in (f"{INDEX_DIR}/{REPLICATIONS_INDEX}",):
            if after.get(rel) != before.get(rel) and rel in after:
                uploaded.append(rel)
        uploaded.append(f"{INDEX_DIR}/{INDEX_STATE}")
        if EXPERIMENT_JSON in after and after.get(EXPERIMENT_JSON) != before.get(EXPERIMENT_JSON):
            uploaded.append(EXPERIMENT_JSON)
        for rel in uploaded:
            self.store.put_file_range(rel, self.root / rel, 0, (self.root / rel).stat().st_size)
        for name in sorted(on_store - set(keep)):
            self.store.delete(prefix + name)
        legacy = f"{INDEX_DIR}/{LEGACY_STREAMS_INDEX}"
        if legacy in self.listing and legacy not in after:
            self.store.delete(legacy)
        # What is on the store now is what the mirror holds: no need to fetch it back.
        fresh = self.store.list_detailed(INDEX_DIR)
        if EXPERIMENT_JSON in uploaded:
            st = self.store.stat(EXPERIMENT_JSON)
            if st is not None:
                fresh[EXPERIMENT_JSON] = st
        for rel in uploaded:
            if rel in fresh:
                synced[rel] = list(fresh[rel])
        _write_local(self.root / _SYNCED, json.dumps(synced).encode())

    # -- shards ---------------------------------------------------------------------------------

    def shard_dir(self, name: str) -> Path:
        return self.root / SHARDS_DIR / name

    def sync_shard(self, name: str, *, segments: bool = True) -> None:
        """Reassemble the shard's journal (and segments) in the mirror from the store's pieces,
        fetching only bytes the mirror does not have. A piece deleted meanwhile (merged into a
        bigger one by its writer) makes it list the shard again and go on."""
        for attempt in range(3):
            try:
                self._sync_shard(name, segments)
                self._touch(name)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise
                listing = self.store.list_detailed(f"{SHARDS_DIR}/{name}")
                self.listing = {**{k: v for k, v in self.listing.items()
                                   if not k.startswith(f"{SHARDS_DIR}/{name}/")}, **listing}
                self.shards, self.stray = parse_listing(self.listing)

    def _sync_shard(self, name: str, segments: bool) -> None:
        if not SHARD_ID_RE.match(name):
            raise ValueError(f"{name!r} is not a shard id")  # never a path out of the mirror
        shard = self.shards.get(name)
        local = self.shard_dir(name)
        local.mkdir(parents=True, exist_ok=True)
        if shard is None:
            return
        self._sync_file(local / JOURNAL_NAME, shard.journal)
        if segments:
            for number, pieces in sorted(shard.segments.items()):
                self._sync_file(local / f"{number:05d}.seg.zst", pieces)

    def _sync_file(self, path: Path, pieces: Sequence[Piece]) -> None:
        chosen, end, _furthest = cover(pieces)
        try:
            have = path.stat().st_size
        except FileNotFoundError:
            have = 0
        if have > end:
            path.unlink()  # longer than the store's: not a copy of it (the cache is rebuilt)
            have = 0
        if have == end:
            return
        with open(path, "ab") as fh:
            for piece in chosen:
                if piece.end <= have:
                    continue
                start = max(piece.start, have)
                self.store.copy_range_to(piece.rel, start - piece.start, piece.end - piece.start,
                                         fh)
                have = piece.end
            fh.flush()

    def _touch(self, name: str) -> None:
        marker = self.shard_dir(name) / ".used"
        with contextlib.suppress(OSError):
            marker.touch()

    def forget_gone_shards(self) -> None:
        """Drop mirror folders of shards the store no longer holds."""
        for entry in os.scandir(self.root / SHARDS_DIR):
            if entry.name not in self.shards and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)

    def evict(self) -> None:
        """Drop the segment copies of the least recently used shards beyond the cache size."""
        limit = self.options.cache_bytes
        usage: list[tuple[float, int, Path]] = []
        total = 0
        for entry in os.scandir(self.root / SHARDS_DIR):
            if not entry.is_dir(follow_symlinks=False):
                continue
            folder = Path(entry.path)
            size = sum(p.stat().st_size for p in folder.glob("*.seg.zst"))
            try:
                used = (folder / ".used").stat().st_mtime
            except OSError:
                used = 0.0
            usage.append((used, size, folder))
            total += size
        for _used, size, folder in sorted(usage):
            if total <= limit:
                break
            for seg in folder.glob("*.seg.zst"):
                with contextlib.suppress(OSError):
                    seg.unlink()
            total -= size

    def fingerprints(self) -> set[str]:
        """The config fingerprints the shards' journal headers name (first piece, first frame)."""
        from .manifest import JournalReader

        found: set[str] = set()
        for name, shard in sorted(self.shards.items()):
            chosen, _end, _furthest = cover(shard.journal)
            if not chosen or not SHARD_ID_RE.match(name):
                continue
            head = self.store.get_range(chosen[0].rel, 0, min(chosen[0].end, 1 << 16))
            reader = JournalReader(Path(name), data=head)
            for _batch in reader.chunks(None):
                break
            fingerprint = (reader.header or {}).get("fingerprint")
            if isinstance(fingerprint, str):
                found.add(fingerprint)
        return found



def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
