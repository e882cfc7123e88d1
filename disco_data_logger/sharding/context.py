"""The run context: everything one replication of a model sees.

A model is a function ``run(ctx)``. The context carries the task's identity, its own random
generator (from the task's SeedSequence, so results do not depend on the worker; and
``ctx.rng_for(purpose)``, one generator per source of randomness, which keeps common random
numbers in step across sweep points), the merged
parameters, the simulated duration and the streams the config declares, already registered in
the worker's logger with the experiment labels merged in. The logger belongs to the worker (a
shard writer runs many replications in turn); the context only closes the periodic streams it
opened.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnknownStreamError
from .config import ExperimentConfig, StreamSpec
from .planning import Task

if TYPE_CHECKING:
    from ..logger import DataLogger
    from ..periodic import PeriodicStream

__all__ = ["RunContext", "open_context", "stream_labels"]

_PURPOSE_KEY = 0x5EED
"""Marks the spawn keys of ``rng_for`` generators; numpy's own spawns never append it."""


def stream_labels(cfg: ExperimentConfig, task: Task, spec: StreamSpec) -> dict[str, Any]:
    """The labels a declared stream is registered with for one task.

    The config refuses stream labels that clash with the service's, so the order of the merge
    only matters for configs built around that check; the service's labels would win.
    """
    return {
        **spec.labels,
        "stream": spec.name,
        **_task_labels(cfg, task),
    }


def _task_labels(cfg: ExperimentConfig, task: Task) -> dict[str, Any]:
    return {
        "organisation": cfg.experiment.organisation,
        "model": cfg.experiment.model,
        "experiment": cfg.experiment.name,
        "replication": task.replication,
        "point_id": task.point_id,
        **task.point_params,
    }


class RunContext:
    """What ``run(ctx)`` gets for one replication; built by :func:`open_context`."""

    config: ExperimentConfig
    task: Task
    replication: int
    task_id: str
    point_id: str
    params: dict[str, Any]
    rng: np.random.Generator
    logger: DataLogger
    duration: float
    labels: dict[str, Any]
    streams: dict[str, int | PeriodicStream]

    def __init__(
        self,
        config: ExperimentConfig,
        task: Task,
        logger: DataLogger,
        streams: Mapping[str, int | PeriodicStream],
    ) -> None:
        self.config = config
        self.task = task
        self.replication = task.replication
        self.task_id = task.task_id
        self.point_id = task.point_id
        self.params = {**config.parameters, **task.point_params}
        self.rng = np.random.default_rng(task.seed_sequence())
        self.logger = logger
        self.duration = config.duration
        self.labels = _task_labels(config, task)
        self.streams = dict(streams)
        self._closed = False
        self._purpose_rngs: dict[str, np.random.Generator] = {}

    def rng_for(self, purpose: str) -> np.random.Generator:
        """A generator of its own for one source of randomness (``"arrivals"``, ``"demand"``).

        Derived from the task's SeedSequence and the name only, so it is the same whichever other
        generators the model uses or how many numbers it draws from them. With ``seeding:
        common`` that is what keeps common random numbers in step: replication r of two sweep
        points draws the same arrivals even when their service draws differ in number. The
        same name returns the same generator (it continues where it stopped).
        """
        if not isinstance(purpose, str) or not purpose:
            raise ValueError(f"purpose must be a non-empty string (got {purpose!r})")
        rng = self._purpose_rngs.get(purpose)
        if rng is None:
            seq = self.task.seed_sequence()
            key = (*seq.spawn_key, _PURPOSE_KEY, zlib.crc32(purpose.encode("utf-8")))
            rng = np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=key))
            self._purpose_rngs[purpose] = rng
        return rng

    def stream(self, name: str) -> int | PeriodicStream:
        """The stream id (plain stream) or PeriodicStream registered for a declared stream."""
        try:
            return self.streams[name]
        except KeyError:
            declared = ", ".join(self.streams) or "none"
            raise UnknownStreamError(
                f"stream {name!r} is not declared in the config of experiment"
                f" {self.config.experiment.name!r} (declared: {declared}); add it under streams:"
            ) from None

    def record(self, name: str, epoch: float, indices: Any, values: Any) -> None:
        """Record a sparse vector on a declared stream, periodic or not."""
        stream = self.stream(name)
        if isinstance(stream, int):
            self.logger.record(stream, epoch, indices, values)
        else:
            stream.record(epoch, indices, values)

    def record_vector(self, name: str, epoch: float, vector: Any) -> None:
        """Record a ``sparse_array.Vector`` on a declared stream, periodic or not."""
        stream = self.stream(name)
        if isinstance(stream, int):
            self.logger.record_vector(stream, epoch, vector)
        else:
            stream.record_vector(epoch, vector)

    def close(self, final_epoch: float | None = None) -> None:
        """Flush the periodic streams through ``final_epoch`` (default: the duration).

        Idempotent, so the worker can always call it after ``run(ctx)`` even if the model closed
        the context itself. The logger stays open: it belongs to the worker.
        """
        if self._closed:
            return
        self._closed = True
        epoch = self.duration if final_epoch is None else final_epoch
        for stream in self.streams.values():
            if not isinstance(stream, int):
                stream.close(epoch)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # A failed replication is discarded by the worker; flushing its periods would only
        # write records that never get committed.
        if exc_type is None:
            self.close()

    def __repr__(self) -> str:
        return (
            f"RunContext(task_id={self.task_id!r}, replication={self.replication},"
            f" streams={list(self.streams)})"
        )


def open_context(cfg: ExperimentConfig, task: Task, logger: DataLogger) -> RunContext:
    """Register every stream ``cfg`` declares in ``logger`` for ``task``; the task's context."""
    streams: dict[str, int | PeriodicStream] = {}
    for spec in cfg.streams:
        labels = stream_labels(cfg, task, spec)
        if spec.periodicity is not None:
            streams[spec.name] = logger.register_periodic_stream(
                labels,
                epoch_scale=spec.epoch_scale,
                value_scale=spec.value_scale,
                periodicity=spec.periodicity,
                kind=spec.kind or "state",
            )
        else:
            streams[spec.name] = logger.register_stream(
                labels, epoch_scale=spec.epoch_scale, value_scale=spec.value_scale
            )
    return RunContext(cfg, task, logger, streams)
