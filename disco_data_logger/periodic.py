"""PeriodicStream: one record per period instead of one per update.

``kind="state"`` logs, at every boundary ``k * periodicity`` from the first update on, the last
vector recorded at or before the boundary (periods without updates repeat it).
``kind="accumulator"`` logs, at the start of every period, the sum of the vectors recorded within
it (an empty vector for a period without updates). Boundaries are computed in integer ticks of the
stream's ``epoch_scale``, so they never drift. The aggregation is native; vectors are copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from . import _core

if TYPE_CHECKING:
    from .logger import DataLogger


class PeriodicStream:
    """Reduces the updates of one stream to one record per period. Thread-safe."""

    def __init__(
        self,
        logger: DataLogger,
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
        """Add one update given as a :class:`sparse_array.Vector`."""
        from .logger import _vector_parts

        indices, values = _vector_parts(vector)
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
