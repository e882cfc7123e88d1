"""Integration tests: real worker processes, a real local Ray instance, the real CLI.

The test models live beside this file; spawned workers and Ray workers import them by name,
so this directory goes on ``sys.path`` and on ``PYTHONPATH`` (inherited by every child).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
_paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if str(HERE) not in _paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *_paths])


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[Any]:
    """One local Ray instance shared by every Ray test (Ray's local mode is gone)."""
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


BASE_CONFIG: dict[str, Any] = {
    "experiment": {"organisation": "acme", "model": "walk", "name": "itest"},
    "replications": 3,
    "seed": 20240601,
    "entry_point": "ddl_testmodels:steady",
    "duration": 12,
    "parameters": {"entities": 8},
    "sweep": {"grid": {"offset": [0.0, 0.5]}},
    "execution": {"backend": "serial", "workers": 1, "retries": 2},
    "logger": {"flush_interval": 0.2, "ring_bytes": "4MiB", "block_bytes": "64KiB"},
    "streams": [
        {"name": "level", "value_scale": 0.01},
        {"name": "arrivals", "value_scale": None, "periodicity": 3.0, "kind": "accumulator"},
    ],
}


def _deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def make_config(tmp_path: Path) -> Any:
    """Write a test config (BASE_CONFIG deep-updated with ``changes``); returns its path."""
    import copy

    import yaml

    counter = iter(range(1000))

    def make(output: Path | None = None, **changes: Any) -> Path:
        doc = _deep_update(copy.deepcopy(BASE_CONFIG), changes)
        doc["output"] = str(output if output is not None else tmp_path / "out")
        doc.setdefault("parameters", {})["marker_dir"] = str(tmp_path / "markers")
        path = tmp_path / f"config{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    return make
