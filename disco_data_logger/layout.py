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
    "SERVICE_LABELS",
    "SELECT_COLUMNS",
    "INDEX_STREAM_COLUMNS",
    "INDEX_REPLICATION_COLUMNS",
    "RESERVED_LABELS",
    "LEGACY_INDEX_COLUMNS",
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

SERVICE_LABELS = ("stream", "organisation", "model", "experiment", "replication", "point_id")
"""Labels the experiment service sets on every stream of a run; a config may not set them."""

SELECT_COLUMNS = ("task_id", "point_id", "replication", "epoch", "index", "value",
                  "indices", "values")
"""The fixed columns of ``Experiment.select`` (long and list formats) and of ``export``."""

INDEX_STREAM_COLUMNS = ("shard_id", "stream_id", "task_id", "point_id", "point_index",
                        "replication", "attempt", "epoch_scale", "value_scale", "periodicity",
                        "kind", "records", "min_epoch", "max_epoch")
"""The fixed columns of the experiment index's streams table; label columns follow."""

INDEX_REPLICATION_COLUMNS = ("task_id", "point_id", "point_index", "replication", "status",
                             "attempts", "shard_id", "streams", "records", "started", "finished",
                             "seconds", "error", "traceback")
"""The columns of the experiment index's ``replications.parquet``."""

LEGACY_INDEX_COLUMNS = ("labels",)
"""Columns of the 0.2.0 index (the labels as JSON text), still read."""

RESERVED_LABELS = frozenset(
    {*STREAM_META_KEYS, *RECORD_COLUMNS, *SELECT_COLUMNS, *INDEX_STREAM_COLUMNS,
     *INDEX_REPLICATION_COLUMNS, *LEGACY_INDEX_COLUMNS} - set(SERVICE_LABELS)
)
"""Label names nobody may register: every fixed column or metadata key the project produces.

A label of that name would be shadowed by the column (its values lost from ``select`` and
``export``) or would masquerade as it (``select('task_id=x')`` matching a label). The service's
own labels (:data:`SERVICE_LABELS`) are not in this set: the service registers them itself, and
the config refuses them instead.
"""


def segment_name(number: int) -> str:
    """``00042.seg.zst`` for segment 42."""
    return f"{number:05d}{SEGMENT_SUFFIX}"


def sidecar_name(stream_id: int) -> str:
    """``00000042.json`` for stream 42 (inside ``streams/``)."""
    return f"{stream_id:08d}.json"
