"""Merging outputs of one experiment that ran in several places: ``merge A B C --into D``.

A laptop ran half of the replications, a workstation the other half, each into its own output
(``--part 1/2`` and ``--part 2/2``, or simply different ``replications``); the outputs were copied
to one machine. :func:`merge_into` makes one experiment of them:

* every input must be an experiment of the same config (the same config fingerprint, which
  leaves out execution, logger settings, output and the replication count); otherwise nothing is
  changed and the error names the first difference of the configs;
* the inputs' shards are brought into ``D/shards/`` under their own ids (which are unique):
  hard-linked when ``D`` is on the same filesystem, else copied; nothing is moved or changed in
  the inputs, nothing outside ``D`` is written, and a symbolic link is never followed (a link
  in an input is skipped with a warning);
* a shard appears in ``D`` whole or not at all (it is assembled in a hidden folder and renamed),
  and a shard ``D`` already holds is not brought again, so merging the same input twice changes
  nothing;
* the index of ``D`` is merged as ``disco-data-logger merge`` does: the first commit of a task
  wins (by finish time, then shard id) and later ones are counted as duplicates, the rule
  ``run`` applies when it resumes, so every replication is in ``D`` exactly once.

``D`` may be new, empty, or an experiment of the same config (one of the inputs, too). It is
locked like a run while the merge works on it; an input that a run holds is refused (its last
segment may still grow).
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import secrets
import shutil
import socket
import stat
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    CorruptDataWarning,
    ExperimentMismatchError,
    NotAnExperimentError,
    UnsafePathError,
)
from ..layout import DONE_MARKER, SEGMENT_NAME_RE, STREAMS_DIR
from .index import (
    ExperimentIndex,
    check_experiment,
    merge,
    read_experiment_json,
    scan_shards,
)
from .layout import (
    EXPERIMENT_JSON,
    INDEX_FORMAT,
    JOURNAL_NAME,
    JOURNAL_V1_NAME,
    MANIFEST_NAME,
    SHARDS_DIR,
)
from .lock import ExperimentLock, live_holders
from .manifest import JournalReader, ShardManifest, atomic_write_json, fsync_directory
from .paths import enclosing_experiment_or_logger, is_inside
from .storage import is_uri

__all__ = ["MergeIntoResult", "merge_into"]

_INCOMING = ".incoming-"
"""Prefix of the hidden folder a shard is assembled in (scan_shards skips hidden names)."""

_HEADER_BYTES = 1 << 20
"""How much of a journal is read to find its header (the first line of the first frame)."""

_COPY_CHUNK = 1 << 20


@dataclass
class MergeIntoResult:
    """What :func:`merge_into` did."""

    into: Path
    sources: list[Path]
    linked: list[str] = field(default_factory=list)
    """Shards whose files were hard-linked into ``into``."""
    copied: list[str] = field(default_factory=list)
    """Shards whose files were copied (another filesystem, or links refused)."""
    present: list[str] = field(default_factory=list)
    """Shards ``into`` held already (the same files): left as they were."""
    skipped: list[str] = field(default_factory=list)
    """Shards not brought: a different shard of the same id is in ``into`` (warned)."""
    linked_bytes: int = 0
    copied_bytes: int = 0
    index: ExperimentIndex | None = None


def _warn(message: str) -> None:
    warnings.warn(message, CorruptDataWarning, stacklevel=3)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------ the same experiment


def _journal_fingerprint(shard: Path) -> str | None:
    if (shard / JOURNAL_NAME).is_file():
        size = (shard / JOURNAL_NAME).stat().st_size
        reader = JournalReader(shard, stop=min(size, _HEADER_BYTES))
        for _batch in reader.chunks(None):
            pass
        if reader.header is None and size > _HEADER_BYTES:
            reader = JournalReader(shard)
            for _batch in reader.chunks(None):
                pass
        value = (reader.header or {}).get("fingerprint")
        return value if isinstance(value, str) else None
    manifest = ShardManifest.load(shard, warn=False)
    return manifest.fingerprint if manifest is not None else None


@dataclass
class _Source:
    path: Path
    info: dict[str, Any] | None
    shards: list[Path]
    fingerprints: dict[str, str]
    """fingerprint -> where it was found (experiment.json or a shard's journal)."""

    @property
    def fingerprint(self) -> str | None:
        return next(iter(self.fingerprints), None)


def _read_source(path: Path, *, writing: bool = False) -> _Source:
    check_experiment(path, writing=writing)
    info = read_experiment_json(path)
    shards = scan_shards(path)
    prints: dict[str, str] = {}
    if info is not None and isinstance(info.get("fingerprint"), str):
        prints[info["fingerprint"]] = str(path / EXPERIMENT_JSON)
    for shard in shards:
        fp = _journal_fingerprint(shard)
        if fp is not None:
            prints.setdefault(fp, str(shard))
    if len(prints) > 1:
        (a, where_a), (b, where_b) = list(prints.items())[:2]
        raise ExperimentMismatchError(
            f"{path} holds results of two configs ({where_a} has fingerprint {a[:12]}, "
            f"{where_b} has {b[:12]}); merge only outputs of one config")
    return _Source(path, info, shards, prints)


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted path of the first difference of two config snapshots, with both values."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                return f"{sub}: {'absent' if key not in a else repr(a[key])} vs " \
                       f"{'absent' if key not in b else repr(b[key])}"
            found = _first_difference(a[key], b[key], sub)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    return None if a == b else f"{where or 'config'}: {a!r} vs {b!r}"


_NOT_FINGERPRINTED = ("execution", "logger", "output", "replications", "metrics", "stop")


def _mismatch(a: _Source, b: _Source) -> ExperimentMismatchError:
    config_a = (a.info or {}).get("config")
    config_b = (b.info or {}).get("config")
    what = None
    if isinstance(config_a, Mapping) and isinstance(config_b, Mapping):
        what = _first_difference({k: v for k, v in config_a.items() if k not in _NOT_FINGERPRINTED},
                                 {k: v for k, v in config_b.items() if k not in _NOT_FINGERPRINTED})
    if what is None:
        fa = a.fingerprint[:12] if a.fingerprint else "none"
        fb = b.fingerprint[:12] if b.fingerprint else "none"
        what = f"config fingerprint {fa} vs {fb}"
    return ExperimentMismatchError(
        f"{a.path} and {b.path} are not the same experiment ({what}); merge --into combines "
        "outputs of one config only; nothing was changed")


def _check_same(sources: Sequence[_Source]) -> None:
    first = sources[0]
    for other in sources[1:]:
        if other.fingerprint != first.fingerprint:
            raise _mismatch(first, other)


# ------------------------------------------------------------------------------- the target


def _check_target(into: Path, sources: Sequence[Path]) -> bool:
    """Refuse a target that is unsafe to write; True when it is one of the inputs."""
    if into.is_symlink():
        raise UnsafePathError(f"{into} is a symbolic link; merge into a directory (nothing is "
                              "written through links)")
    if os.path.lexists(into) and not into.is_dir():
        raise UnsafePathError(f"{into} exists and is not a directory")
    target = into.resolve()
    is_input = False
    for src in sources:
        real = src.resolve()
        if real == target:
            is_input = True
        elif is_inside(target, real) or is_inside(real, target):
            raise UnsafePathError(f"{into} and the input {src} lie one inside the other; merge "
                                  "into a directory of its own (or into the input itself)")
    enclosing = enclosing_experiment_or_logger(target)
    if enclosing is not None:
        kind, parent = enclosing
        raise UnsafePathError(f"{into} lies inside the {kind} directory {parent}; merge "
                              "into a directory outside it")
    if into.is_dir() and any(into.iterdir()):
        try:
            check_experiment(into, writing=True)
        except NotAnExperimentError:
            raise UnsafePathError(f"{into} exists, is not empty and is not an experiment; "
                                  "merge into a new or empty directory, or into an "
                                  "experiment of the same config") from None
    return is_input


# ------------------------------------------------------------------------ bringing a shard


def _shard_files(shard: Path) -> list[tuple[str, os.stat_result]]:
    """The files of a shard that make it up (relative names), regular files only; anything
    else (a link, a stray file) is left out, links with a warning."""
    wanted = []
    for top, sub in ((shard, ""), (shard / STREAMS_DIR, STREAMS_DIR + "/")):
        if sub:
            try:
                st = os.lstat(top)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                if stat.S_ISLNK(st.st_mode):
                    _warn(f"{top}: a symbolic link; not followed, not merged")
                continue
        with os.scandir(top) as it:
            for entry in it:
                name = entry.name
                known = (SEGMENT_NAME_RE.match(name) or name in (
                    JOURNAL_NAME, JOURNAL_V1_NAME, MANIFEST_NAME, DONE_MARKER)) if not sub \
                    else name.endswith(".json")
                if not known:
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    _warn(f"{entry.path}: a symbolic link; not followed, not merged")
                    continue
                if stat.S_ISREG(st.st_mode):
                    wanted.append((sub + name, st))
    return sorted(wanted, key=lambda item: item[0])


def _same_file(a: Path, sa: os.stat_result, b: Path) -> bool:
    try:
        sb = os.lstat(b)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(sb.st_mode) or sb.st_size != sa.st_size:
        return False
    if (sb.st_dev, sb.st_ino) == (sa.st_dev, sa.st_ino) or sb.st_mtime_ns == sa.st_mtime_ns:
        return True  # the same inode, or a copy made by an earlier merge (mtime kept)
    return _same_bytes(a, b)


def _same_bytes(a: Path, b: Path) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fa, fb = os.open(a, flags), os.open(b, flags)
    try:
        while True:
            x, y = os.read(fa, _COPY_CHUNK), os.read(fb, _COPY_CHUNK)
            if x != y:
                return False
            if not x:
                return True
    finally:
        os.close(fa)
        os.close(fb)


def _copy_file(src: Path, dst: Path, st: os.stat_result) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                       stat.S_IMODE(st.st_mode) | stat.S_IWUSR | stat.S_IRUSR)
        try:
            while True:
                chunk = os.read(fin, _COPY_CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fout, view):]
            os.fsync(fout)
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _bring(shard: Path, files: list[tuple[str, os.stat_result]], shards_dir: Path,
           result: MergeIntoResult) -> None:
    """Assemble ``shard`` in a hidden folder of ``shards_dir`` (links, else copies), then rename
    it to its id: it appears whole or not at all."""
    tmp = shards_dir / f"{_INCOMING}{shard.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    linked = copied = 0
    any_copied = False
    try:
        if any(name.startswith(STREAMS_DIR + "/") for name, _st in files):
            (tmp / STREAMS_DIR).mkdir()
        for name, st in files:
            src, dst = shard / name, tmp / name
            try:
                os.link(src, dst, follow_symlinks=False)
                linked += st.st_size
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                     errno.EOPNOTSUPP, errno.EACCES):
                    raise
            _copy_file(src, dst, st)
            copied += st.st_size
            any_copied = True
        for sub in ((tmp / STREAMS_DIR,) if (tmp / STREAMS_DIR).is_dir() else ()):
            fsync_directory(sub)
        fsync_directory(tmp)
        os.rename(tmp, shards_dir / shard.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(shards_dir)
    (result.copied if any_copied else result.linked).append(shard.name)
    result.linked_bytes += linked
    result.copied_bytes += copied


def _clear_incoming(shards_dir: Path) -> None:
    """Hidden folders an interrupted merge --into left behind (only its own, never a link)."""
    with os.scandir(shards_dir) as it:
        for entry in it:
            if entry.name.startswith(_INCOMING) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


# ---------------------------------------------------------------------------------- merge_into


def _experiment_doc(into: Path, sources: Sequence[_Source], record: dict[str, Any]
                    ) -> dict[str, Any]:
    """``D/experiment.json`` before its index is merged: the config and plan of the inputs (the
    largest replication count), and every run that made the inputs, plus this merge."""
    own = read_experiment_json(into) or {}
    infos = [own] + [s.info or {} for s in sources]
    base = next((i for i in infos if i.get("config") is not None), own)
    plans = [i["plan"] for i in infos if isinstance(i.get("plan"), dict)]
    plan = None
    if plans:
        plan = {"points": max(int(p.get("points", 0)) for p in plans),
                "replications": max(int(p.get("replications", 0)) for p in plans)}
    runs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for info in infos:
        for run in info.get("runs", []) or []:
            if isinstance(run, dict) and str(run.get("run_id")) not in seen:
                seen.add(str(run.get("run_id")))
                runs.append(run)
    runs.append(record)
    doc = dict(own)
    doc.update({
        "format": INDEX_FORMAT,
        "experiment": own.get("experiment") or base.get("experiment"),
        "fingerprint": own.get("fingerprint") or next(
            (s.fingerprint for s in sources if s.fingerprint), None),
        "config": own.get("config") or base.get("config"),
        "overrides": own.get("overrides") or base.get("overrides", []),
        "config_path": own.get("config_path") or base.get("config_path"),
        "git_commit": own.get("git_commit") or base.get("git_commit"),
        "plan": plan,
        "created": own.get("created", _now_iso()),
        "runs": runs,
    })
    return doc


def merge_into(sources: Sequence[str | os.PathLike[str]],
               into: str | os.PathLike[str]) -> MergeIntoResult:
    """Combine the outputs ``sources`` of one experiment into ``into`` (module docstring).

    Raises :class:`~disco_data_logger.errors.ExperimentMismatchError` (configs differ),
    :class:`~disco_data_logger.errors.NotAnExperimentError` (an input is not an experiment),
    :class:`~disco_data_logger.errors.UnsafePathError` (a target that is not safe to write) or
    :class:`~disco_data_logger.errors.ExperimentLockedError` (a run holds an input or the
    target), each before anything is written.
    """
    if not sources:
        raise NotAnExperimentError("merge --into: give at least one experiment to merge")
    for location in (*sources, into):
        if is_uri(location):
            raise UnsafePathError(
                f"merge --into combines experiment directories on this machine; {location} is "
                "in object storage: copy it to a local directory first (an experiment already "
                "in one store needs no combining: every worker of it writes there)")
    dest = Path(into)
    paths: list[Path] = []
    for s in map(Path, sources):
        if not any(s.resolve() == p.resolve() for p in paths):
            paths.append(s)
    is_input = _check_target(dest, paths)
    read = [_read_source(p) for p in paths]
    if dest.is_dir() and not is_input and any(dest.iterdir()):
        read_target = _read_source(dest, writing=True)
        _check_same([read_target, *read])
    _check_same(read)
    for src in read:
        if src.path.resolve() == dest.resolve():
            continue
        holders = live_holders(src.path)
        if holders:
            raise UnsafePathError(
                f"{src.path} is being run now ({holders[0].describe()}; lock file "
                f"{holders[0].path}); merge it when the run has ended (its shards still grow)")
    result = MergeIntoResult(into=dest, sources=paths)
    dest.mkdir(parents=True, exist_ok=True)
    with ExperimentLock(dest) as lock:
        shards_dir = dest / SHARDS_DIR
        if shards_dir.is_symlink():
            raise UnsafePathError(f"{shards_dir} is a symbolic link; nothing is written through "
                                  "links")
        shards_dir.mkdir(exist_ok=True)
        _clear_incoming(shards_dir)
        for src in read:
            if src.path.resolve() == dest.resolve():
                result.present += [s.name for s in src.shards]
                continue
            for shard in src.shards:
                files = _shard_files(shard)
                there = shards_dir / shard.name
                if os.path.lexists(there):
                    if not there.is_symlink() and there.is_dir() and \
                            {n for n, _ in _shard_files(there)} == {n for n, _ in files} and \
                            all(_same_file(shard / n, st, there / n) for n, st in files):
                        result.present.append(shard.name)
                    else:
                        result.skipped.append(shard.name)
                        _warn(f"{there}: a different shard of the same id is already there; "
                              f"{shard} was not merged (the one in {dest} is kept)")
                    continue
                _bring(shard, files, shards_dir, result)
        brought = bool(result.linked or result.copied)
        record = {
            "run_id": lock.run_id, "started": _now_iso(), "finished": _now_iso(),
            "backend": "merge", "state": "merged", "host": socket.gethostname(),
            "pid": os.getpid(),
            "merged_from": [str(p.absolute()) for p in paths],
            "shards": {"linked": len(result.linked), "copied": len(result.copied),
                       "present": len(result.present), "skipped": len(result.skipped)},
        }
        doc = _experiment_doc(dest, read, record)
        previous = read_experiment_json(dest, warn=False) or {}
        if brought or doc["plan"] != previous.get("plan") or not previous:
            atomic_write_json(dest / EXPERIMENT_JSON, doc)
        # With nothing brought and nothing new, the merge reads three files and writes none:
        # merging the same inputs again changes nothing.
        result.index = merge(dest)
    return result
