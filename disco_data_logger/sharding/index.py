"""The experiment index: the shard journals of an output directory merged into one view.

:func:`merge` reads ``<output>/shards/*/`` journals (format 2; the manifests of format-1 shards
too), keeps the first commit of every task id (a task re-run after a lost acknowledgement is
never counted twice) and writes

``index/parts/streams-NNNNNN.parquet``
    one row per committed stream: shard, local stream id, task, point, replication, scales,
    record count, epoch range, then one column per label (:mod:`disco_data_logger.labels`);
    one part per merge that found new commits, compacted into one when there are more than
    :data:`MAX_PARTS`;
``index/replications.parquet``
    one row per replication: status (committed, failed, pending), attempts, shard, timing,
    error and traceback;
``index/state.json``
    what the index holds: the parts, how far each shard's journal was read, the signatures of
    the segments it verified; written last, it is the merge's commit point;
``experiment.json``
    the config snapshot and overrides (when the coordinator ran it), the plan, versions, host,
    git commit, runs, shards and totals (no list of replications: that is
    ``index/replications.parquet``).

Merging is **incremental**: a shard whose journal and segments did not change since the last
merge is not read again, and a shard that only grew is read from where the last merge stopped.
Commits are verified as they are merged: the segment bytes each group commit depends on (its
``sync`` ranges) must be present with their crc32, else the commits are **lost**, reported by
name and left out (so that ``run`` runs them again). A shard that shrank, was replaced or
vanished makes the merge start over from the journals. A damaged journal frame, a malformed
line or an unreadable file costs a warning naming it (:class:`CorruptDataWarning`), never the
rest of the experiment; a stray file in ``shards/`` is ignored with a warning.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import secrets
import socket
import sys
import time
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import labels as label_rule
from .._version import __version__
from ..errors import CorruptDataWarning, NotAnExperimentError
from ..layout import DONE_MARKER, SEGMENT_NAME_RE
from .layout import (
    EXPERIMENT_JSON,
    INDEX_DIR,
    INDEX_FORMAT,
    INDEX_FORMAT_V1,
    INDEX_PARTS_DIR,
    INDEX_STATE,
    JOURNAL_NAME,
    JOURNAL_V1_NAME,
    LEGACY_STREAMS_INDEX,
    MANIFEST_NAME,
    METRICS_DIR,
    REPLICATIONS_INDEX,
    SHARD_ID_RE,
    SHARDS_DIR,
    STATE_FORMAT,
)
from .lock import merge_turn, process_gone
from .manifest import (
    CommitBatch,
    JournalReader,
    atomic_write_bytes,
    atomic_write_json,
    fsync_directory,
    read_v1,
    segment_files,
)
from .planning import (
    first_per_point,
    in_plan,
    planned_counts,
    planned_table,
    stored_per_point,
)
from .records import ExperimentState, RunRecord, RunState
from .records import ReplicationStatus as Status
from .storage import is_uri

__all__ = [
    "ExperimentIndex",
    "merge",
    "check_experiment",
    "check_run_output",
    "read_experiment_json",
    "INDEX_DIR",
    "EXPERIMENT_JSON",
    "STREAM_COLUMNS",
    "REPLICATION_COLUMNS",
    "MAX_PARTS",
]

MAX_PARTS = 8
"""Streams parts an index may hold before a merge compacts them into one."""

PART_ROWS = 250_000
"""Streams a merge writes into one part before it starts the next (bounds its memory)."""

CHUNK_COMMITS = 4_000
"""Commits turned into Arrow columns at a time."""

MAX_PROBLEMS = 10
"""Problems of one shard the index keeps (and repeats as warnings while they last)."""

STREAM_COLUMNS: dict[str, pa.DataType] = {
    "shard_id": pa.string(),
    "stream_id": pa.uint32(),
    "task_id": pa.string(),
    "point_id": pa.string(),
    "point_index": pa.int64(),
    "replication": pa.int64(),
    "attempt": pa.int64(),
    "epoch_scale": pa.float64(),
    "value_scale": pa.float64(),
    "periodicity": pa.float64(),
    "kind": pa.string(),
    "records": pa.int64(),
    "min_epoch": pa.float64(),
    "max_epoch": pa.float64(),
}
"""The fixed columns of the streams index; label columns follow them."""

REPLICATION_COLUMNS: dict[str, pa.DataType] = {
    "task_id": pa.string(),
    "point_id": pa.string(),
    "point_index": pa.int64(),
    "replication": pa.int64(),
    "status": pa.string(),
    "attempts": pa.int64(),
    "shard_id": pa.string(),
    "streams": pa.int64(),
    "records": pa.int64(),
    "started": pa.float64(),
    "finished": pa.float64(),
    "seconds": pa.float64(),
    "error": pa.string(),
    "traceback": pa.string(),
}


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _warn(message: str) -> None:
    warnings.warn(message, CorruptDataWarning, stacklevel=3)


# ------------------------------------------------------------------------ what is an experiment


def _read_json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None), or (None, why) when the file is unreadable; (None, None) when absent."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, exc.strerror or str(exc)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    return doc, None


def read_experiment_json(output_dir: str | os.PathLike[str], *,
                         warn: bool = True) -> dict[str, Any] | None:
    """``experiment.json`` as a dict; None (with a warning naming it) when it is unreadable."""
    path = Path(output_dir) / EXPERIMENT_JSON
    doc, why = _read_json_object(path)
    if why is not None and warn:
        _warn(f"{path}: unreadable ({why}); ignored (`disco-data-logger merge` rebuilds it)")
    if doc is not None and not str(doc.get("format", "")).startswith("disco-experiment-index/"):
        if warn:
            _warn(f"{path}: not an experiment file of disco-data-logger; ignored")
        return None
    if doc is not None:
        bad = _drop_mistyped(doc)
        if bad and warn:
            _warn(f"{path}: {', '.join(bad)} of the wrong type; ignored (`disco-data-logger "
                  "merge` rebuilds them from the journals)")
    return doc


_EXPERIMENT_KEY_TYPES: dict[str, type] = {
    "output": str, "experiment": dict, "fingerprint": str, "config": dict, "overrides": list,
    "config_path": str, "git_commit": str, "plan": dict, "created": str, "updated": str,
    "state": str, "runs": list, "totals": dict, "shards": list, "versions": dict,
}
"""What each top-level key of ``experiment.json`` holds when present."""

_EXPERIMENT_NULLABLE = frozenset({"experiment", "fingerprint", "config", "config_path",
                                  "git_commit", "plan"})


def _drop_mistyped(doc: dict[str, Any]) -> list[str]:
    """Remove the keys of a damaged ``experiment.json`` that hold the wrong kind of value, and
    the entries of ``runs`` and ``shards`` that are not objects; return what was dropped. Every
    one of them is rebuilt by the next merge (the journals are the source of truth)."""
    dropped = []
    for key, kind in _EXPERIMENT_KEY_TYPES.items():
        if key not in doc:
            continue
        value = doc[key]
        if value is None and key in _EXPERIMENT_NULLABLE:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            del doc[key]
            dropped.append(repr(key))
    plan = doc.get("plan")
    if isinstance(plan, dict) and not all(
            isinstance(plan.get(k), int) and not isinstance(plan.get(k), bool)
            and 0 <= plan[k] <= 1 << 40 for k in ("points", "replications")):
        del doc["plan"]
        dropped.append("'plan' (its points and replications are not counts)")
    for key in ("runs", "shards"):
        items = doc.get(key)
        if isinstance(items, list) and not all(isinstance(x, dict) for x in items):
            doc[key] = [x for x in items if isinstance(x, dict)]
            dropped.append(f"entries of {key!r}")
    return dropped


def check_experiment(path: str | os.PathLike[str], *, writing: bool = False) -> Path:
    """Refuse a directory that is not an experiment, before anything reads or writes it.

    An experiment has a ``shards/`` folder, or the ``experiment.json`` or ``index/state.json``
    of one. With ``writing``, an ``index`` or ``experiment.json`` that is a symbolic link is
    refused too: the index is never written through a link.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotAnExperimentError(f"{root}: no such experiment directory")
    shards = root / SHARDS_DIR
    index = root / INDEX_DIR
    marks = []
    if shards.is_dir() and not shards.is_symlink():
        marks.append(SHARDS_DIR)
    doc, _why = _read_json_object(root / EXPERIMENT_JSON)
    if doc is not None and str(doc.get("format", "")).startswith("disco-experiment-index/"):
        marks.append(EXPERIMENT_JSON)
    state, _why = _read_json_object(index / INDEX_STATE)
    if state is not None and state.get("format") == STATE_FORMAT:
        marks.append(f"{INDEX_DIR}/{INDEX_STATE}")
    if not marks:
        raise NotAnExperimentError(
            f"{root}: not an experiment directory (no {SHARDS_DIR}/ folder, no "
            f"{EXPERIMENT_JSON} and no {INDEX_DIR}/{INDEX_STATE} of disco-data-logger); "
            "nothing was written")
    if writing:
        # Everything the merge writes into, at every level: a link anywhere on the way would
        # take the write outside the experiment.
        for name in (INDEX_DIR, EXPERIMENT_JSON, SHARDS_DIR, f"{INDEX_DIR}/{INDEX_PARTS_DIR}",
                     f"{INDEX_DIR}/{INDEX_STATE}", f"{INDEX_DIR}/{REPLICATIONS_INDEX}",
                     f"{INDEX_DIR}/{METRICS_DIR}"):
            if (root / name).is_symlink():
                raise NotAnExperimentError(
                    f"{root / name} is a symbolic link; an experiment's index is never written "
                    "through a link (replace it with a real folder or file)")
    return root


def check_run_output(path: str | os.PathLike[str]) -> None:
    """Refuse to run into a directory whose ``experiment.json`` or ``index/`` another program
    wrote (a run would replace them); an empty, new or experiment directory is fine."""
    root = Path(path)
    if not root.is_dir():
        return
    try:
        check_experiment(root)
        return  # an experiment (of any state): the run resumes or refuses by fingerprint
    except NotAnExperimentError:
        pass
    foreign = [name for name in (EXPERIMENT_JSON, INDEX_DIR) if os.path.lexists(root / name)]
    if foreign:
        raise NotAnExperimentError(
            f"{root}: holds {' and '.join(foreign)} that disco-data-logger did not write (a run "
            "would replace them); choose another output")


def environment_info() -> dict[str, Any]:
    """Versions and host, saved with every experiment so results can be traced back."""
    versions = {
        "disco_data_logger": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }
    ray = sys.modules.get("ray")
    if ray is not None:
        versions["ray"] = getattr(ray, "__version__", "?")
    return {"versions": versions, "host": socket.gethostname(), "platform": platform.platform()}


# ---------------------------------------------------------------------------------- the shards


def _stat_sig(path: Path) -> list[int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _journal_head(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return zlib.crc32(fh.read(64))
    except OSError:
        return -1


def scan_shards(output_dir: Path, *, warn: bool = True) -> list[Path]:
    """The shard folders of an experiment, in name order; anything else is skipped with a
    warning naming it (a stray file, a link, a name that is not a shard id)."""
    root = output_dir / SHARDS_DIR
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            why = "a symbolic link"
        elif not entry.is_dir():
            why = "not a folder"
        elif not SHARD_ID_RE.match(entry.name):
            why = "not a shard id"
        else:
            path = Path(entry.path)
            if (path / JOURNAL_NAME).is_file() or (path / JOURNAL_V1_NAME).is_file() \
                    or (path / MANIFEST_NAME).is_file():
                out.append(path)
                continue
            if _starting(entry) and not (path / DONE_MARKER).exists():
                continue  # a writer of a running part creates its folder before its journal
            why = "a folder without a shard journal"
        if warn:
            _warn(f"{Path(entry.path)}: {why}; ignored (not a shard)")
    return out


STARTING_SECONDS = 60.0
"""A shard folder without a journal younger than this is a writer starting, not a stray."""


def _starting(entry: os.DirEntry[str]) -> bool:
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime < STARTING_SECONDS
    except OSError:
        return False


def _segment_sigs(shard_dir: Path) -> dict[str, list[int]]:
    sigs = {}
    for _n, seg in segment_files(shard_dir):
        sig = _stat_sig(seg)
        if sig is not None:
            sigs[seg.name] = sig
    return sigs


class ShardFiles:
    """How a merge finds and reads shards: the folders under ``<output>/shards/`` (this class).

    An experiment in object storage (:mod:`.mirror`) reads them through local copies of what
    it needs and describes them by what the store holds (sizes, never local inodes), so that
    its index is the same whichever machine merges it.
    """

    def shard_dirs(self, root: Path, *, warn: bool = True) -> list[Path]:
        return scan_shards(root, warn=warn)

    def prepare(self, shard_dir: Path) -> None:
        """Make the shard's files readable at ``shard_dir`` (local shards already are)."""

    def segment_sigs(self, shard_dir: Path) -> dict[str, list[int]]:
        return _segment_sigs(shard_dir)

    def journal_sig(self, shard_dir: Path) -> list[int] | None:
        return _stat_sig(shard_dir / JOURNAL_NAME)

    def journal_head(self, shard_dir: Path) -> int:
        return _journal_head(shard_dir / JOURNAL_NAME)

    def segment_bytes(self, root: Path, shards: Iterable[str]) -> int:
        return _segment_bytes(root, shards)

    def display_root(self, root: Path) -> str:
        """The experiment as users name it (its directory, or its URI)."""
        return str(root)


LOCAL_FILES = ShardFiles()


class StoreShardFiles(ShardFiles):
    """The shards of an experiment in object storage, read through its local mirror
    (:class:`~.mirror.StoreMirror`): described by what the store holds."""

    def __init__(self, mirror: Any) -> None:
        self.mirror = mirror

    def shard_dirs(self, root: Path, *, warn: bool = True) -> list[Path]:
        out = []
        problems = []
        for name, shard in sorted(self.mirror.shards.items()):
            where = f"{self.mirror.uri}/{SHARDS_DIR}/{name}"
            if not SHARD_ID_RE.match(name):
                problems.append(f"{where}: not a shard id; ignored (not a shard)")
            elif not shard.journal:
                problems.append(f"{where}: a folder without a shard journal; ignored (not a "
                                "shard)")
            else:
                folder = self.mirror.shard_dir(name)
                folder.mkdir(parents=True, exist_ok=True)
                out.append(folder)
                for gap in shard.gaps():
                    problems.append(f"{where}/{gap}")
            if shard.stray and SHARD_ID_RE.match(name):
                problems.append(f"{self.mirror.uri}/{shard.stray[0]}: not part of a shard's "
                                f"layout ({len(shard.stray)} such object(s)); ignored")
        if warn:
            for problem in problems:
                warnings.warn(problem, CorruptDataWarning, stacklevel=3)
        return out

    def prepare(self, shard_dir: Path) -> None:
        self.mirror.sync_shard(shard_dir.name)

    def segment_sigs(self, shard_dir: Path) -> dict[str, list[int]]:
        shard = self.mirror.shards.get(shard_dir.name)
        if shard is None:
            return {}
        return {f"{n:05d}.seg.zst": [end, 0, 0] for n, end in shard.segment_ends().items()
                if end > 0}

    def journal_sig(self, shard_dir: Path) -> list[int] | None:
        shard = self.mirror.shards.get(shard_dir.name)
        if shard is None or not shard.journal:
            return None
        return [shard.journal_end, 0, 0]

    def journal_head(self, shard_dir: Path) -> int:
        return 0

    def segment_bytes(self, root: Path, shards: Iterable[str]) -> int:
        names = set(shards)
        return sum(sum(s.segment_ends().values()) for name, s in self.mirror.shards.items()
                   if name in names)

    def display_root(self, root: Path) -> str:
        return self.mirror.uri


_CLOSING_GRACE = 120.0
"""Seconds after ``_DONE`` during which a writer of another host may still be closing."""


def _writer_may_be_closing(head: Mapping[str, Any], done: Path) -> bool:
    """Whether the writer of a shard with ``_DONE`` but no close record may still be writing
    that record (it writes ``_DONE`` first): its process lives on this host, or, for another
    host, ``_DONE`` is younger than :data:`_CLOSING_GRACE`. A merge running beside live
    writers must not call their last step damage."""
    host, pid = head.get("host"), head.get("pid")
    if not isinstance(host, str) or not host:
        return False  # no journal header to say whose shard it is: nothing to wait for
    if host == socket.gethostname() and isinstance(pid, int) and pid > 0:
        return not process_gone(host, pid)
    try:
        return time.time() - done.stat().st_mtime < _CLOSING_GRACE
    except OSError:
        return False


def _merge_store(uri: str, storage: Any, run: Mapping[str, Any] | None, *,
                 write: bool) -> ExperimentIndex:
    """``merge`` (``write``) or :meth:`ExperimentIndex.build` of an experiment in object storage:
    the same merge, on the local mirror (:mod:`.mirror`), its writes sent back to the store."""
    from .mirror import StoreMirror

    mirror = StoreMirror(uri, storage)
    with mirror.locked(), mirror.uris_in_warnings():
        mirror.refresh()
        mirror.check_experiment()
        mirror.forget_gone_shards()
        mirror.sync_index()
        before = mirror.index_stats()
        index = _Merge(mirror.root, run, write=write, files=StoreShardFiles(mirror)).run()
        if write:
            mirror.write_back(before)
        mirror.evict()
    index.location = mirror.uri
    index.mirror = mirror
    return index


def _classify(shard_dir: Path, st: Mapping[str, Any], files: ShardFiles = LOCAL_FILES) -> str:
    """``same``, ``grew`` (format 2: read on from the last offset) or ``changed``."""
    segs = files.segment_sigs(shard_dir)
    if st.get("version") == 1:
        same = (_stat_sig(shard_dir / JOURNAL_V1_NAME) == st.get("journal")
                and _stat_sig(shard_dir / MANIFEST_NAME) == st.get("manifest")
                and segs == st.get("segments"))
        return "same" if same else "changed"
    sig = files.journal_sig(shard_dir)
    recorded = st.get("journal") or []
    if sig is None or len(recorded) != 4 or sig[2] != recorded[2] \
            or files.journal_head(shard_dir) != recorded[3] or sig[0] < recorded[0]:
        return "changed"
    old = st.get("segments") or {}
    covered = st.get("covered") or {}
    for name, end in covered.items():
        now = segs.get(name)
        if now is None or now[0] < end or (name in old and now[2] != old[name][2]):
            return "changed"  # bytes a commit depends on are gone
    if sig[0] == recorded[0] and segs == old:
        return "same"
    if st.get("closed") and segs != old:
        return "changed"  # a closed shard never changes: check all of it again
    return "grew"


@dataclass
class ShardScan:
    """The first pass over one shard: which commits are new, when they finished, which are lost.

    The second pass (:func:`_shard_chunks`) reads the same bytes again for the streams, so a
    merge never holds more than one chunk of a shard's commits in memory.
    """

    path: Path
    version: int
    start: int
    stop: int
    task_id: pa.Array
    finished: np.ndarray
    lost: np.ndarray
    failures: list[dict[str, Any]]
    state: dict[str, Any]
    problems: list[str] = field(default_factory=list)


def verify_groups(shard_dir: Path, groups: Sequence[Sequence[Sequence[int]]],
                   display: str) -> tuple[np.ndarray, list[str]]:
    """Which groups' ``sync`` ranges are intact (file present, long enough, crc32 equal)."""
    ok = np.ones(len(groups), dtype=bool)
    problems: list[str] = []
    by_segment: dict[int, list[tuple[int, int, int, int]]] = {}
    for g, ranges in enumerate(groups):
        for number, start, end, crc in ranges:
            by_segment.setdefault(number, []).append((g, start, end, crc))
    files = dict(segment_files(shard_dir))
    for number, items in sorted(by_segment.items()):
        path = files.get(number)
        bad: list[tuple[int, int]] = []
        if path is None:
            bad = [(start, end) for _g, start, end, _c in items]
            for g, *_ in items:
                ok[g] = False
        else:
            try:
                # Plain reads into one buffer, not mmap: mapped pages would count as the
                # process's memory while a whole segment is checked.
                with open(path, "rb", buffering=0) as fh:
                    size = os.fstat(fh.fileno()).st_size
                    buf = bytearray(1 << 20)
                    view = memoryview(buf)
                    for g, start, end, crc in sorted(items, key=lambda item: item[1]):
                        if end > size or _crc_of(fh, start, end, view) != crc:
                            ok[g] = False
                            bad.append((start, end))
            except OSError as exc:
                for g, *_ in items:
                    ok[g] = False
                problems.append(f"{display}/{path.name}: unreadable ({exc.strerror})")
                continue
        if bad:
            name = path.name if path is not None else f"{number:05d}.seg.zst"
            what = "missing" if path is None else \
                f"bytes {bad[0][0]}..{bad[0][1]} and {len(bad) - 1} more range(s) damaged or " \
                "cut off" if len(bad) > 1 else f"bytes {bad[0][0]}..{bad[0][1]} damaged or cut off"
            problems.append(f"{display}/{name}: {what}")
    return ok, problems


def _crc_of(fh: Any, start: int, end: int, view: memoryview) -> int | None:
    fh.seek(start)
    crc = 0
    left = end - start
    while left > 0:
        n = fh.readinto(view[:min(left, len(view))])
        if not n:
            return None
        crc = zlib.crc32(view[:n], crc)
        left -= n
    return crc


def _lost_problem(count: int, shown: Sequence[str], verify_problems: Sequence[str]) -> str:
    names = ", ".join(shown[:3]) + (", ..." if count > 3 else "")
    return (f"{'; '.join(verify_problems[:3])}: {count} committed replication(s) lost "
            f"({names}); they are left out of the index, and `disco-data-logger run` runs them "
            "again")


def _scan_shard(output_dir: Path, shard_dir: Path, st: Mapping[str, Any] | None,
                files: ShardFiles = LOCAL_FILES) -> ShardScan:
    """Pass one over what is new in a shard (everything when ``st`` is None)."""
    display = f"{files.display_root(output_dir)}/{SHARDS_DIR}/{shard_dir.name}"
    journal = shard_dir / JOURNAL_NAME
    files.prepare(shard_dir)
    segs = files.segment_sigs(shard_dir)
    if not journal.is_file():
        return _scan_v1(shard_dir, display, segs)
    prev = st or {}
    start = int((prev.get("journal") or [0])[0]) if st is not None else 0
    reader = JournalReader(shard_dir, start=start, display=f"{display}/{JOURNAL_NAME}")
    ids: list[pa.Array] = []
    finished: list[np.ndarray] = []
    lost: list[np.ndarray] = []
    failures: list[dict[str, Any]] = []
    covered = dict(prev.get("covered") or {})
    verify_problems: list[str] = []
    lost_ids: list[str] = []
    for chunk in reader.chunks(CHUNK_COMMITS):
        ok, problems = verify_groups(shard_dir, chunk.groups, display)
        verify_problems += [p for p in problems if p not in verify_problems]
        group = np.frombuffer(chunk.group, dtype=np.int64)
        chunk_lost = ~ok[group] if len(ok) else np.zeros(len(chunk), dtype=bool)
        lost_ids += [chunk.task_id[i] for i in np.flatnonzero(chunk_lost)[:3]]
        ids.append(pa.array(chunk.task_id, type=pa.string()))
        finished.append(np.frombuffer(chunk.finished, dtype=np.float64).copy())
        lost.append(chunk_lost)
        failures += chunk.failures
        for ranges in chunk.groups:
            for number, _start, end, _crc in ranges:
                name = f"{number:05d}.seg.zst"
                covered[name] = max(covered.get(name, 0), end)
    sig = files.journal_sig(shard_dir) or [0, 0, 0]
    header = reader.header
    head = {k: header.get(k) for k in ("host", "pid", "created", "fingerprint")} if header \
        else {k: prev.get(k) for k in ("host", "pid", "created", "fingerprint")}
    problems = list(reader.problems)
    claimed = (header or {}).get("shard_id")
    if claimed is not None and claimed != shard_dir.name:
        problems.append(f"{display}/{JOURNAL_NAME}: claims shard id {claimed!r}; the folder "
                        f"name {shard_dir.name!r} is used")
    lost_all = np.concatenate(lost) if lost else np.zeros(0, dtype=bool)
    if lost_all.any():
        problems.append(_lost_problem(int(lost_all.sum()), lost_ids, verify_problems))
    close = reader.close
    if close is None and (shard_dir / DONE_MARKER).is_file() \
            and not _writer_may_be_closing(head, shard_dir / DONE_MARKER):
        # The writer syncs every commit, writes _DONE, then the journal's close record. A shard
        # with _DONE and no close record was killed in that last step (nothing lost) or had its
        # journal cut (commits after the cut lost): say so, since only the second loses data.
        problems.append(f"{display}/{JOURNAL_NAME}: the shard has {DONE_MARKER} but its journal "
                        f"ends at byte {reader.end} without the close record: the worker was "
                        "killed while closing, or the journal was cut, in which case commits "
                        "after that byte are lost (they count as pending; `disco-data-logger "
                        "run` runs them again)")
    state = {
        "version": 2,
        "journal": [reader.end, sig[0], sig[2], files.journal_head(shard_dir)],
        "segments": segs,
        "covered": covered,
        "closed": bool(close and close.get("state") == "closed") or bool(prev.get("closed")),
        "state": str(close.get("state")) if close else prev.get("state", "open"),
        "error": close.get("error") if close else prev.get("error"),
        **head,
        "commits": int(prev.get("commits", 0)) + len(lost_all),
        "failures": int(prev.get("failures", 0)) + len(failures),
        "torn": reader.torn,
        "stats": reader.stats or prev.get("stats") or {},
        "lost": int(prev.get("lost", 0)) + int(lost_all.sum()),
    }
    return ShardScan(
        path=shard_dir, version=2, start=start, stop=reader.end,
        task_id=pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
        finished=np.concatenate(finished) if finished else np.zeros(0),
        lost=lost_all, failures=failures, state=state, problems=problems)


def _scan_v1(shard_dir: Path, display: str, segs: dict[str, list[int]]) -> ShardScan:
    read, doc = read_v1(shard_dir, display=display)
    problems = list(read.problems)
    lost = np.zeros(len(read.batch), dtype=bool)
    closed = bool(doc.get("closed")) if doc is not None else False
    if doc is not None and closed:
        missing: list[str] = []
        for entry in doc.get("segments", []) or []:
            listed = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(listed, str) or not SEGMENT_NAME_RE.match(listed):
                problems.append(f"{display}/{MANIFEST_NAME}: segment entry {listed!r} is not a "
                                "segment file name; ignored")
                continue
            if listed not in segs or segs[listed][0] != entry.get("bytes"):
                missing.append(listed)
        if missing and len(lost):
            lost[:] = True
            problems.append(_lost_problem(
                len(lost), read.batch.task_id, [f"{display}/{missing[0]}: missing or not the "
                                                "size its manifest recorded"]))
    header = read.header or {}
    state = {
        "version": 1,
        "journal": _stat_sig(shard_dir / JOURNAL_V1_NAME),
        "manifest": _stat_sig(shard_dir / MANIFEST_NAME),
        "segments": segs,
        "closed": closed,
        "state": "closed" if closed else "open",
        **{k: header.get(k) for k in ("host", "pid", "created", "fingerprint")},
        "commits": len(read.batch),
        "failures": len(read.batch.failures),
        "torn": read.torn,
        "stats": read.stats or {},
        "lost": int(lost.sum()),
    }
    return ShardScan(path=shard_dir, version=1, start=0, stop=0,
                     task_id=pa.array(read.batch.task_id, type=pa.string()),
                     finished=np.frombuffer(read.batch.finished, dtype=np.float64).copy(),
                     lost=lost, failures=list(read.batch.failures), state=state,
                     problems=problems)


def _shard_chunks(scan: ShardScan) -> Iterator[CommitBatch]:
    """Pass two: the same commits as :func:`_scan_shard` found, in the same chunks."""
    if scan.version == 1:
        read, _doc = read_v1(scan.path)
        yield read.batch
        return
    reader = JournalReader(scan.path, start=scan.start, stop=scan.stop)
    yield from reader.chunks(CHUNK_COMMITS)


# ------------------------------------------------------------------------- columns from commits


def _strings(values: Sequence[Any]) -> pa.Array:
    return pa.array(values, type=pa.string())


def _constant_strings(value: str, n: int) -> pa.Array:
    return pc.cast(pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)),
                                                  pa.array([value])), pa.string())


def _int_column(values: Sequence[Any]) -> pa.Array:
    return pa.array(values, type=pa.int64())


def _commit_rows(batch: CommitBatch, keep: np.ndarray) -> pa.Table:
    """One row per kept commit: what ``replications.parquet`` shows of a committed task."""
    idx = np.flatnonzero(keep)
    n_streams = np.frombuffer(batch.n_streams, dtype=np.int64)
    records = np.frombuffer(batch.records, dtype=np.int64)
    commit_of_stream = np.repeat(np.arange(len(batch)), n_streams)
    per_commit = np.bincount(commit_of_stream, weights=records, minlength=len(batch)) \
        if len(records) else np.zeros(len(batch))
    finished = np.frombuffer(batch.finished, dtype=np.float64)[idx]
    seconds = np.frombuffer(batch.seconds, dtype=np.float64)[idx]
    take = pa.array(idx, type=pa.int64())
    n = len(idx)
    return pa.table({
        "task_id": _strings(batch.task_id).take(take),
        "point_id": _strings(batch.point_id).take(take),
        "point_index": _int_column(batch.point_index).take(take),
        "replication": _int_column(batch.replication).take(take),
        "status": _constant_strings(Status.COMMITTED, n),
        "attempts": pa.array(np.frombuffer(batch.attempt, dtype=np.int64)[idx]),
        "shard_id": _constant_strings(batch.shard_id, n),
        "streams": pa.array(n_streams[idx]),
        "records": pa.array(per_commit[idx].astype(np.int64)),
        "started": pa.array(finished - seconds),
        "finished": pa.array(finished),
        "seconds": pa.array(seconds),
        "error": pa.nulls(n, pa.string()),
        "traceback": pa.nulls(n, pa.string()),
    })


def _dense(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids, position of each id among them)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    distinct, inverse = np.unique(ids, return_inverse=True)
    return distinct, inverse.astype(np.int64)


def _stream_rows(batch: CommitBatch, keep: np.ndarray) -> pa.Table:
    """One row per stream of the kept commits: the streams index (fixed and label columns)."""
    n_streams = np.frombuffer(batch.n_streams, dtype=np.int64)
    commit_of_stream = np.repeat(np.arange(len(batch), dtype=np.int64), n_streams)
    rows = np.flatnonzero(keep[commit_of_stream]) if len(commit_of_stream) else \
        np.zeros(0, dtype=np.int64)
    commits = commit_of_stream[rows]
    kept = np.flatnonzero(keep)
    n = len(rows)
    take_commit = pa.array(commits)
    meta_ids, meta_pos = _dense(np.frombuffer(batch.meta, dtype=np.int64)[rows])
    metas = [batch.defs.get(int(i), {}) for i in meta_ids]
    take_meta = pa.array(meta_pos)

    def meta_col(key: str, typ: pa.DataType) -> pa.Array:
        values = [m.get(key) if isinstance(m, dict) else None for m in metas]
        try:
            return pa.array(values, type=typ).take(take_meta)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return pa.nulls(n, typ)

    lo = np.frombuffer(batch.min_epoch, dtype=np.float64)[rows]
    hi = np.frombuffer(batch.max_epoch, dtype=np.float64)[rows]
    cols: dict[str, pa.Array] = {
        "shard_id": _constant_strings(batch.shard_id, n),
        "stream_id": pa.array(np.frombuffer(batch.stream_id, dtype=np.int64)[rows]).cast(
            pa.uint32()),
        "task_id": _strings(batch.task_id).take(take_commit),
        "point_id": _strings(batch.point_id).take(take_commit),
        "point_index": _int_column(batch.point_index).take(take_commit),
        "replication": _int_column(batch.replication).take(take_commit),
        "attempt": pa.array(np.frombuffer(batch.attempt, dtype=np.int64)).take(take_commit),
        "epoch_scale": meta_col("epoch_scale", pa.float64()),
        "value_scale": meta_col("value_scale", pa.float64()),
        "periodicity": meta_col("periodicity", pa.float64()),
        "kind": meta_col("kind", pa.string()),
        "records": pa.array(np.frombuffer(batch.records, dtype=np.int64)[rows]),
        "min_epoch": pa.array(lo, mask=np.isnan(lo)),
        "max_epoch": pa.array(hi, mask=np.isnan(hi)),
    }
    cols.update(_label_columns(batch, kept, commits, rows))
    return pa.table(cols)


def _label_columns(batch: CommitBatch, kept: np.ndarray, commits: np.ndarray,
                   rows: np.ndarray) -> dict[str, pa.Array]:
    """The label columns of the stream rows, built per distinct label set, never per row.

    A stream's labels are its commit's inline labels, else its commit's shared set, plus its
    own residual set (which by construction never repeats a key of the other two).
    """
    shared_all = np.frombuffer(batch.shared, dtype=np.int64)
    shared_ids, shared_pos = _dense(shared_all[kept])
    shared_sets = [batch.defs.get(int(i), {}) if i >= 0 else {} for i in shared_ids]
    residual_ids, residual_pos = _dense(np.frombuffer(batch.residual, dtype=np.int64)[rows])
    residual_sets = [batch.defs.get(int(i), {}) for i in residual_ids]
    # Position of each row's commit among the kept commits.
    commit_rank = np.full(len(batch), -1, dtype=np.int64)
    commit_rank[kept] = np.arange(len(kept))
    row_commit = pa.array(commit_rank[commits])
    own = {k: [col[i] for i in kept] for k, col in batch.own.items()}
    keys: dict[str, None] = {}
    for source in (own, *shared_sets, *residual_sets):
        for key in source:
            if key not in STREAM_COLUMNS:
                keys.setdefault(key)
    take_shared = pa.array(shared_pos)
    take_residual = pa.array(residual_pos)
    out = {}
    for key in keys:
        own_values = own.get(key) or [None] * len(kept)
        shared_values = [s.get(key) if isinstance(s, dict) else None for s in shared_sets]
        residual_values = [s.get(key) if isinstance(s, dict) else None for s in residual_sets]
        own_arr, shared_arr, residual_arr = label_rule.label_arrays(
            own_values, shared_values, residual_values)
        commit_col = own_arr
        if shared_arr.null_count < len(shared_arr):
            commit_col = pc.if_else(pc.is_valid(own_arr), own_arr, shared_arr.take(take_shared))
        row_col = commit_col.take(row_commit)
        if residual_arr.null_count < len(residual_arr):
            from_residual = residual_arr.take(take_residual)
            row_col = pc.if_else(pc.is_valid(from_residual), from_residual, row_col)
        out[key] = row_col
    return out


def _with_label_meta(table: pa.Table) -> pa.Table:
    labels = [c for c in table.column_names if c not in STREAM_COLUMNS]
    return table.replace_schema_metadata({
        b"disco.format": INDEX_FORMAT.encode(),
        b"disco.label_columns": json.dumps(labels).encode(),
    })


def empty_streams() -> pa.Table:
    return _with_label_meta(pa.table({k: pa.array([], type=t) for k, t in STREAM_COLUMNS.items()}))


def empty_replications() -> pa.Table:
    return pa.table({k: pa.array([], type=t) for k, t in REPLICATION_COLUMNS.items()})


def concat_streams(tables: Sequence[pa.Table]) -> pa.Table:
    """Streams tables of several parts as one: label columns unified by the label rule."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return empty_streams()
    keys: dict[str, None] = {}
    for t in tables:
        for c in t.column_names:
            if c not in STREAM_COLUMNS:
                keys.setdefault(c)
    columns: dict[str, list[Any]] = {}
    for name, typ in STREAM_COLUMNS.items():
        columns[name] = [t[name].cast(typ) if name in t.column_names else
                         pa.nulls(t.num_rows, typ) for t in tables]
    for key in keys:
        arrays = [t[key] if key in t.column_names else pa.nulls(t.num_rows) for t in tables]
        columns[key] = label_rule.unify(arrays)
    pieces = [pa.table({name: cols[i] for name, cols in columns.items()})
              for i in range(len(tables))]
    return _with_label_meta(pa.concat_tables(pieces).combine_chunks())


def label_columns_of(table: pa.Table) -> list[str]:
    """The label columns of a streams table (in first-seen order)."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"disco.label_columns")
    if raw is not None:
        try:
            return [c for c in json.loads(raw) if c in table.column_names]
        except ValueError:
            pass
    return [c for c in table.column_names if c not in STREAM_COLUMNS and c != "labels"]


# ------------------------------------------------------------------------- the replications table


def _conform(table: pa.Table) -> pa.Table:
    cols = {}
    for name, typ in REPLICATION_COLUMNS.items():
        if name in table.column_names:
            col = table[name]
            cols[name] = col if col.type == typ else col.cast(typ)
        else:
            cols[name] = pa.nulls(table.num_rows, typ)
    return pa.table(cols)


def _rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.table({name: pa.array([r.get(name) for r in rows], type=typ)
                     for name, typ in REPLICATION_COLUMNS.items()})


def _replications(prev: pa.Table | None, prev_committed_ok: bool, new_commits: pa.Table,
                  failures: Sequence[Mapping[str, Any]], run: Mapping[str, Any],
                  plan: Mapping[str, Any] | None, lost_ids: set[str]) -> pa.Table:
    """The replications table after a merge (Arrow throughout; Python only for failures)."""
    prev = _conform(prev) if prev is not None else empty_replications()
    is_committed = pc.equal(prev["status"], Status.COMMITTED).fill_null(False)
    if lost_ids:
        is_committed = pc.and_(is_committed, pc.invert(pc.is_in(
            prev["task_id"], value_set=pa.array(sorted(lost_ids), pa.string()))))
    committed_prev = prev.filter(is_committed) if prev_committed_ok else empty_replications()
    committed = pa.concat_tables([committed_prev, _conform(new_commits)])
    committed_ids = committed["task_id"].combine_chunks()
    rest = prev.filter(pc.invert(pc.is_in(prev["task_id"], value_set=committed_ids)))
    # Rows the previous index had as committed whose commit is no longer there (a shard gone,
    # segment bytes damaged): pending again, saying why.
    was_committed = pc.equal(rest["status"], Status.COMMITTED).fill_null(False)
    if pc.any(was_committed).as_py():
        gone = rest.filter(was_committed)
        n = gone.num_rows
        gone = _conform(pa.table({
            "task_id": gone["task_id"], "point_id": gone["point_id"],
            "point_index": gone["point_index"], "replication": gone["replication"],
            "status": _constant_strings(Status.PENDING, n), "attempts": gone["attempts"],
            "error": _constant_strings("its commit is lost (the shard or the segment bytes it "
                                       "depends on are gone)", n)}))
        rest = pa.concat_tables([_conform(rest.filter(pc.invert(was_committed))), gone])
    run_failed: Mapping[str, Any] = run.get("failed") or {}
    run_attempts: Mapping[str, int] = run.get("attempts") or {}
    tracebacks: Mapping[str, str] = run.get("tracebacks") or {}
    running = bool(run.get("plan") is not None or run.get("run") is not None)
    if running and plan is not None and rest.num_rows:
        # A new run retries what failed before: it is pending until this run says otherwise.
        planned = in_plan(rest["task_id"], rest["point_index"], rest["replication"],
                          *_plan_shape(plan))
        if run.get("part"):
            planned &= _in_part(rest, str(run["part"]))  # a part retries its own tasks only
        retried = pc.and_(pc.equal(rest["status"], Status.FAILED).fill_null(False),
                          pa.array(planned))
        rest = rest.set_column(rest.column_names.index("status"), "status",
                               pc.if_else(retried, Status.PENDING, rest["status"]))

    # Tasks whose row changes because of failure notes or the run's own outcome.
    touched: dict[str, dict[str, Any]] = {}
    committed_set = None

    def row_of(tid: str) -> dict[str, Any]:
        row = touched.get(tid)
        if row is None:
            row = {"task_id": tid, "status": Status.PENDING, "attempts": 0}
            touched[tid] = row
        return row

    if failures or run_failed or run_attempts:
        committed_set = set(committed_ids.to_pylist()) if len(committed_ids) < 2_000_000 else None
    for failure in sorted(failures, key=lambda f: f.get("finished") or 0.0):
        tid = failure["task_id"]
        if committed_set is not None and tid in committed_set:
            continue
        row = row_of(tid)
        row["attempts"] = max(int(row.get("attempts") or 0), int(failure.get("attempt") or 1))
        row["error"] = failure.get("error")
        row["traceback"] = failure.get("traceback")
        row["shard_id"] = failure.get("shard_id") or row.get("shard_id")
        for key in ("point_id", "point_index", "replication"):
            if row.get(key) is None:
                row[key] = failure.get(key)
        if not running and plan is None:
            row["status"] = Status.FAILED  # a user's own pool: a failure note and no commit
    for tid, n in run_attempts.items():
        if committed_set is not None and tid in committed_set:
            continue
        row = row_of(tid)
        row["attempts"] = max(int(row.get("attempts") or 0), int(n))
    for tid, message in run_failed.items():
        if committed_set is not None and tid in committed_set:
            continue
        row = row_of(tid)
        row["status"] = Status.FAILED
        row["error"] = message or row.get("error") or "failed"
        if tracebacks.get(tid):
            row["traceback"] = tracebacks[tid]
    if touched:
        ids = pa.array(sorted(touched), pa.string())
        before = rest.filter(pc.is_in(rest["task_id"], value_set=ids)).to_pylist()
        for old in before:
            row = touched[old["task_id"]]
            merged = {**old, **{k: v for k, v in row.items() if v is not None}}
            merged["attempts"] = max(int(old.get("attempts") or 0), int(row.get("attempts") or 0))
            if old.get("status") == Status.FAILED and row.get("status") == Status.PENDING:
                merged["status"] = Status.FAILED
            touched[old["task_id"]] = merged
        rest = pa.concat_tables([rest.filter(pc.invert(pc.is_in(rest["task_id"], value_set=ids))),
                                 _rows_table(list(touched.values()))])
    # Committed tasks whose attempts the run knows better (a retry that committed).
    if run_attempts:
        keys = pa.array(list(run_attempts), pa.string())
        pos = pc.index_in(committed["task_id"], value_set=keys)
        known = pa.array(list(run_attempts.values()), pa.int64())
        extra = pc.take(known, pos)
        attempts = pc.max_element_wise(committed["attempts"], extra, skip_nulls=True)
        committed = committed.set_column(committed.column_names.index("attempts"), "attempts",
                                         attempts)
    # Planned tasks that never ran are not stored: ExperimentIndex.replications adds them.
    table = pa.concat_tables([_conform(committed), _conform(rest)]).combine_chunks()
    order = pc.sort_indices(table, sort_keys=[("task_id", "ascending")])
    return table.take(order)


def _in_part(table: pa.Table, part: str) -> np.ndarray:
    from .parts import parse_part, part_of

    spec = parse_part(part)
    assert spec is not None
    p = pc.fill_null(table["point_index"], -1).to_numpy(zero_copy_only=False)
    r = pc.fill_null(table["replication"], -1).to_numpy(zero_copy_only=False)
    mine: np.ndarray = part_of(p, r, spec.count) == spec.index
    return mine


def _plan_shape(plan: Mapping[str, Any]) -> tuple[int, int]:
    return int(plan.get("points", 0)), int(plan.get("replications", 0))


def _unstored_pending(stored: pa.Table, plan: Mapping[str, Any] | None) -> int:
    """How many planned tasks have no row in ``stored`` (they are pending).

    A ``stop:`` run plans, per point, the replication numbers its rule asked for
    (:func:`~.planning.planned_counts`); a fixed run every number below ``replications``.
    """
    if plan is None:
        return 0
    points, reps = _plan_shape(plan)
    counts = planned_counts(plan)
    if counts is not None:
        rows = stored_per_point(stored["task_id"], stored["point_index"], stored["replication"],
                                points, reps)
        return int(np.maximum(counts - rows, 0).sum())
    inside = in_plan(stored["task_id"], stored["point_index"], stored["replication"], points,
                     reps) if stored.num_rows else np.zeros(0, dtype=bool)
    return points * reps - int(inside.sum())


def with_pending(stored: pa.Table, plan: Mapping[str, Any] | None) -> pa.Table:
    """The stored rows plus one ``pending`` row per planned task without a row, by task id."""
    if plan is None or not _unstored_pending(stored, plan):
        return stored
    planned = planned_table(*_plan_shape(plan))
    pending = planned.filter(pc.invert(pc.is_in(planned["task_id"],
                                                 value_set=stored["task_id"].combine_chunks())))
    counts = planned_counts(plan)
    if counts is not None:
        # A stop: run hands out the lowest free numbers: its pending tasks are the first ones
        # without a row, as many per point as it asked for beyond the rows it has.
        rows = stored_per_point(stored["task_id"], stored["point_index"], stored["replication"],
                                *_plan_shape(plan))
        pending = first_per_point(pending, counts - rows)
    n = pending.num_rows
    pending = _conform(pending.append_column("status", _constant_strings(Status.PENDING, n))
                       .append_column("attempts", pa.array(np.zeros(n, np.int64))))
    table = pa.concat_tables([_conform(stored), pending]).combine_chunks()
    return table.take(pc.sort_indices(table, sort_keys=[("task_id", "ascending")]))


# ---------------------------------------------------------------------------------- the index


class ExperimentIndex:
    """The merged, deduplicated content of all shard journals of one output directory."""

    def __init__(self, output_dir: Path, info: dict[str, Any], replications: pa.Table,
                 parts: Sequence[Path], new_streams: Sequence[pa.Table],
                 state: dict[str, Any], written: bool) -> None:
        self.output_dir = output_dir
        self.info = info
        self.stored_replications = replications
        """The rows ``replications.parquet`` holds (no row for a planned task never run)."""
        self._replications: pa.Table | None = None
        self._parts = list(parts)
        self._new_streams = list(new_streams)
        self._streams: pa.Table | None = None
        self.state = state
        self.written = written
        self.location: str | None = None
        """The experiment's URI when it is in object storage (``output_dir`` is then the
        local mirror of it, :mod:`.mirror`)."""
        self.mirror: Any = None

    @property
    def duplicates(self) -> int:
        return int(self.info["totals"]["duplicates_dropped"])

    @property
    def totals(self) -> dict[str, Any]:
        totals: dict[str, Any] = self.info["totals"]
        return totals

    @property
    def streams(self) -> pa.Table:
        """Every committed stream (read from the index parts on first use)."""
        if self._streams is None:
            tables = []
            for part in self._parts:
                try:
                    tables.append(read_parquet(part))
                except (OSError, pa.ArrowInvalid) as exc:
                    _warn(f"{part}: unreadable index part ({exc}); run `disco-data-logger "
                          f"merge {self.output_dir}` to rebuild the index")
            self._streams = concat_streams([*tables, *self._new_streams])
        return self._streams

    @property
    def replications(self) -> pa.Table:
        """One row per replication, planned ones that never ran included (as ``pending``)."""
        if self._replications is None:
            plan = self.info.get("plan") or self.state.get("plan")
            self._replications = with_pending(self.stored_replications, plan)
        return self._replications

    def committed(self) -> pa.Table:
        """``task_id, point_index, replication`` of the committed replications."""
        stored = self.stored_replications
        rows = stored.filter(pc.equal(stored["status"], Status.COMMITTED))
        return rows.select(["task_id", "point_index", "replication"])

    @property
    def committed_task_ids(self) -> set[str]:
        return set(self.committed()["task_id"].to_pylist())

    @classmethod
    def build(cls, output_dir: str | os.PathLike[str], *,
              run: Mapping[str, Any] | None = None, storage: Any = None) -> ExperimentIndex:
        """The index as a merge would write it, built in memory (nothing is written)."""
        if is_uri(output_dir):
            return _merge_store(str(output_dir), storage, run, write=False)
        return _Merge(Path(output_dir), run, write=False).run()

    def write(self) -> None:
        """Kept for compatibility: :func:`merge` writes as it merges."""
        if not self.written:
            check_experiment(self.output_dir, writing=True)
            with merge_turn(self.output_dir):
                _Merge(self.output_dir, None, write=True).run()
            self.written = True


def merge(output_dir: str | os.PathLike[str], *,
          run: Mapping[str, Any] | None = None, storage: Any = None) -> ExperimentIndex:
    """Merge the shard journals of ``output_dir`` into the experiment index and write it.

    Call it after your own ``multiprocessing.Pool`` or Ray tasks wrote shards with
    :class:`~disco_data_logger.sharding.ShardWriter`; the coordinator calls it at the start and
    the end of every run. Incremental and safe to call again at any time. ``output_dir`` must be
    an experiment (see :func:`check_experiment`); nothing is written to any other directory.
    ``run`` is what the coordinator knows beyond the journals: the ``plan`` (``points``,
    ``replications``), ``failed`` (task id -> error), ``attempts``, ``tracebacks``, the config
    snapshot and the run record (``run``: a :class:`~.records.RunRecord`, or the mapping its
    ``to_json`` gives), and ``part``, ``"I/N"``, for a run of one part.
    Merges of one experiment take turns (:func:`~.lock.merge_turn`), so the parts of an
    experiment running at once each merge safely.

    ``output_dir`` may be an object-store URI (``s3://bucket/prefix``): the index is then read
    from and written to the store (:mod:`.mirror`), ``storage`` being the config's
    ``storage:`` options.
    """
    if is_uri(output_dir):
        return _merge_store(str(output_dir), storage, run, write=True)
    root = Path(output_dir)
    check_experiment(root, writing=True)
    with merge_turn(root):
        return _Merge(root, run, write=True).run()


def _committed_ids(replications: pa.Table | None) -> pa.Array | None:
    if replications is None:
        return None
    mask = pc.equal(replications["status"], Status.COMMITTED).fill_null(False)
    return replications.filter(mask)["task_id"].combine_chunks()


def _first_commits(scans: Sequence[ShardScan], already: pa.Array | None
                   ) -> tuple[list[np.ndarray], int, set[str]]:
    """Which commit of every task is kept: the first to finish (then by shard id) among the
    commits this merge reads, unless the index holds one already. Vectorised over all commits.

    Returns a keep mask per shard, the number of duplicates dropped, and the task ids whose only
    commits are lost.
    """
    sizes = [len(s.task_id) for s in scans]
    keeps = [np.zeros(n, dtype=bool) for n in sizes]
    if not sum(sizes):
        return keeps, 0, set()
    ids = pa.chunked_array([s.task_id for s in scans], type=pa.string()).combine_chunks()
    finished = np.concatenate([s.finished for s in scans])
    lost = np.concatenate([s.lost for s in scans])
    rank = np.repeat(np.argsort(np.argsort([s.path.name for s in scans])), sizes)
    candidate = ~lost
    if already is not None and len(already):
        known = np.asarray(pc.is_in(ids, value_set=already).to_numpy(zero_copy_only=False), bool)
    else:
        known = np.zeros(len(ids), dtype=bool)
    fresh = candidate & ~known
    order = np.lexsort((rank, finished))
    order = order[fresh[order]]
    codes = pc.dictionary_encode(ids.take(pa.array(order))).indices.to_numpy(
        zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    keep = np.zeros(len(ids), dtype=bool)
    keep[order[first]] = True
    duplicates = int(candidate.sum() - keep.sum())
    lost_ids: set[str] = set()
    if lost.any():
        kept = pa.array(ids.filter(pa.array(keep)))
        gone = ids.filter(pa.array(lost & ~known))
        lost_ids = set(gone.filter(pc.invert(pc.is_in(gone, value_set=kept))).to_pylist())
    bounds = np.cumsum([0, *sizes])
    return [keep[bounds[i]:bounds[i + 1]] for i in range(len(scans))], duplicates, lost_ids


class _PartWriter:
    """Streams chunks of the streams index into parts of up to PART_ROWS rows, one Parquet row
    group per chunk; a chunk whose schema differs (a new label, another type) starts a part.
    Without a folder the chunks are kept in memory (``in_memory``)."""

    def __init__(self, folder: Path | None, state: dict[str, Any]) -> None:
        self.folder = folder
        self.state = state
        self.in_memory: list[pa.Table] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._name = ""
        self._tmp: Path | None = None
        self._summaries: list[dict[str, Any]] = []

    def add(self, table: pa.Table) -> None:
        if self.folder is None:
            self.in_memory.append(table)
            return
        rows = sum(s["rows"] for s in self._summaries)
        if self._writer is not None and (not table.schema.equals(self._schema)
                                         or rows + table.num_rows > PART_ROWS):
            self.finish()
        if self._writer is None:
            self._name = _part_name(self.state)
            self._tmp = self.folder / f".{self._name}.{os.getpid()}.tmp"
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._tmp, table.schema,
                                            **_parquet_options(table.schema))
        self._writer.write_table(table)
        self._summaries.append(_part_summary(table))

    def finish(self) -> None:
        if self._writer is None or self.folder is None or self._tmp is None:
            return
        self._writer.close()
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.folder / self._name)
        self.state["parts"].append({"name": self._name, **_merge_summaries(self._summaries)})
        self._writer = None
        self._summaries = []


def _part_name(state: dict[str, Any]) -> str:
    """A new part's name: numbered, plus a random token so that two merges running at once
    never write the same file (the one whose state.json is written last wins; the other's parts
    are removed by the next merge)."""
    name = f"streams-{state['next_part']:06d}-{secrets.token_hex(4)}.parquet"
    state["next_part"] += 1
    return name


def _merge_summaries(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    shards: dict[str, int] = {}
    for t in summaries:
        for s, c in t["shards"].items():
            shards[s] = shards.get(s, 0) + c
    mins = [t["min_epoch"] for t in summaries if t["min_epoch"] is not None]
    maxs = [t["max_epoch"] for t in summaries if t["max_epoch"] is not None]
    return {"rows": sum(t["rows"] for t in summaries),
            "records": sum(t["records"] for t in summaries),
            "min_epoch": min(mins) if mins else None, "max_epoch": max(maxs) if maxs else None,
            "shards": shards}


def _warn_vanished(root: Path, prev_reps: pa.Table, scans: list[ShardScan],
                   keeps: list[np.ndarray]) -> None:
    """Say which replications the index had as committed that no journal holds any more (a
    journal cut, a shard folder deleted): a rebuild must not drop them without a word."""
    ids = _committed_ids(prev_reps)
    before = set(ids.to_pylist()) if ids is not None else set()
    now: set[str] = set()
    for scan, keep in zip(scans, keeps, strict=True):
        now.update(t for t, k in zip(scan.task_id.to_pylist(), keep, strict=True) if k)
    gone = sorted(before - now)
    if gone:
        shown = ", ".join(gone[:5]) + (", ..." if len(gone) > 5 else "")
        _warn(f"{root}: {len(gone)} replication(s) the index had as committed are in no shard "
              f"journal any more ({shown}): a journal or shard was damaged or removed; they "
              "count as pending and `disco-data-logger run` runs them again")


def _part_problem(path: Path, rows: Any) -> str | None:
    """Why an index part cannot be trusted (its Parquet footer, its row count), or None."""
    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowInvalid) as exc:
        return f"unreadable index part ({exc})"
    if isinstance(rows, int) and not isinstance(rows, bool) and meta.num_rows != rows:
        return f"index part holds {meta.num_rows} rows, the index state says {rows}"
    return None


class _Merge:
    """One merge: what changed since the state, read, verified, deduplicated, written."""

    def __init__(self, output_dir: Path, run: Mapping[str, Any] | None, write: bool,
                 files: ShardFiles = LOCAL_FILES) -> None:
        self.root = output_dir
        self.files = files
        self.run_info = dict(run or {})
        self.has_run = run is not None
        self.write = write
        self.index_dir = output_dir / INDEX_DIR
        self.parts_dir = self.index_dir / INDEX_PARTS_DIR

    # -- loading what was there ---------------------------------------------------------------

    def _load_state(self) -> dict[str, Any] | None:
        path = self.index_dir / INDEX_STATE
        doc, why = _read_json_object(path)
        if why is not None:
            _warn(f"{path}: unreadable ({why}); the index is rebuilt from the journals")
            return None
        if doc is None:
            return None
        if doc.get("format") != STATE_FORMAT or not isinstance(doc.get("shards"), dict) \
                or not isinstance(doc.get("parts"), list):
            _warn(f"{path}: not an index state this version knows; the index is rebuilt")
            return None
        for part in doc["parts"]:
            name = part.get("name") if isinstance(part, dict) else None
            if not isinstance(name, str) or "/" in name or not name.endswith(".parquet") \
                    or not (self.parts_dir / name).is_file():
                _warn(f"{self.parts_dir}: index part {name!r} is missing; the index is rebuilt")
                return None
            # A part is derived data: one that is damaged (its footer unreadable, or not the
            # rows the state recorded) is rebuilt from the journals, never trusted.
            problem = _part_problem(self.parts_dir / name, part.get("rows"))
            if problem is not None:
                _warn(f"{self.parts_dir / name}: {problem}; the index is rebuilt from the journals")
                return None
        return doc

    def _load_replications(self) -> tuple[pa.Table | None, int | None]:
        path = self.index_dir / REPLICATIONS_INDEX
        if not path.is_file():
            return None, None
        try:
            table = read_parquet(path)
        except (OSError, pa.ArrowInvalid) as exc:
            _warn(f"{path}: unreadable ({exc}); rebuilt from the journals")
            return None, None
        meta = table.schema.metadata or {}
        gen = meta.get(b"disco.generation")
        if "task_id" not in table.column_names or "status" not in table.column_names:
            _warn(f"{path}: not a replications index; rebuilt from the journals")
            return None, None
        return table, int(gen) if gen is not None and gen.isdigit() else None

    # -- the merge ----------------------------------------------------------------------------

    def run(self) -> ExperimentIndex:
        root = self.root
        check_experiment(root, writing=self.write)
        previous = read_experiment_json(root) or {}
        if previous.get("format") == INDEX_FORMAT_V1:
            previous = {k: v for k, v in previous.items() if k != "replications"}
        state = self._load_state()
        prev_reps, generation = self._load_replications()
        if state is not None and (prev_reps is None or generation != state.get("generation")):
            if prev_reps is not None or state.get("parts"):
                _warn(f"{self.index_dir}: {REPLICATIONS_INDEX} does not match {INDEX_STATE} "
                      "(an interrupted merge); the index is rebuilt from the journals")
            state = None
        shard_dirs = self.files.shard_dirs(root)
        plan = self.run_info.get("plan") or previous.get("plan")

        rebuild = state is None
        actions: dict[str, str] = {}
        if state is not None:
            on_disk = {p.name for p in shard_dirs}
            for name in state["shards"]:
                if name not in on_disk:
                    _warn(f"{self.files.display_root(root)}/{SHARDS_DIR}/{name}: shard listed "
                          "in the index is gone; its "
                          f"{state['shards'][name].get('commits', 0)} commit(s) are no longer "
                          "part of the experiment (`disco-data-logger run` runs them again)")
                    rebuild = True
            for path in shard_dirs:
                st = state["shards"].get(path.name)
                actions[path.name] = "new" if st is None else _classify(path, st, self.files)
                if actions[path.name] == "changed":
                    rebuild = True
        if rebuild:
            state_shards: dict[str, Any] = {}
            actions = {p.name: "new" for p in shard_dirs}
        else:
            assert state is not None
            state_shards = dict(state["shards"])
        nothing_new = not rebuild and all(a == "same" for a in actions.values())
        if nothing_new and not self.has_run and prev_reps is not None and previous:
            return self._unchanged(previous, state, prev_reps)

        scans: list[ShardScan] = []
        for path in shard_dirs:
            action = actions[path.name]
            if action == "same":
                continue
            st = state_shards.get(path.name) if action == "grew" else None
            scan = _scan_shard(root, path, st, self.files)
            # Problems found before stay known (and said) until the shard is read anew.
            known = list((st or {}).get("problems") or [])
            scan.state["problems"] = (known + scan.problems)[:MAX_PROBLEMS]
            scans.append(scan)
            state_shards[path.name] = scan.state
        for _name, st in sorted(state_shards.items()):
            for problem in st.get("problems") or []:
                _warn(problem)

        prev_ok = not rebuild and prev_reps is not None
        keeps, duplicates, lost_ids = _first_commits(
            scans, _committed_ids(prev_reps) if prev_ok else None)
        if rebuild and prev_reps is not None:
            _warn_vanished(root, prev_reps, scans, keeps)

        parts_meta = list(state["parts"]) if state is not None and not rebuild else []
        next_part = int(state.get("next_part", 0)) if state is not None and not rebuild else 0
        generation = int(state.get("generation", 0)) + 1 if state is not None else 1
        new_state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "generation": generation,
            "shards": state_shards,
            "parts": parts_meta,
            "next_part": next_part,
            "duplicates": (int(state.get("duplicates", 0)) if state is not None and not rebuild
                           else 0) + duplicates,
            "plan": plan,
        }
        # Pass two: the streams of the commits kept, a chunk at a time, written as they come.
        if self.write:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        parts = _PartWriter(self.parts_dir if self.write else None, new_state)
        new_commits: list[pa.Table] = []
        for scan, keep in zip(scans, keeps, strict=True):
            if not keep.any():
                continue
            pos = 0
            for chunk in _shard_chunks(scan):
                k = keep[pos:pos + len(chunk)]
                pos += len(chunk)
                if len(k) < len(chunk):  # cannot happen unless the bytes changed under us
                    k = np.concatenate([k, np.zeros(len(chunk) - len(k), dtype=bool)])
                if k.any():
                    new_commits.append(_commit_rows(chunk, k))
                    parts.add(_with_label_meta(_stream_rows(chunk, k)))
        parts.finish()
        failures = [{**f, "shard_id": scan.path.name} for scan in scans for f in scan.failures]
        replications = _replications(
            prev_reps, prev_ok,
            pa.concat_tables(new_commits) if new_commits else empty_replications(),
            failures, self.run_info, plan, lost_ids)
        info = _experiment_info(root, previous, self.run_info, new_state, replications,
                                [_part_summary(t) for t in parts.in_memory], self.files)
        if not self.write:
            paths = [self.parts_dir / p["name"] for p in parts_meta]
            return ExperimentIndex(root, info, replications, paths, parts.in_memory, new_state,
                                   written=False)
        return self._write(info, replications, new_state, rebuild)

    def _unchanged(self, previous: dict[str, Any], state: dict[str, Any] | None,
                   replications: pa.Table) -> ExperimentIndex:
        assert state is not None
        for _name, st in sorted(state["shards"].items()):
            for problem in st.get("problems") or []:
                _warn(problem)
        parts = [self.parts_dir / p["name"] for p in state["parts"]]
        return ExperimentIndex(self.root, previous, _conform(replications), parts, [], state,
                               written=True)

    # -- writing ------------------------------------------------------------------------------

    def _write(self, info: dict[str, Any], replications: pa.Table, state: dict[str, Any],
               rebuild: bool) -> ExperimentIndex:
        if len(state["parts"]) > MAX_PARTS or (len(state["parts"]) > 1 and rebuild):
            name = _part_name(state)
            summary = _compact([self.parts_dir / p["name"] for p in state["parts"]],
                               self.parts_dir / name)
            state["parts"] = [{"name": name, **summary}]
        fsync_directory(self.parts_dir)
        replications = replications.replace_schema_metadata(
            {b"disco.format": INDEX_FORMAT.encode(),
             b"disco.generation": str(state["generation"]).encode()})
        _write_parquet_atomic(replications, self.index_dir / REPLICATIONS_INDEX)
        atomic_write_bytes(self.index_dir / INDEX_STATE,
                           json.dumps(state, separators=(",", ":")).encode())
        atomic_write_json(self.root / EXPERIMENT_JSON, info)
        # Files no state lists any more: parts of a rebuild or compaction, the format-1 index.
        keep = {p["name"] for p in state["parts"]}
        for entry in os.scandir(self.parts_dir):
            if entry.name not in keep and entry.is_file(follow_symlinks=False) and (
                    entry.name.startswith("streams-") or entry.name.startswith(".")):
                os.unlink(entry.path)
        legacy = self.index_dir / LEGACY_STREAMS_INDEX
        if legacy.is_file() and not legacy.is_symlink():
            legacy.unlink()
        parts = [self.parts_dir / p["name"] for p in state["parts"]]
        return ExperimentIndex(self.root, info, replications, parts, [], state, written=True)


def _part_summary(table: pa.Table) -> dict[str, Any]:
    def scalar(value: Any) -> Any:
        v = value.as_py()
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    n = table.num_rows
    shards = pc.value_counts(table["shard_id"]).to_pylist() if n else []
    return {
        "rows": n,
        "records": int(pc.sum(table["records"]).as_py() or 0) if n else 0,
        "min_epoch": scalar(pc.min(table["min_epoch"])) if n else None,
        "max_epoch": scalar(pc.max(table["max_epoch"])) if n else None,
        "shards": {s["values"]: s["counts"] for s in shards},
    }


_DELTA = frozenset({"stream_id", "replication", "point_index", "attempts", "streams", "records"})
_SPLIT = frozenset({"started", "finished", "seconds"})


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How the index is written: zstd; stream ids and counts delta-coded (they mostly count
    up), timestamps byte-stream-split (their high bytes repeat): 5x smaller than plain."""
    encoding = {}
    for f in schema:
        if f.name in _DELTA and pa.types.is_integer(f.type):
            encoding[f.name] = "DELTA_BINARY_PACKED"
        elif f.name in _SPLIT and pa.types.is_floating(f.type):
            encoding[f.name] = "BYTE_STREAM_SPLIT"
    return {"compression": "zstd", "column_encoding": encoding,
            "use_dictionary": [f.name for f in schema if f.name not in encoding]}


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One Parquet file as a table (without ``pq.read_table``'s import of pyarrow.dataset)."""
    with pq.ParquetFile(path) as fh:
        return fh.read(columns=columns)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, **_parquet_options(table.schema))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _compact(parts: Sequence[Path], dst: Path) -> dict[str, Any]:
    """Rewrite ``parts`` as one file, one part in memory at a time."""
    schemas = [pq.read_schema(p) for p in parts]
    keys: dict[str, None] = {}
    for schema in schemas:
        for name in schema.names:
            if name not in STREAM_COLUMNS:
                keys.setdefault(name)
    # Decide each label column's type from all parts, reading that column only.
    target: dict[str, pa.DataType | None] = {}
    for key in keys:
        kinds: set[str] = set()
        biggest = 0
        for p, schema in zip(parts, schemas, strict=True):
            if key in schema.names:
                k, m = label_rule.column_kinds(read_parquet(p, columns=[key])[key])
                kinds |= k
                biggest = max(biggest, m)
        target[key] = label_rule.column_type(kinds, biggest)
    fields = [pa.field(n, t) for n, t in STREAM_COLUMNS.items()]
    fields += [pa.field(k, t if t is not None else pa.string()) for k, t in target.items()]
    schema = pa.schema(fields)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    totals = []
    with pq.ParquetWriter(tmp, schema, **_parquet_options(schema)) as writer:
        for p in parts:
            table = read_parquet(p)
            cols = []
            for f in schema:
                if f.name in table.column_names:
                    col = table[f.name]
                    if f.name in target:
                        col = label_rule.convert(col, target[f.name])
                    cols.append(col if col.type == f.type else col.cast(f.type))
                else:
                    cols.append(pa.nulls(table.num_rows, f.type))
            piece = pa.table(cols, schema=schema)
            writer.write_table(piece)
            totals.append(_part_summary(piece))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dst)
    return _merge_summaries(totals)


# ----------------------------------------------------------------------------- experiment.json


def _segment_bytes(root: Path, shards: Iterable[str]) -> int:
    total = 0
    for name in shards:
        for _n, seg in segment_files(root / SHARDS_DIR / name):
            try:
                total += seg.stat().st_size
            except OSError:
                pass
    return total


def _experiment_info(root: Path, previous: Mapping[str, Any], run: Mapping[str, Any],
                     state: Mapping[str, Any], replications: pa.Table,
                     new_parts: Sequence[Mapping[str, Any]],
                     files: ShardFiles = LOCAL_FILES) -> dict[str, Any]:
    counts: dict[str, int] = {status: 0 for status in Status}
    if replications.num_rows:
        for item in pc.value_counts(replications["status"]).to_pylist():
            if item["values"] is not None:
                counts[item["values"]] = item["counts"]
    unstored = _unstored_pending(replications, state.get("plan"))
    counts[Status.PENDING] += unstored
    parts = [*state["parts"], *new_parts]
    mins = [p["min_epoch"] for p in parts if p.get("min_epoch") is not None]
    maxs = [p["max_epoch"] for p in parts if p.get("max_epoch") is not None]
    shards = state["shards"]
    totals = {
        "replications": replications.num_rows + unstored,
        **counts,
        "duplicates_dropped": int(state.get("duplicates", 0)),
        "lost": sum(int(s.get("lost", 0)) for s in shards.values()),
        "shards": len(shards),
        "streams": sum(int(p["rows"]) for p in parts),
        "records": sum(int(p["records"]) for p in parts),
        "raw_bytes": sum(int((s.get("stats") or {}).get("raw_bytes") or 0)
                         for s in shards.values()),
        "compressed_bytes": files.segment_bytes(root, shards),
        "min_epoch": min(mins) if mins else None,
        "max_epoch": max(maxs) if maxs else None,
    }
    state_name: str
    if run.get("state"):
        state_name = str(run["state"])
        if run.get("part") and state_name == RunState.COMPLETE and (counts[Status.PENDING] or
                                                                    counts[Status.FAILED]):
            state_name = ExperimentState.INCOMPLETE.value  # this part is done; others not (yet)
    elif counts[Status.PENDING] or counts[Status.FAILED]:
        state_name = previous.get("state", ExperimentState.INCOMPLETE.value)
    else:
        state_name = ExperimentState.COMPLETE.value
    runs = list(previous.get("runs", []))
    if run.get("run") is not None:
        given = run["run"]
        record = given.to_json() if isinstance(given, RunRecord) else dict(given)
        # The coordinator writes the same run record at start and at the end: replace, not append.
        runs = [r for r in runs if r.get("run_id") != record.get("run_id")] + [record]
    return {
        "format": INDEX_FORMAT,
        "output": files.display_root(root),
        "experiment": run.get("experiment", previous.get("experiment")),
        "fingerprint": run.get("fingerprint", previous.get("fingerprint")),
        "config": run.get("config", previous.get("config")),
        "overrides": run.get("overrides", previous.get("overrides", [])),
        "config_path": run.get("config_path", previous.get("config_path")),
        "git_commit": run.get("git_commit", previous.get("git_commit")),
        "plan": state.get("plan"),
        "created": previous.get("created", _now_iso()),
        "updated": _now_iso(),
        "state": state_name,
        **environment_info(),
        "runs": runs,
        "totals": totals,
        "shards": [
            {
                "shard_id": name,
                "host": s.get("host"),
                "pid": s.get("pid"),
                "closed": bool(s.get("closed")),
                "state": s.get("state"),
                "error": s.get("error"),
                "committed": int(s.get("commits", 0)),
                "failures": int(s.get("failures", 0)),
                "lost": int(s.get("lost", 0)),
                "torn_lines": int(bool(s.get("torn"))),
                "segments": len(s.get("segments") or {}),
            }
            for name, s in sorted(shards.items())
        ],
    }
