"""Where a command may write and what it may delete, decided in one place.

The service's commands are handed paths by users, by configs and by the files they read, any of
which may be wrong or hostile. The rules:

* an **experiment directory** is one with a ``shards/`` directory, an ``index/streams.parquet``
  or a ``run.lock``; a **logger directory** one with a segment file (``NNNNN.seg.zst``), a
  ``_DONE`` marker or a shard journal (``manifest.jsonl``). Nothing that is, contains or lies
  inside one of them is ever deleted by ``export --overwrite``, and an export never writes into
  one (:func:`check_export_target`);
* ``--overwrite`` deletes only what an export writes: Parquet files in ``key=value``
  directories. A directory holding anything else is refused, not emptied;
* symbolic links are never followed to write or delete: a link where a directory should be is
  refused (:func:`check_export_target`, and the coordinator for ``shards/`` and ``index/``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UnsafePathError
from ..layout import DONE_MARKER, SEGMENT_NAME_RE
from .layout import EXPERIMENT_JSON, INDEX_DIR, JOURNAL_NAME, LOCK_NAME, SHARDS_DIR

__all__ = ["check_export_target", "check_store_export_target", "enclosing_experiment_or_logger",
           "experiment_or_logger_kind", "is_inside", "refuse_links"]


def experiment_or_logger_kind(path: Path) -> str | None:
    """``"experiment"``, ``"logger"`` or None: what the directory ``path`` is (not following a
    link at ``path`` itself; unreadable directories count as nothing)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return None
        names = set(os.listdir(path))
    except OSError:
        return None
    if (SHARDS_DIR in names and (path / SHARDS_DIR).is_dir()) or LOCK_NAME in names \
            or (INDEX_DIR in names and (path / INDEX_DIR / "streams.parquet").exists()):
        return "experiment"
    if DONE_MARKER in names or JOURNAL_NAME in names \
            or any(SEGMENT_NAME_RE.match(n) for n in names):
        return "logger"
    return None


def enclosing_experiment_or_logger(path: Path) -> tuple[str, Path] | None:
    """The nearest directory above ``path`` that is an experiment or a logger directory, with
    its kind (:func:`experiment_or_logger_kind`); None when there is none."""
    for parent in path.parents:
        kind = experiment_or_logger_kind(parent)
        if kind is not None:
            return kind, parent
    return None


def is_inside(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or lies below it (both resolved by the caller)."""
    return path == root or root in path.parents


def _export_content_problem(out: Path) -> str | None:
    """Why ``out`` (an existing directory) is not just a previous export, or None."""
    for top, dirs, files in os.walk(out, followlinks=False):
        here = Path(top)
        for name in dirs:
            sub = here / name
            if sub.is_symlink():
                return f"holds the symbolic link {sub}, which an export does not write"
            kind = experiment_or_logger_kind(sub)
            if kind is not None:
                return f"contains the {kind} directory {sub}"
            if "=" not in name:
                return f"holds the directory {sub}, which is not a key=value partition"
        for name in files:
            file = here / name
            if file.is_symlink() or not file.is_file():
                return f"holds {file}, which is not a regular file"
            if not name.endswith(".parquet"):
                return f"holds {file}, which an export does not write"
    return None


def check_export_target(out: Path, source: Path, *, overwrite: bool) -> None:
    """Refuse an export to ``out`` of the experiment at ``source`` unless it is safe.

    Refused, before anything is written or deleted: ``out`` a symbolic link; ``out`` the source,
    inside it or containing it; ``out`` inside, or containing, any experiment or logger
    directory; ``out`` an existing non-empty directory without ``overwrite``
    (:class:`FileExistsError`), or with ``overwrite`` but holding anything an export does not
    write (:class:`~disco_data_logger.errors.UnsafePathError`).
    """
    if out.is_symlink():
        raise UnsafePathError(f"{out} is a symbolic link; export to a directory (the export "
                              "neither writes nor deletes through links)")
    target = out.resolve()
    src = source.resolve()
    if is_inside(target, src):
        beside = source.parent / f"{source.name}-parquet"
        raise UnsafePathError(f"{out} lies inside the experiment {source} being exported; "
                              f"export next to it, e.g. {beside}")
    if is_inside(src, target):
        raise UnsafePathError(f"{out} contains the experiment {source} being exported; "
                              "choose a directory of its own")
    enclosing = enclosing_experiment_or_logger(target)
    if enclosing is not None:
        outer_kind, parent = enclosing
        raise UnsafePathError(f"{out} lies inside the {outer_kind} directory {parent}; export to "
                              "a directory outside it")
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise UnsafePathError(f"{out} exists and is not a directory")
    kind = experiment_or_logger_kind(out)
    if kind is not None:
        article = "an" if kind == "experiment" else "a"
        raise UnsafePathError(f"{out} is {article} {kind} directory; refusing to export into it")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty; choose another directory or overwrite it")
    problem = _export_content_problem(out)
    if problem is not None:
        raise UnsafePathError(f"refusing to overwrite {out}: it {problem}; --overwrite only "
                              "replaces a previous export (Parquet files in key=value "
                              "directories)")


def refuse_links(output: Path, names: tuple[str, ...]) -> None:
    """Refuse to write an experiment's own entries ``names`` (``index``, ``experiment.json``)
    through a symbolic link: what it points to lies outside the experiment."""
    for name in names:
        path = output / name
        if path.is_symlink():
            raise UnsafePathError(f"{path} is a symbolic link (to {os.readlink(path)}); refusing "
                                  f"to write through it: the experiment's {name} must be inside "
                                  "its directory (remove the link)")


def check_store_export_target(store: Any, source: str, *, overwrite: bool) -> list[str]:
    """The object-store form of :func:`check_export_target`; returns the objects an
    ``overwrite`` replaces (a previous export's), after refusing, before anything is written:
    a target that is, lies inside or contains the exported experiment (``source``, a path or
    URI); a target that holds an experiment's objects (``shards/``, ``index/``,
    ``experiment.json``, a lock); a non-empty target without ``overwrite``
    (:class:`FileExistsError`), or with it but holding anything an export does not write.
    """
    target = store.uri.rstrip("/")
    here = source.rstrip("/")
    if target == here or target.startswith(here + "/"):
        raise UnsafePathError(f"{target} lies inside the experiment {source} being exported; "
                              f"export next to it, e.g. {here}-parquet")
    if here.startswith(target + "/"):
        raise UnsafePathError(f"{target} contains the experiment {source} being exported; "
                              "choose a prefix of its own")
    existing = store.list("")
    for name in existing:
        parts = name.split("/")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if (not last and part in (SHARDS_DIR, INDEX_DIR)) or \
                    (last and part in (EXPERIMENT_JSON, LOCK_NAME)):
                inner = "/".join(parts[:i]) or "."
                raise UnsafePathError(f"{target}: {store.display(name)} belongs to an experiment "
                                      f"(at {inner} under the target); refusing to export into "
                                      "it")
    if not existing:
        return []
    if not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; choose another prefix or "
                              "overwrite it")
    for name in existing:
        parts = name.split("/")
        if not parts[-1].endswith(".parquet") or not all("=" in p for p in parts[:-1]) \
                or any(p.startswith(".") for p in parts):
            raise UnsafePathError(f"refusing to overwrite {target}: it holds {store.display(name)}"
                                  ", which an export does not write; --overwrite only replaces "
                                  "a previous export (Parquet files in key=value prefixes)")
    return sorted(existing)
