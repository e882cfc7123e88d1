"""The sharded experiment service: shard writers, backends, the coordinator and the index.

Public names: :class:`ShardWriter` (bring your own parallelism), :func:`merge` (build the
experiment index from shard manifests), :class:`Experiment` (query it), :class:`Coordinator` and
:func:`run_experiment` (run a YAML config). Ray is imported only by the Ray backend.
"""

from __future__ import annotations

from .coordinator import Coordinator, RunResult, run_experiment
from .experiment import Experiment
from .index import ExperimentIndex, merge
from .manifest import ShardManifest
from .shard import Replication, ShardWriter

__all__ = [
    "Coordinator",
    "Experiment",
    "ExperimentIndex",
    "Replication",
    "RunResult",
    "ShardManifest",
    "ShardWriter",
    "merge",
    "run_experiment",
]
