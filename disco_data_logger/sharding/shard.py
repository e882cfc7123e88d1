"""ShardWriter: one process's native writer plus the manifest of what it committed.

A shard is the output of one worker process: ``<output>/shards/<shard_id>/`` holds one
:class:`~disco_data_logger.DataLogger` directory (segments, ``streams/``, ``_DONE``) and the shard
manifest (:mod:`.manifest`). The writer runs many replications in turn; each is opened with
:meth:`ShardWriter.begin` (or the :meth:`ShardWriter.replication` context manager) and becomes part
of the experiment only by :meth:`Replication.commit`, which flushes the logger and then appends the
replication's streams, record counts and epoch ranges to the manifest. Records of a replication that
raised, or whose process died, stay in the segments but are never listed, so queries (which select
by the manifest's stream ids) never see them. This is also the public API for users who bring their
own ``multiprocessing.Pool`` or Ray tasks: open a ShardWriter in each worker, then call
:func:`~disco_data_logger.sharding.merge`.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import socket
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .layout import SHARDS_DIR
from .manifest import ManifestJournal, split_sidecar

__all__ = ["ShardWriter", "Replication", "new_shard_id", "check_shard_id", "SHARDS_DIR"]

_SHARD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_shard_id(shard_id: str) -> str:
    """Refuse ids that could escape ``shards/`` or clash with hidden files."""
    if not isinstance(shard_id, str) or not _SHARD_ID_RE.match(shard_id):
        raise ValueError(
            f"shard id {shard_id!r} is not safe: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return shard_id


def new_shard_id(prefix: str = "shard") -> str:
    """A fresh id, unique across hosts and restarts: prefix, host, pid and a random token."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40].strip("-") or "host"
    return check_shard_id(f"{prefix}-{host}-{os.getpid()}-{secrets.token_hex(3)}")


class _TrackingLogger:
    """The shard's DataLogger as a model sees it: registrations go to the open replication.

    Everything else is forwarded unchanged, so models use it exactly like a DataLogger.
    """

    def __init__(self, shard: ShardWriter, logger: Any) -> None:
        self._shard = shard
        self._logger = logger

    def register_stream(self, labels: Mapping[str, Any], **kwargs: Any) -> int:
        rep = self._shard._require_open("register a stream")
        sid = self._logger.register_stream(labels, **kwargs)
        rep.stream_ids.append(int(sid))
        return int(sid)

    def register_periodic_stream(self, labels: Mapping[str, Any], **kwargs: Any) -> Any:
        rep = self._shard._require_open("register a periodic stream")
        stream = self._logger.register_periodic_stream(labels, **kwargs)
        rep.stream_ids.append(int(stream.stream_id))
        return stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def __repr__(self) -> str:
        return f"<shard logger {self._shard.shard_id} of {self._logger!r}>"


class Replication:
    """One replication being recorded into a shard; commit it or abort it, exactly once."""

    def __init__(self, shard: ShardWriter, task_id: str, info: dict[str, Any]) -> None:
        self.shard = shard
        self.task_id = task_id
        self.info = info
        self.stream_ids: list[int] = []
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.done = False

    @property
    def logger(self) -> Any:
        """The logger to register this replication's streams with and record into."""
        return self.shard.logger

    def commit(self) -> dict[str, Any]:
        """Flush, then make the replication part of the shard manifest (its commit point)."""
        self._check_open()
        shard = self.shard
        raw_logger = shard._logger
        raw_logger.flush()
        stats = raw_logger.stream_stats(self.stream_ids)
        streams = []
        for sid in self.stream_ids:
            sidecar = shard._sidecar(sid)
            labels, meta = split_sidecar(sidecar)
            records, lo, hi = stats.get(sid, (0, math.nan, math.nan))
            streams.append({
                "stream_id": sid,
                "labels": labels,
                "epoch_scale": meta.get("epoch_scale"),
                "value_scale": meta.get("value_scale"),
                "periodicity": meta.get("periodicity"),
                "kind": meta.get("kind"),
                "records": int(records),
                "min_epoch": _finite_or_none(lo),
                "max_epoch": _finite_or_none(hi),
            })
        finished = time.time()
        entry = {
            "task_id": self.task_id,
            **self.info,
            "shard_id": shard.shard_id,
            "started": self.started,
            "finished": finished,
            "seconds": time.perf_counter() - self._t0,
            "streams": streams,
        }
        shard._journal.commit(entry, stats=_plain_stats(raw_logger.stats()))
        self.done = True
        shard._current = None
        shard.committed += 1
        return entry

    def abort(self, error: BaseException | str | None = None) -> None:
        """Record the failure; the replication's records stay out of the experiment."""
        self._check_open()
        self.done = True
        self.shard._current = None
        if isinstance(error, BaseException):
            message = _one_line(error)
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        else:
            message = error or "aborted"
            detail = None
        failure = {
            "task_id": self.task_id,
            **self.info,
            "shard_id": self.shard.shard_id,
            "started": self.started,
            "finished": time.time(),
            "error": message,
        }
        if detail:
            failure["traceback"] = detail
        self.shard.failed += 1
        try:
            self.shard._journal.fail(failure)
        except OSError:
            pass  # a failure note is informative only; the replication is uncommitted anyway

    def _check_open(self) -> None:
        if self.done:
            raise RuntimeError(f"replication {self.task_id!r} was already committed or aborted")


class ShardWriter:
    """One worker's writer: a DataLogger under ``<output>/shards/<shard_id>/`` plus its manifest.

    Use one per process (a DataLogger is not shared between processes), for the process's whole
    life, and close it at the end so that its manifest lists the segment files with checksums::

        with ShardWriter(output_dir) as shard:
            for task_id in my_tasks:
                with shard.replication(task_id, replication=n) as rep:
                    sid = rep.logger.register_stream({"measure": "stock"}, value_scale=0.01)
                    rep.logger.record(sid, 0.0, [1, 2], [3.0, 4.0])
        disco_data_logger.merge(output_dir)

    A replication's streams must be registered through ``rep.logger`` (or ``shard.logger``) while
    it is open: that is how the manifest knows which records belong to it.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        shard_id: str | None = None,
        *,
        logger_kwargs: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        from ..logger import DataLogger

        self.shard_id = check_shard_id(shard_id) if shard_id is not None else new_shard_id()
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / SHARDS_DIR / self.shard_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir()
        except FileExistsError:
            raise FileExistsError(
                f"shard directory {self.path} already exists: every ShardWriter needs its own "
                "shard id (leave shard_id=None for a fresh one)"
            ) from None
        self.committed = 0
        self.failed = 0
        self._current: Replication | None = None
        self._closed = False
        self._logger = DataLogger(self.path, **dict(logger_kwargs or {}))
        try:
            self._journal = ManifestJournal(self.path, self.shard_id, fingerprint)
        except BaseException:
            self._logger.close()
            raise
        self.logger: Any = _TrackingLogger(self, self._logger)

    # -- replications -------------------------------------------------------------------------

    def begin(
        self,
        task_id: str,
        *,
        replication: int | None = None,
        point_id: str | None = None,
        point_index: int | None = None,
        params: Mapping[str, Any] | None = None,
        attempt: int = 1,
    ) -> Replication:
        """Open a replication; exactly one can be open at a time in a shard."""
        if self._closed:
            raise RuntimeError(f"shard {self.shard_id} is closed")
        if self._current is not None:
            raise RuntimeError(
                f"shard {self.shard_id}: replication {self._current.task_id!r} is still open; "
                "commit or abort it before beginning another"
            )
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"task_id must be a non-empty string (got {task_id!r})")
        info = {
            "replication": replication,
            "point_id": point_id,
            "point_index": point_index,
            "params": dict(params or {}),
            "attempt": int(attempt),
        }
        self._current = Replication(self, task_id, info)
        return self._current

    @contextmanager
    def replication(self, task_id: str, **info: Any) -> Iterator[Replication]:
        """Begin a replication; commit it when the block ends, abort it if the block raises."""
        rep = self.begin(task_id, **info)
        try:
            yield rep
        except BaseException as exc:
            if not rep.done:
                rep.abort(exc)
            raise
        if not rep.done:
            rep.commit()

    def _require_open(self, what: str) -> Replication:
        if self._current is None:
            raise RuntimeError(
                f"shard {self.shard_id}: cannot {what} outside a replication; call "
                "shard.begin(task_id) (or use `with shard.replication(task_id):`) first"
            )
        return self._current

    def _sidecar(self, sid: int) -> dict[str, Any]:
        # O(1) per stream, so a commit costs O(streams of the replication), not of the shard.
        return self._logger.stream_info(sid)

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the logger (``_DONE``) and write ``manifest.json`` with segment checksums.

        An open replication is aborted first: it did not finish, so it is not committed.
        """
        if self._closed:
            return
        self._closed = True
        if self._current is not None:
            self._current.abort("shard closed before the replication was committed")
        try:
            self._logger.close()
        except BaseException:
            self._journal.abandon()
            raise
        stats = None
        try:
            stats = _plain_stats(self._logger.stats())
        except Exception:
            pass
        self._journal.close(sorted(self.path.glob("*.seg.zst")), stats)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ShardWriter {self.shard_id} {state}, {self.committed} committed at {self.path}>"


def _finite_or_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _plain_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if isinstance(v, int | float | str | bool)}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
