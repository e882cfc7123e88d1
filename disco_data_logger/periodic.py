"""PeriodicStream: one record per period instead of one per update.

``kind="state"`` logs, at every boundary ``k * periodicity`` from the first update on, the last
vector recorded at or before the boundary (periods without updates repeat it).
``kind="accumulator"`` logs, at the start ``k * periodicity`` of every period, the sum of the
vectors recorded within it (an empty vector for a period without updates), from period 0 (or from
the first update's period, when that is negative) on.

Which period an update belongs to is decided by its epoch **as given**, not as rounded to
``epoch_scale`` ticks: with ``periodicity=1.0`` an update at 1.8 is in period 1 whatever the
``epoch_scale``, as in disco-data-logger 0.1.x. Boundaries are robust to floating-point
representation error: the quotient ``q = epoch / periodicity`` counts as the whole number ``k``
when ``|q - k| <= 1e-12 * max(1, |k|)`` (:data:`BOUNDARY_SNAP`), and otherwise the period is
``floor(q)``. So an update at 0.3 with ``periodicity=0.1`` is in period 3 (0.1.x computed
``floor(0.3 / 0.1) = floor(2.9999999999999996) = 2``), and an epoch that a loop of ``t += 0.1``
brings to 0.9999999999999999 is on boundary 1. The tolerance is about 4,500 units in the last
place of ``q``: far above the error of a decimal literal or of a few arithmetic steps, far below
any time difference a model means (a millisecond a century into a run with daily periods).

Emitted epochs are exact multiples of the period: ``periodicity`` must be a whole number of
``epoch_scale`` ticks (by the same tolerance), and boundary ``k`` is written as the integer tick
``k * periodicity / epoch_scale``. The aggregation is native (``cpp/periodic.cpp``, which uses
the same tolerance); vectors are copied when recorded.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

from . import _core
from .errors import InvalidStreamError
from .vectors import vector_parts

__all__ = ["BOUNDARY_SNAP", "PeriodicStream", "check_periodicity"]

BOUNDARY_SNAP = 1e-12
"""Relative tolerance of a period boundary; ``kBoundarySnap`` in ``cpp/periodic.hpp``."""


class _HasNativeCore(Protocol):
    """A :class:`~disco_data_logger.DataLogger`, seen only through its native core."""

    @property
    def _core(self) -> _core.LoggerCore: ...


def _snap(x: float) -> float | None:
    if not math.isfinite(x):
        return None
    n = float(round(x))
    return n if abs(x - n) <= BOUNDARY_SNAP * max(1.0, abs(n)) else None


def check_periodicity(stream: str, periodicity: float, epoch_scale: float) -> None:
    """Refuse a periodicity that is not a whole number (>= 1) of ``epoch_scale`` ticks.

    Called before a periodic stream is registered, so nothing is written for a bad setting.
    """
    ratio = periodicity / epoch_scale
    ticks = _snap(ratio)
    if ratio < 1 and not ticks:
        raise InvalidStreamError(
            f"stream ({stream}): periodicity {periodicity} is shorter than one epoch_scale tick "
            f"({epoch_scale})"
        )
    if ticks is None or ticks < 1 or ticks >= 2.0**62:
        raise InvalidStreamError(
            f"stream ({stream}): periodicity {periodicity} is not a whole number of epoch_scale "
            f"ticks ({epoch_scale}): their ratio is {ratio!r}; choose an epoch_scale that divides "
            "the period, so that every boundary is an exact tick"
        )


class PeriodicStream:
    """Reduces the updates of one stream to one record per period. Thread-safe.

    Made by :meth:`DataLogger.register_periodic_stream`; ``logger`` is the
    :class:`~disco_data_logger.DataLogger` whose stream ``stream_id`` it feeds.
    """

    def __init__(
        self,
        logger: _HasNativeCore,
        stream_id: int,
        *,
        periodicity: float = 1.0,
        kind: Literal["state", "accumulator"] = "state",
    ) -> None:
        self._logger_core = logger._core
        self._core = _core.PeriodicCore(logger._core, stream_id, periodicity, kind)
        self._stream_id = stream_id
        self._periodicity = float(periodicity)
        self._kind = kind

    @property
    def stream_id(self) -> int:
        return self._stream_id

    @property
    def periodicity(self) -> float:
        return self._periodicity

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def closed(self) -> bool:
        return bool(self._core.closed)

    def record(self, epoch: float, indices: Any, values: Any) -> None:
        """Add one update; epochs must not decrease."""
        self._core.record(self._logger_core, epoch, indices, values)

    def record_vector(self, epoch: float, vector: Any) -> None:
        """Add one update given as a sparse vector (:mod:`disco_data_logger.vectors`)."""
        indices, values = vector_parts(vector)
        self._core.record(self._logger_core, epoch, indices, values)

    def close(self, final_epoch: float) -> None:
        """Emit what is complete at ``final_epoch``; idempotent.

        state: every boundary up to and including ``final_epoch``;
        accumulator: every period that ends at or before ``final_epoch``.
        """
        self._core.close(final_epoch)

    def __repr__(self) -> str:
        return (
            f"PeriodicStream(stream_id={self._stream_id}, kind={self._kind!r}, "
            f"periodicity={self._periodicity})"
        )
