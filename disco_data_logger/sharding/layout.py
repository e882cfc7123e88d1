"""The names of an experiment directory, defined once (docs/service.md describes what they hold).

A logger directory's own names (segments, ``streams/``, ``_DONE``) are in
:mod:`disco_data_logger.layout`.
"""

from __future__ import annotations

import re

__all__ = [
    "SHARDS_DIR",
    "JOURNAL_NAME",
    "JOURNAL_V1_NAME",
    "MANIFEST_NAME",
    "INDEX_DIR",
    "INDEX_PARTS_DIR",
    "INDEX_STATE",
    "REPLICATIONS_INDEX",
    "METRICS_DIR",
    "LEGACY_STREAMS_INDEX",
    "EXPERIMENT_JSON",
    "JOURNAL_FORMAT",
    "MANIFEST_FORMAT_V1",
    "INDEX_FORMAT",
    "INDEX_FORMAT_V1",
    "STATE_FORMAT",
    "SHARD_ID_RE",
    "LOCK_NAME",
    "STORE_JOURNAL_DIR",
    "STORE_SEGMENTS_DIR",
    "PIECE_NAME_RE",
    "piece_name",
    "MERGE_LOCK_NAME",
    "SLURM_DIR",
    "SLURM_LOCK_NAME",
]

SHARDS_DIR = "shards"
"""``<output>/shards/<shard_id>/``: one folder per worker process (a logger directory)."""

JOURNAL_NAME = "journal.jsonl.zst"
"""A shard's commit journal: the source of truth of what the shard committed."""

JOURNAL_V1_NAME = "manifest.jsonl"
MANIFEST_NAME = "manifest.json"
"""The journal and consolidated manifest of format-1 shards (read, never written)."""

INDEX_DIR = "index"
INDEX_PARTS_DIR = "parts"
"""``index/parts/``: the streams and commits of the index, one pair of files per merge."""

INDEX_STATE = "state.json"
"""``index/state.json``: what the index holds (parts, journal offsets); the merge's commit point."""

REPLICATIONS_INDEX = "replications.parquet"
METRICS_DIR = "metrics"
"""``index/metrics/``: per-replication metrics, cached (sharding/metrics.py)."""
LEGACY_STREAMS_INDEX = "streams.parquet"
"""The single-file streams index of format-1 experiments (replaced by ``index/parts/``)."""

EXPERIMENT_JSON = "experiment.json"

JOURNAL_FORMAT = "disco-shard-journal/2"
MANIFEST_FORMAT_V1 = "disco-shard-manifest/1"
"""Journals and consolidated manifests written before format 2 (read, never written)."""

INDEX_FORMAT = "disco-experiment-index/2"
INDEX_FORMAT_V1 = "disco-experiment-index/1"
STATE_FORMAT = "disco-index-state/1"

SHARD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A shard id, and so the name of its folder: never a path, never hidden."""

LOCK_NAME = "run.lock"
"""``<output>/run.lock``: held by the run in progress (sharding/lock.py)."""


# -- an experiment in object storage (docs/service.md, "Experiments in object storage") ---------

STORE_JOURNAL_DIR = "journal"
"""``shards/<id>/journal/<start>-<end>``: bytes ``start..end`` of the shard's journal."""

STORE_SEGMENTS_DIR = "segments"
"""``shards/<id>/segments/<NNNNN>/<start>-<end>``: bytes ``start..end`` of segment NNNNN."""

PIECE_NAME_RE = re.compile(r"^([0-9]{15})-([0-9]{15})$")
"""The name of a piece: its first and end byte offsets in the file it is part of."""


def piece_name(start: int, end: int) -> str:
    """The object name of bytes ``start..end`` of a file (15 decimal digits each)."""
    return f"{start:015d}-{end:015d}"
MERGE_LOCK_NAME = "merge.lock"
"""``<output>/index/merge.lock``: merges of one experiment take turns on it (sharding/lock.py)."""

SLURM_DIR = "slurm"
"""``<output>/slurm/``: the ``slurm`` backend's job files and logs (sharding/slurm.py)."""

SLURM_LOCK_NAME = "run.slurm.lock"
"""``<output>/run.slurm.lock``: held by the ``slurm`` backend while it waits for its job array
(one launcher per experiment; the array's parts take their own part locks)."""
