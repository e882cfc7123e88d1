"""Default settings, in one place for the Python API, the YAML config and the docs."""

from __future__ import annotations

RING_BYTES = 64 << 20
"""Bytes of sealed blocks that may wait for the writer thread before ``record()`` blocks."""

BLOCK_BYTES = 4 << 20
"""Raw (uncompressed) size at which a block is sealed and handed to the writer."""

ROTATE_BYTES = 256 << 20
"""Size at which a segment file is closed and the next one started."""

ZSTD_LEVEL = 3
"""zstd compression level of the blocks."""

FLUSH_INTERVAL = 1.0
"""Seconds after which a partly filled block is written anyway: the loss window of a crash."""

EPOCH_SCALE = 1e-6
"""Default epoch quantum (simulated time units per tick)."""

MAX_LABELS_JSON = 1 << 24
"""Largest stream registration JSON (labels plus scales, UTF-8) the format allows (FORMAT.md)."""
