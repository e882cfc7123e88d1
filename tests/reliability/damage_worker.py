"""Damage-fuzz worker: runs every command against one damaged experiment and reports what it saw.

Runs as its own process (``python -m tests.reliability.damage_worker``), started by
``test_damage_fuzz.py`` without root's permission override when the tests run as root, so that a
file made unreadable is unreadable here, as it would be for a user's job. Protocol: one JSON
request per line on stdin (``exp``, ``export``, ``config``), one JSON line per case on stdout.

For every command the worker records the exit status, the error lines, whether a traceback was
printed, and, for ``Experiment.open(...).select()``, the rows per task and every warning, or the
exception. It decides nothing: the test compares against what the undamaged experiment held.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from disco_data_logger.cli import main as cli_main
from disco_data_logger.errors import DataLoggerError


def _command(args: list[str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            code: Any = cli_main(args)
        except BaseException as exc:  # noqa: BLE001 - an escaping exception is a finding
            code = None
            escaped = "".join(traceback.format_exception(exc))[-3000:]
    text = err.getvalue()
    return {"args": args, "code": code, "escaped": escaped,
            "traceback": "Traceback (most recent call last)" in text,
            "errors": [line for line in text.splitlines()
                       if line.startswith("disco-data-logger: error:")],
            "stderr_tail": text[-1500:], "stdout_tail": out.getvalue()[-600:]}


def _select(exp_dir: str) -> dict[str, Any]:
    from disco_data_logger.sharding import Experiment

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = Experiment.open(exp_dir).select()
        except Exception as exc:  # noqa: BLE001 - classified by the test
            return {"error": type(exc).__name__, "message": " ".join(str(exc).split())[:600],
                    "project": isinstance(exc, DataLoggerError),
                    "os": isinstance(exc, OSError), "value": isinstance(exc, ValueError),
                    "traceback": "".join(traceback.format_exception(exc))[-3000:],
                    "warnings": [str(w.message)[:300] for w in caught]}
    rows: dict[str, list[list[float]]] = {}
    cols = [table[c].to_pylist() for c in ("task_id", "epoch", "index", "value")]
    for task, epoch, index, value in zip(*cols, strict=True):
        rows.setdefault(str(task), []).append([epoch, index, value])
    return {"rows": rows, "warnings": [f"{w.category.__name__}: {str(w.message)[:300]}"
                                       for w in caught]}


def run_case(request: dict[str, Any]) -> dict[str, Any]:
    exp, export, config = request["exp"], request["export"], request["config"]
    steps: list[dict[str, Any]] = []
    steps.append(_command(["inspect", exp]))
    steps.append(_command(["inspect", exp, "--json"]))
    steps.append(_command(["verify", exp]))
    first = _select(exp)
    steps.append(_command(["merge", exp]))
    merged = _select(exp)
    # A loss the merge reported (a shard gone, a commit whose bytes are missing) is reported: the
    # index stops listing those replications as committed, so later queries stay quiet about it.
    merged["earlier_warnings"] = [line for line in steps[-1]["stderr_tail"].splitlines()
                                  if "warning" in line.lower()]
    steps.append(_command(["export", exp, "--parquet", export]))
    steps.append(_command(["export", exp, "--parquet", export, "--overwrite"]))
    steps.append(_command(["run", config, "--no-progress"]))
    resumed = _select(exp)
    return {"commands": steps, "select": {"first": first, "merged": merged, "resumed": resumed}}


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = run_case(request)
        except BaseException as exc:  # noqa: BLE001 - reported, the worker keeps serving
            result = {"worker_error": "".join(traceback.format_exception(exc))[-3000:]}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
