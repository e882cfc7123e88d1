"""``data_logger.main``: :class:`DataLogger` with the constructor of disco-data-logger 0.1.x."""

from __future__ import annotations

import os
from typing import Any

from disco_data_logger.logger import DataLogger as _DataLogger

__all__ = ["DataLogger"]

RING_BYTES = 1 << 27
"""0.1.x's default ring buffer: 128 MiB."""
ROTATE_BYTES = 256 << 20
"""0.1.x's default segment size: 256 MiB."""
ZSTD_LEVEL = 1
"""0.1.x's default zstd level."""


class DataLogger(_DataLogger):
    """:class:`disco_data_logger.DataLogger` taking 0.1.x's arguments, positionally too.

    ``DataLogger(segments_dir, ring_bytes=128 MiB, rotate_bytes=256 MiB, zstd_level=1)`` as in
    0.1.x; the newer settings (``flush_interval``, ``block_bytes``) are accepted as keywords.
    Everything else, recording, periodic streams, ``decode_all_segments()`` (tuples
    ``(stream_id, epoch, indices, values)``) and ``to_parquet`` (columns ``stream_id`` uint32,
    ``epoch`` double, ``indices`` list<int64>, ``values`` list<double>), is the base class's.
    """

    def __init__(
        self,
        segments_dir: str | os.PathLike[str],
        ring_bytes: int = RING_BYTES,
        rotate_bytes: int = ROTATE_BYTES,
        zstd_level: int = ZSTD_LEVEL,
        **options: Any,
    ) -> None:
        super().__init__(
            segments_dir,
            ring_bytes=ring_bytes,
            rotate_bytes=rotate_bytes,
            zstd_level=zstd_level,
            **options,
        )
