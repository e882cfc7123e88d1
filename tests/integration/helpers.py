"""Shared helpers of the integration tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from disco_data_logger.sharding import Coordinator, Experiment, RunResult
from disco_data_logger.sharding.config import load_config

SORT_KEY = [("task_id", "ascending"), ("stream", "ascending"), ("epoch", "ascending"),
            ("index", "ascending")]


def run(config: Path, *overrides: str, overwrite: bool = False) -> RunResult:
    cfg = load_config(config, overrides)
    return Coordinator(cfg, overrides=overrides, config_path=config, overwrite=overwrite,
                       progress=False).run()


def decoded(output: Path) -> pa.Table:
    """Every committed record, in an order that does not depend on who wrote it."""
    return Experiment.open(output).select().sort_by(SORT_KEY)


def statuses(output: Path) -> dict[str, str]:
    reps = Experiment.open(output).replications
    return dict(zip(reps["task_id"].to_pylist(), reps["status"].to_pylist(), strict=True))


WRITER_COLUMNS = ("shard_id", "stream_id", "attempt")
"""Streams index columns that say who wrote a stream (and which attempt), not what it holds."""


def index_content(output: Path) -> pa.Table:
    """The streams index without the columns that depend on who wrote each stream."""
    streams = Experiment.open(output).streams()
    keep = [c for c in streams.column_names if c not in WRITER_COLUMNS]
    return streams.select(keep).sort_by([("task_id", "ascending"), ("stream", "ascending")])


def assert_committed_once(output: Path, planned: int) -> None:
    """Every planned replication committed, each exactly once."""
    reps = Experiment.open(output).replications
    ids = reps["task_id"].to_pylist()
    assert len(ids) == len(set(ids)) == planned
    assert set(reps["status"].to_pylist()) == {"committed"}, reps.to_pylist()
    streams = Experiment.open(output).streams()
    pairs = list(zip(streams["task_id"].to_pylist(), streams["stream"].to_pylist(),
                     strict=True))
    assert len(pairs) == len(set(pairs)), "a replication's stream is in the index twice"


def assert_same_as_one_run(output: Path, reference: Path) -> None:
    """``output`` holds exactly what the one run into ``reference`` gave: the same records per
    task (seeds depend on the task only) and the same index content; compared by records, not
    bytes (shards, segment boundaries and stream ids differ)."""
    planned = Experiment.open(reference).replications.num_rows
    assert_committed_once(output, planned)
    assert index_content(output).equals(index_content(reference))
    assert decoded(output).equals(decoded(reference))
