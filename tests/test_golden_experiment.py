"""The committed experiment of the format-1 service layout (written by disco-data-logger 0.2.0,
tests/fixtures/make_golden_experiment.py) must open, merge, verify and resume unchanged.

Its shards have ``manifest.jsonl`` / ``manifest.json`` and ``streams/`` sidecars, one of them was
killed (no manifest.json, a torn last journal line), and its index is the single
``index/streams.parquet`` with every replication listed in ``experiment.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml

from disco_data_logger.sharding import Coordinator, Experiment, merge
from disco_data_logger.sharding.config import load_config
from disco_data_logger.sharding.layout import INDEX_FORMAT, LEGACY_STREAMS_INDEX
from disco_data_logger.sharding.records import ReplicationStatus, RunRecord, RunState
from disco_data_logger.sharding.verify import verify_path

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "experiment_v1"
EXPECTED = json.loads((FIXTURES / "experiment_v1.json").read_text())


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    dst = tmp_path / "experiment_v1"
    shutil.copytree(GOLDEN, dst)
    return dst


def check_experiment(exp: Experiment, rerun: tuple[str, ...] = ()) -> None:
    reps = {r["task_id"]: r for r in exp.replications.to_pylist()}
    got = {t: {"status": r["status"], "shard_id": r["shard_id"], "attempts": r["attempts"]}
           for t, r in reps.items()}
    for tid in rerun:  # failed again, in a shard of the new run
        assert got[tid]["status"] == "failed" and got[tid]["shard_id"] != \
            EXPECTED["replications"][tid]["shard_id"]
        got[tid]["shard_id"] = EXPECTED["replications"][tid]["shard_id"]
    assert got == EXPECTED["replications"]
    streams = exp.streams()
    got = sorted(streams.select(["shard_id", "stream_id"]).to_pylist(),
                 key=lambda r: (r["shard_id"], r["stream_id"]))
    want = sorted(({"shard_id": s["shard_id"], "stream_id": s["stream_id"]}
                   for s in EXPECTED["streams"]), key=lambda r: (r["shard_id"], r["stream_id"]))
    assert got == want
    by_key = {(r["shard_id"], r["stream_id"]): r for r in streams.to_pylist()}
    for s in EXPECTED["streams"]:
        row = by_key[(s["shard_id"], s["stream_id"])]
        for label in ("flag", "rank", "where", "site", "stream"):
            assert row.get(label) == s.get(label), (s, label)
    assert streams["flag"].type == "bool" and streams["rank"].type == "int64"
    assert streams["where"].type == "string"  # a string and an integer: text
    table = exp.select()
    sums = table.group_by(["task_id", "stream"]).aggregate(
        [("value", "sum"), ("value", "count"), ("epoch", "min"), ("epoch", "max")])
    got_records = {f"{r['task_id']}/{r['stream']}": r for r in sums.to_pylist()}
    assert set(got_records) == set(EXPECTED["records"])
    for key, want_g in EXPECTED["records"].items():
        g = got_records[key]
        assert g["value_count"] == want_g["nonzeros"]
        assert math.isclose(g["value_sum"], want_g["sum"], rel_tol=1e-12, abs_tol=1e-9)
        assert (g["epoch_min"], g["epoch_max"]) == (want_g["min_epoch"], want_g["max_epoch"])
    assert 666.0 not in pc.unique(table["value"]).to_pylist()  # the aborted replication
    totals = exp.info["totals"]
    for key in ("committed", "failed", "pending", "streams", "records"):
        assert totals[key] == EXPECTED["totals"][key], key
    assert totals["shards"] == EXPECTED["totals"]["shards"] + bool(rerun)


def test_format_1_experiment_opens_and_nothing_is_written() -> None:
    before = tree_digest(GOLDEN)
    check_experiment(Experiment.open(GOLDEN))
    assert tree_digest(GOLDEN) == before


def test_merge_moves_a_format_1_experiment_to_the_new_index(copy: Path) -> None:
    old_info = json.loads((copy / "experiment.json").read_text())
    merge(copy)
    info = json.loads((copy / "experiment.json").read_text())
    assert info["format"] == INDEX_FORMAT and "replications" not in info
    assert info["config"] == old_info["config"] and info["runs"] == old_info["runs"]
    assert not (copy / "index" / LEGACY_STREAMS_INDEX).exists()
    assert list((copy / "index" / "parts").glob("streams-*.parquet"))
    check_experiment(Experiment.open(copy))
    merge(copy)  # and again: nothing new
    check_experiment(Experiment.open(copy))


def test_format_1_shards_verify(copy: Path) -> None:
    report = verify_path(copy)
    assert report.ok, list(report.lines())
    killed = next(s for s in report.shards if s.name == "killed-shard")
    assert not killed.closed and killed.committed_streams == 2


def test_resume_a_format_1_experiment(copy: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))
    info = json.loads((copy / "experiment.json").read_text())
    config = {**info["config"], "output": str(copy)}
    path = tmp_path / "golden.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = Coordinator(load_config(path), progress=False).run()
    assert (result.resumed, result.committed) == (5, 0)
    assert list(result.failed) == ["p0001-r000002"]  # it fails every time, as it did then
    exp = Experiment.open(copy)
    check_experiment(exp, rerun=("p0001-r000002",))
    assert len(exp.info["runs"]) == 2
    old, new = exp.info["runs"]
    assert old == info["runs"][0]  # the 0.2.0 record is kept as it was
    # The record this version writes: the keys 0.2.0 wrote, in the same order, plus
    # max_failures (and part, host, batch_job, stopped_early, notes only when they apply).
    assert list(new) == ["run_id", "started", "backend", "workers", "retries", "max_failures",
                         "pid", "state", "finished", "wall_seconds", "committed", "failed",
                         "resumed"]
    assert [k for k in new if k in old] == list(old)
    assert (new["state"], new["committed"], new["failed"], new["resumed"]) == ("failed", 0, 1, 5)
    assert RunRecord.from_json(new).to_json() == new
    assert RunRecord.from_json(old).state is RunState.FAILED
    assert set(exp.replications["status"].to_pylist()) <= {s.value for s in ReplicationStatus}
    new_shards = [p for p in (copy / "shards").iterdir() if not (p / "manifest.jsonl").exists()]
    assert len(new_shards) == 1 and (new_shards[0] / "journal.jsonl.zst").is_file()
    assert not (new_shards[0] / "streams").exists()
    assert os.listdir(copy / "shards" / "killed-shard")  # old shards are left as they were
