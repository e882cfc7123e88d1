"""The service's statuses and run records (sharding/records.py): one definition, the strings on
disk unchanged, and run records of every version read back."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from disco_data_logger.sharding.records import (
    ExperimentState,
    OutcomeStatus,
    ReplicationStatus,
    RunRecord,
    RunState,
)
from disco_data_logger.sharding.worker import TaskOutcome

GOLDEN_RUNS = json.loads(
    (Path(__file__).parent / "fixtures" / "experiment_v1" / "experiment.json").read_text()
)["runs"]


def test_statuses_are_the_strings_on_disk() -> None:
    assert [s.value for s in ReplicationStatus] == ["committed", "failed", "pending"]
    assert [s.value for s in RunState] == ["running", "complete", "failed", "interrupted",
                                           "error"]
    assert {s.value for s in RunState} < {s.value for s in ExperimentState}
    for status in ReplicationStatus:
        # equal to, formatted and serialised as its value, whatever the Python version
        assert status == status.value and f"{status}" == str(status) == status.value
        assert json.dumps({status: status}) == json.dumps({status.value: status.value})
    column = pa.array(["committed", "pending", None, "failed"])
    assert pc.equal(column, ReplicationStatus.COMMITTED).to_pylist() == [True, False, None,
                                                                         False]


def test_a_0_2_0_run_record_reads_and_writes_back_its_keys() -> None:
    (doc,) = GOLDEN_RUNS
    record = RunRecord.from_json(doc)
    assert record.state is RunState.FAILED and record.committed == 5 and record.failed == 1
    assert record.part is None and record.max_failures is None and record.extra == {}
    # 0.2.0 did not write max_failures; every other key comes back as it was, in order.
    assert record.to_json() == {**doc, "max_failures": None}
    assert [k for k in record.to_json() if k in doc] == list(doc)


def test_a_record_keeps_what_this_version_does_not_know() -> None:
    doc = {"run_id": "r1", "started": "2030-01-01T00:00:00+00:00", "backend": "future",
           "workers": 3, "retries": 1, "max_failures": 5, "pid": 7, "state": "paused",
           "gpus": 2}
    record = RunRecord.from_json(doc)
    assert record.state is RunState.RUNNING and record.extra == {"state": "paused", "gpus": 2}
    assert record.to_json() == doc


def test_finish_and_optional_keys() -> None:
    record = RunRecord(run_id="r", started="s", backend="serial", workers=1, retries=0, pid=1,
                       max_failures=3, part="2/4", host="h")
    assert list(record.to_json()) == ["run_id", "started", "backend", "workers", "retries",
                                      "max_failures", "pid", "state", "part", "host"]
    record.finish(RunState.INTERRUPTED, finished="f", wall_seconds=1.23456, committed=2,
                  failed=0, resumed=1)
    out = record.to_json()
    assert out["state"] == "interrupted" and type(out["state"]) is str
    assert (out["wall_seconds"], out["committed"], out["failed"], out["resumed"]) == \
        (1.235, 2, 0, 1)
    assert json.loads(json.dumps(out)) == out


def test_outcome_status_names_the_flags() -> None:
    def status(**flags: bool) -> OutcomeStatus:
        return TaskOutcome(task_id="t", attempt=1, **flags).status  # type: ignore[arg-type]

    assert status(ok=True) is OutcomeStatus.COMMITTED
    assert status(ok=True, durable=False) is OutcomeStatus.STAGED
    assert status(ok=False) is OutcomeStatus.FAILED
    assert status(ok=False, worker_died=True) is OutcomeStatus.FAILED
    assert status(ok=False, requeue=True, worker_died=True) is OutcomeStatus.REQUEUED
    assert status(ok=False, interrupted=True) is OutcomeStatus.INTERRUPTED
