"""What one array task of the ``slurm`` backend runs: one part of the experiment.

It lives apart from :mod:`.slurm` because it imports ``submitit`` at the top: submitit pickles
a :class:`PartJob` on the submitting machine and unpickles it in the job, where this module is
imported by name. Being :class:`submitit.helpers.Checkpointable`, a part that reaches its time
limit (or is preempted) is requeued by submitit with the same arguments, and resumes: its
committed replications are in its shards' journals.
"""

from __future__ import annotations

import signal
from typing import Any

import submitit

__all__ = ["PartJob"]


class PartJob(submitit.helpers.Checkpointable):  # type: ignore[misc]
    """Run part ``part`` (``"I/N"``) of ``cfg`` with the local backend ``cfg`` names, by
    ``runner`` (the :class:`~.coordinator.Coordinator` class; pickled by name, so this module
    never imports the coordinator, which imports the launcher that submits this)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def __call__(self, cfg: Any, part: str, overrides: list[str],
                 config_path: str | None) -> dict[str, Any]:
        # submitit ignores SIGTERM in the job; the coordinator turns it into a clean stop
        # while it runs (scancel: abort running replications, close writers, merge).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        result = self.runner(cfg, overrides=overrides, config_path=config_path, progress=False,
                             part=part).run()
        first = next(iter(sorted(result.failed.items())), None)
        return {
            "part": part,
            "state": str(result.state),
            "planned": result.planned,
            "resumed": result.resumed,
            "committed": result.committed,
            "failed": len(result.failed),
            "first_failure": f"{first[0]}: {first[1]}" if first else None,
            "stopped_early": result.stopped_early,
            "wall_seconds": result.wall_seconds,
        }
