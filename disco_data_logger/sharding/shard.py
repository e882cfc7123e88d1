"""ShardWriter: one process's native writer plus the journal of what it committed.

A shard is the output of one worker process: ``<output>/shards/<shard_id>/`` holds one
:class:`~disco_data_logger.DataLogger` directory (segments and ``_DONE``, no per-stream sidecars)
and the shard's commit journal (:mod:`.manifest`). The writer runs many replications in turn;
each is opened with :meth:`ShardWriter.begin` (or the :meth:`ShardWriter.replication` context
manager) and becomes part of the experiment only by :meth:`Replication.commit`, which records
the replication's streams, record counts and epoch ranges in the journal. Records of a
replication that raised, or whose process died, stay in the segments but are never listed, so
queries (which select by the journal's stream ids) never see them. This is also the public API
for users who bring their own ``multiprocessing.Pool`` or Ray tasks: open a ShardWriter in each
worker, then call :func:`~disco_data_logger.sharding.merge`.

**Group commits.** A commit is durable once the logger has been flushed and the journal frame
holding it has been fsynced. With ``commit_group=1`` (the default) every :meth:`Replication.commit`
does both before it returns. With ``commit_group=N`` commits are staged and made durable
together by :meth:`ShardWriter.sync`, which the shard calls itself once ``N`` are staged; the
caller calls it sooner (the service's workers do when they have nothing queued or the oldest
staged commit is ``commit_delay`` seconds old) and reports a replication as committed only after
the sync that made it durable. A process killed before that sync loses the staged commits: they
were never reported, so they are run again.

**Ctrl-C.** A commit, a sync and a close are never cut by Ctrl-C: one that arrives during them is
raised when they return (:mod:`.interrupts`), so a journal never holds a commit twice.

Once a replication is durable (or aborted) its streams are retired from the logger
(:meth:`DataLogger.retire_streams`), so a shard's memory does not grow with the replications it
has run.

**Object storage.** With a URI as ``output_dir`` (``s3://bucket/prefix``), the shard is staged
on node-local scratch and every sync also publishes what it made durable to the store
(:mod:`.publish`): a commit is durable, and reported so, only once its records and its journal
frame are objects in the store.
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

from ..errors import WriterError
from ..layout import DONE_MARKER
from .interrupts import whole
from .layout import SHARD_ID_RE, SHARDS_DIR
from .manifest import (
    JournalWriter,
    SegmentCoverage,
    StreamCommit,
    plain_stats,
    segments_summary,
    split_sidecar,
)
from .storage import is_uri

__all__ = ["ShardWriter", "Replication", "new_shard_id", "check_shard_id", "SHARDS_DIR"]

STATS_INTERVAL = 5.0
"""Seconds between the logger statistics a shard writes into its journal while it runs."""


def check_shard_id(shard_id: str) -> str:
    """Refuse ids that could escape ``shards/`` or clash with hidden files."""
    if not isinstance(shard_id, str) or not SHARD_ID_RE.match(shard_id):
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

    @whole
    def commit(self) -> dict[str, Any]:
        """Record the replication in the journal: its commit point.

        Durable when this returns if the shard commits one replication at a time
        (``commit_group=1``), else after the :meth:`ShardWriter.sync` that writes its group
        (``durable`` in the result says which). Returns a summary of what was committed.
        """
        self._check_open()
        shard = self.shard
        raw = shard._logger
        counters = raw.stream_stats(self.stream_ids) if self.stream_ids else {}
        streams = []
        records = 0
        for sid in self.stream_ids:
            labels, meta = split_sidecar(raw.stream_info(sid))
            n, lo, hi = counters.get(sid, (0, math.nan, math.nan))
            records += int(n)
            streams.append(StreamCommit(sid, labels, meta, int(n), _finite_or_none(lo),
                                        _finite_or_none(hi)))
        finished = time.time()
        seconds = time.perf_counter() - self._t0
        shard._journal.stage_commit(
            {"task_id": self.task_id, **self.info, "finished": finished, "seconds": seconds},
            streams)
        self.done = True
        shard._current = None
        shard.committed += 1
        shard._stage(self.task_id, self.stream_ids)
        durable = shard.commit_group <= 1 or shard.staged >= shard.commit_group
        if durable:
            shard.sync()
        return {
            "task_id": self.task_id,
            **self.info,
            "shard_id": shard.shard_id,
            "started": self.started,
            "finished": finished,
            "seconds": seconds,
            "streams": len(streams),
            "records": records,
            "durable": durable,
        }

    @whole
    def abort(self, error: BaseException | str | None = None) -> None:
        """Record the failure; the replication's records stay out of the experiment."""
        self._check_open()
        self.done = True
        shard = self.shard
        shard._current = None
        if isinstance(error, BaseException):
            message = _one_line(error)
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            if isinstance(error, WriterError):
                shard._writer_error = message
        else:
            message = error or "aborted"
            detail = None
        failure = {
            "task_id": self.task_id,
            **{k: v for k, v in self.info.items() if k != "params"},
            "started": self.started,
            "finished": time.time(),
            "error": message,
        }
        if detail:
            failure["traceback"] = detail
        shard.failed += 1
        shard._journal.stage_failure(failure)
        shard._retire.extend(self.stream_ids)
        if shard.commit_group <= 1 and not shard._closing:
            try:
                shard.sync()
            except OSError:
                pass  # a failure note is informative only; the replication is uncommitted anyway

    def _check_open(self) -> None:
        if self.done:
            raise RuntimeError(f"replication {self.task_id!r} was already committed or aborted")


class ShardWriter:
    """One worker's writer: a DataLogger under ``<output>/shards/<shard_id>/`` plus its journal.

    Use one per process (a DataLogger is not shared between processes), for the process's whole
    life, and close it at the end so that its journal lists the segment files with checksums::

        with ShardWriter(output_dir) as shard:
            for task_id in my_tasks:
                with shard.replication(task_id, replication=n) as rep:
                    sid = rep.logger.register_stream({"measure": "stock"}, value_scale=0.01)
                    rep.logger.record(sid, 0.0, [1, 2], [3.0, 4.0])
        disco_data_logger.merge(output_dir)

    A replication's streams must be registered through ``rep.logger`` (or ``shard.logger``) while
    it is open: that is how the journal knows which records belong to it. ``commit_group``: see
    the module docstring (group commits).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        shard_id: str | None = None,
        *,
        logger_kwargs: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
        commit_group: int = 1,
        storage: Any = None,
    ) -> None:
        from ..logger import DataLogger

        if isinstance(commit_group, bool) or not isinstance(commit_group, int) or \
                commit_group < 1:
            raise ValueError(f"commit_group must be a positive integer (got {commit_group!r})")
        self.shard_id = check_shard_id(shard_id) if shard_id is not None else new_shard_id()
        self._publisher: Any = None
        if is_uri(output_dir):
            self._publisher = _staging_publisher(str(output_dir), self.shard_id, storage)
            self.output_dir: Path | str = self._publisher.store.uri
            self.path = self._publisher.local_dir
            logger_kwargs = _staged_kwargs(logger_kwargs)
        else:
            self.output_dir = Path(output_dir)
            self.path = self.output_dir / SHARDS_DIR / self.shard_id
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.path.mkdir()
            except FileExistsError:
                raise FileExistsError(
                    f"shard directory {self.path} already exists: every ShardWriter needs its "
                    "own shard id (leave shard_id=None for a fresh one)"
                ) from None
        self.commit_group = commit_group
        self.committed = 0
        self.failed = 0
        self._current: Replication | None = None
        self._closed = False
        self._closing = False
        self._staged_ids: list[str] = []
        self._staged_since = 0.0
        self._retire: list[int] = []
        self._writer_error: str | None = None
        self._stats_at = 0.0
        try:
            self._logger = DataLogger(self.path, sidecars=False, **dict(logger_kwargs or {}))
        except BaseException:
            if self._publisher is not None:
                self._publisher.discard()
            raise
        try:
            self._journal = JournalWriter(self.path, self.shard_id, fingerprint)
            if self._publisher is not None:
                # The shard exists in the store from its first frame on, as on a disk.
                self._publisher.publish([], self._journal.bytes)
        except BaseException:
            self._logger.close()
            if self._publisher is not None:
                self._publisher.discard()
            raise
        self._coverage = SegmentCoverage(self.path)
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

    # -- group commits ------------------------------------------------------------------------

    def _stage(self, task_id: str, stream_ids: list[int]) -> None:
        if not self._staged_ids:
            self._staged_since = time.monotonic()
        self._staged_ids.append(task_id)
        self._retire.extend(stream_ids)

    @property
    def staged(self) -> int:
        """Commits staged and not yet durable."""
        return len(self._staged_ids)

    @property
    def staged_age(self) -> float:
        """Seconds since the oldest staged commit (0 when none is staged)."""
        return time.monotonic() - self._staged_since if self._staged_ids else 0.0

    @whole
    def sync(self) -> list[str]:
        """Make every staged commit durable: flush the logger, then append and fsync one journal
        frame. Returns the task ids that became durable (in commit order).

        Staged failure notes are written too (they need no flush). If the logger cannot flush
        (a writer failure), the staged commits are dropped, never written, and the error
        propagates.
        """
        if not self._journal.staged:
            return []
        sync: list[list[int]] = []
        if self._staged_ids:
            try:
                self._logger.flush()
            except WriterError as exc:
                # The staged replications' records may not be on disk: never commit them.
                self._writer_error = _one_line(exc)
                self._journal.discard_commits()
                self._staged_ids = []
                self._journal.write_group([], None)  # the failure notes, if any
                raise
            sync = self._coverage.advance()
        stats = None
        now = time.monotonic()
        if self._staged_ids and now - self._stats_at >= STATS_INTERVAL:
            self._stats_at = now
            stats = plain_stats(self._logger.stats())
        flushed = bool(self._staged_ids)
        self._journal.write_group(sync, stats)
        durable, self._staged_ids = self._staged_ids, []
        if flushed and self._retire:
            # Only after a flush: every record of these streams has left the logger's buffers.
            retire, self._retire = self._retire, []
            self._logger.retire_streams(retire)
        if self._publisher is not None:
            # Durable only once in the store; if this raises, none of them is reported (what is
            # not published goes out with the next sync, and the index keeps a first commit).
            self._publisher.publish(sync, self._journal.bytes)
        return durable

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @whole
    def close(self) -> list[str]:
        """Sync, close the logger (``_DONE``) and append the journal's ``close`` record with the
        segment files' sizes and checksums. Returns the task ids the final sync made durable.

        An open replication is aborted first: it did not finish, so it is not committed. After a
        writer failure the close record says ``writer_failed`` (and no ``_DONE`` is written).
        """
        if self._closed:
            return []
        self._closed = True
        self._closing = True
        if self._current is not None:
            self._current.abort("shard closed before the replication was committed")
        durable: list[str] = []
        failure: BaseException | None = None
        try:
            durable = self.sync()
        except BaseException as exc:  # noqa: BLE001 - recorded below, re-raised after
            failure = exc
        try:
            self._logger.close()
        except BaseException as exc:  # noqa: BLE001 - recorded below, re-raised after
            if isinstance(exc, WriterError):
                self._writer_error = _one_line(exc)
            failure = failure or exc
        clean = (self.path / DONE_MARKER).exists() and failure is None \
            and self._writer_error is None
        summary: list[dict[str, Any]] | None = None
        if self._publisher is not None and failure is None:
            try:
                # The last segment's footer (written by close) goes out with the close line.
                self._publisher.publish_data(self._coverage.advance())
                summary = self._publisher.segments_summary()
            except OSError as exc:
                failure = exc
                clean = False
        close: dict[str, Any] = {"state": "closed" if clean else "writer_failed",
                                 "commits": self._journal.commits,
                                 "failures": self._journal.failures}
        if not clean:
            close["error"] = self._writer_error or (_one_line(failure) if failure else
                                                     "the logger did not close cleanly")
        try:
            close["stats"] = plain_stats(self._logger.stats())
        except Exception:  # noqa: BLE001 - statistics are informative only
            pass
        try:
            close["segments"] = summary if summary is not None else \
                segments_summary(self.path) if self._publisher is None else []
            self._journal.write_close(close)
        except OSError:
            if failure is None:
                raise
        finally:
            self._journal.close()
        if self._publisher is not None:
            if failure is None:
                # The close line, then _DONE; then the scratch goes.
                self._publisher.finish(self._journal.bytes, done=clean)
            else:
                self._publisher.release()
        if failure is not None:
            raise failure
        return durable

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<ShardWriter {self.shard_id} {state}, {self.committed} committed at {self.path}>"


def _staging_publisher(uri: str, shard_id: str, storage: Any) -> Any:
    from .publish import ShardPublisher
    from .storage import ObjectStore

    return ShardPublisher(ObjectStore(uri, storage), shard_id)


def _staged_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    from .publish import staging_logger_kwargs

    return staging_logger_kwargs(kwargs)


def _finite_or_none(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
