"""Default settings of a DataLogger and the rules they must follow, in one place for the Python API,
the YAML config and the docs. The native core takes every setting from here: it has no defaults
of its own.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import InvalidSettingError

RING_BYTES = 64 << 20
"""Bytes of sealed blocks that may wait for the writer thread before ``record()`` blocks."""

BLOCK_BYTES = 4 << 20
"""Raw (uncompressed) size at which a block is sealed and handed to the writer."""

ROTATE_BYTES = 256 << 20
"""Size at which a segment file is closed and the next one started."""

ZSTD_LEVEL = 3
"""zstd compression level of the blocks."""

ZSTD_LEVEL_MIN = -7
ZSTD_LEVEL_MAX = 22
"""The zstd levels a logger accepts (negative levels trade size for speed)."""

MAX_BLOCK_BYTES = 1 << 28
"""Largest raw block the format allows (docs/FORMAT.md section 2.2)."""

RING_BLOCKS = 4
"""A block takes at most this fraction of the ring (``block_bytes <= ring_bytes / 4``), so the
recording threads fill the next blocks while the writer compresses one."""

FLUSH_INTERVAL = 1.0
"""Seconds after which a partly filled block is written anyway: the loss window of a crash."""

EPOCH_SCALE = 1e-6
"""Default epoch quantum (simulated time units per tick)."""

MAX_LABELS_JSON = 1 << 24
"""Largest stream registration JSON (labels plus scales, UTF-8) the format allows (FORMAT.md)."""


def default_block_bytes(ring_bytes: int) -> int:
    """``block_bytes`` when it is not given: :data:`BLOCK_BYTES`, or a quarter of the ring when
    that is smaller (a small ring still pipelines)."""
    return max(1, min(BLOCK_BYTES, int(ring_bytes) // RING_BLOCKS))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(setting: str, value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise InvalidSettingError(setting, f"must be a positive integer (got {value!r})")
    return int(value)


def check_logger_settings(
    *,
    ring_bytes: Any,
    block_bytes: Any,
    rotate_bytes: Any,
    zstd_level: Any,
    flush_interval: Any,
) -> dict[str, Any]:
    """The settings of a DataLogger, checked: returns them as plain ints and floats, or raises
    :class:`~disco_data_logger.errors.InvalidSettingError` (a ``ValueError``) naming the setting.

    The rules: every size is a positive integer; ``block_bytes`` is at most a quarter of
    ``ring_bytes`` and at most :data:`MAX_BLOCK_BYTES`; ``zstd_level`` is an integer from
    :data:`ZSTD_LEVEL_MIN` to :data:`ZSTD_LEVEL_MAX`; ``flush_interval`` is a positive, finite
    number of seconds. ``rotate_bytes`` may be smaller than ``block_bytes``: blocks are then cut at
    the rotation size (docs/FORMAT.md section 6). The YAML config applies the same function.
    """
    ring = _positive_int("ring_bytes", ring_bytes)
    block = _positive_int("block_bytes", block_bytes)
    rotate = _positive_int("rotate_bytes", rotate_bytes)
    if block > MAX_BLOCK_BYTES:
        raise InvalidSettingError(
            "block_bytes",
            f"must be at most {MAX_BLOCK_BYTES} (2^28, the format's bound) (got {block})",
        )
    if block * RING_BLOCKS > ring:
        raise InvalidSettingError(
            "block_bytes",
            f"must be at most a quarter of ring_bytes ({ring}), so the ring holds several blocks "
            f"(got {block}); lower block_bytes or raise ring_bytes",
        )
    level_ok = _is_int(zstd_level)
    if not level_ok or not ZSTD_LEVEL_MIN <= int(zstd_level) <= ZSTD_LEVEL_MAX:
        raise InvalidSettingError(
            "zstd_level",
            f"must be an integer from {ZSTD_LEVEL_MIN} to {ZSTD_LEVEL_MAX} (got {zstd_level!r})",
        )
    if (
        isinstance(flush_interval, bool)
        or not isinstance(flush_interval, numbers.Real)
        or not (math.isfinite(float(flush_interval)) and float(flush_interval) > 0)
    ):
        raise InvalidSettingError(
            "flush_interval", f"must be a positive number of seconds (got {flush_interval!r})"
        )
    return {
        "ring_bytes": ring,
        "block_bytes": block,
        "rotate_bytes": rotate,
        "zstd_level": int(zstd_level),
        "flush_interval": float(flush_interval),
    }
