"""The names of a logger directory and of a stream's metadata, defined once.

Every module that reads or writes these files or keys imports them from here; docs/FORMAT.md
describes what they hold. The experiment service's own names (``shards/``, the journal, the
index) live in :mod:`disco_data_logger.sharding.layout`.
"""

from __future__ import annotations

import re

__all__ = [
    "DONE_MARKER",
    "SEGMENT_SUFFIX",
    "SEGMENT_GLOB",
    "SEGMENT_NAME_RE",
    "STREAMS_DIR",
    "STREAM_ID",
    "EPOCH_SCALE",
    "VALUE_SCALE",
    "PERIODICITY",
    "KIND",
    "STREAM_META_KEYS",
    "RECORD_COLUMNS",
    "segment_name",
    "sidecar_name",
]

DONE_MARKER = "_DONE"
"""Empty file written by a successful ``DataLogger.close()``."""

SEGMENT_SUFFIX = ".seg.zst"
SEGMENT_GLOB = "*" + SEGMENT_SUFFIX
SEGMENT_NAME_RE = re.compile(r"^([0-9]+)\.seg\.zst$")
"""A segment file name: its number, then the suffix (``00000.seg.zst``)."""

STREAMS_DIR = "streams"
"""Folder of the per-stream JSON sidecars of a plain DataLogger directory."""

STREAM_ID = "stream_id"
EPOCH_SCALE = "epoch_scale"
VALUE_SCALE = "value_scale"
PERIODICITY = "periodicity"
KIND = "kind"
STREAM_META_KEYS = (STREAM_ID, EPOCH_SCALE, VALUE_SCALE, PERIODICITY, KIND)
"""Keys of a stream's metadata that describe the stream rather than label it."""

RECORD_COLUMNS = ("stream_id", "epoch", "indices", "values")
"""The columns every reader returns, in order (docs/FORMAT.md, decoded columns)."""


def segment_name(number: int) -> str:
    """``00042.seg.zst`` for segment 42."""
    return f"{number:05d}{SEGMENT_SUFFIX}"


def sidecar_name(stream_id: int) -> str:
    """``00000042.json`` for stream 42 (inside ``streams/``)."""
    return f"{stream_id:08d}.json"
