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
