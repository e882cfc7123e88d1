"""The sharded experiment service: shard writers, backends, the coordinator and the index.

Public names: :class:`ShardWriter` (bring your own parallelism), :func:`merge` (build the
experiment index from shard manifests), :func:`merge_into` (combine outputs of one experiment
from several places), :class:`Experiment` (query it), :class:`Coordinator` and
:func:`run_experiment` (run a YAML config, or one part of it). Ray is imported only by the Ray
backend, submitit only by the SLURM backend.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .combine import MergeIntoResult, merge_into
    from .coordinator import Coordinator, RunResult, run_experiment
    from .experiment import Experiment
    from .index import ExperimentIndex, merge
    from .manifest import ShardManifest
    from .records import ReplicationStatus, RunRecord, RunState
    from .shard import Replication, ShardWriter

# Imported on first use: a spawned worker needs only the shard writer, not the query side
# (pyarrow.dataset, pandas), and start-up time is paid once per worker.
_EXPORTS = {
    "MergeIntoResult": "combine",
    "merge_into": "combine",
    "Coordinator": "coordinator",
    "RunResult": "coordinator",
    "run_experiment": "coordinator",
    "Experiment": "experiment",
    "ExperimentIndex": "index",
    "merge": "index",
    "ShardManifest": "manifest",
    "ReplicationStatus": "records",
    "RunRecord": "records",
    "RunState": "records",
    "Replication": "shard",
    "ShardWriter": "shard",
}

__all__ = [
    "Coordinator",
    "Experiment",
    "ExperimentIndex",
    "MergeIntoResult",
    "Replication",
    "ReplicationStatus",
    "RunRecord",
    "RunResult",
    "RunState",
    "ShardManifest",
    "ShardWriter",
    "merge",
    "merge_into",
    "run_experiment",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
