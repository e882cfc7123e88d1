"""One bad metadata file never blocks an experiment, and no path taken from metadata leaves it.

Each test damages a real experiment written by the real command (two multiprocessing workers)
the way a crash, a careless user or an attacker would, then runs the real CLI (``inspect``,
``merge``, ``verify``, ``export``, ``run``) and ``Experiment.open`` against it, and checks that:
the damage costs a one-line warning or error naming the file, the rest of the experiment is
still served, a sibling directory is unchanged (by hash), and committed records that are gone
are either re-run or reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from disco_data_logger.errors import CorruptDataWarning
from disco_data_logger.sharding import Experiment
from disco_data_logger.sharding.manifest import FRAME_HEADER_BYTES, JOURNAL_NAME
from tests import format_v2 as v2

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "experiment_v1"
PROG = "disco-data-logger"

CONFIG = {
    "experiment": {"organisation": "acme", "model": "inventory", "name": "damaged"},
    "replications": 6,
    "seed": 5,
    "entry_point": "disco_data_logger.models.inventory:run",
    "duration": 8,
    "parameters": {"n_skus": 3, "n_stores": 1},
    "execution": {"backend": "multiprocessing", "workers": 2, "retries": 0},
    "logger": {"flush_interval": 0.2},
    "streams": [{"name": "stock", "value_scale": 1.0, "periodicity": 1.0},
                {"name": "orders", "value_scale": 1.0}],
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "disco_data_logger", *args],
                          capture_output=True, text=True, timeout=300)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def one_line_each(stderr: str, name: str) -> None:
    """Every line on stderr is one warning or error, and some line names ``name``."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith(f"{PROG}: ") for line in lines), stderr
    assert any(name in line for line in lines), stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    config = root / "damaged.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "output": str(root / "out")}))
    proc = cli("run", str(config), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    shards = sorted((root / "out" / "shards").iterdir())
    assert len(shards) == 2 and all(len(list(s.iterdir())) == 3 for s in shards)
    return root


@pytest.fixture
def work(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the experiment, its config (pointing at the copy) and a sibling directory."""
    shutil.copytree(pristine / "out", tmp_path / "out")
    (tmp_path / "damaged.yaml").write_text(
        yaml.safe_dump({**CONFIG, "output": str(tmp_path / "out")}))
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "data.txt").write_text("not yours")
    return tmp_path


def committed(out: Path) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptDataWarning)
        reps = Experiment.open(out).replications.to_pylist()
    return {r["task_id"]: r["shard_id"] for r in reps if r["status"] == "committed"}


def frames(path: Path) -> list[int]:
    data = path.read_bytes()
    starts, pos = [], 0
    while pos + FRAME_HEADER_BYTES <= len(data):
        starts.append(pos)
        pos += FRAME_HEADER_BYTES + struct.unpack_from("<I", data, pos + 12)[0]
    return starts


def every_command_serves(out: Path, tmp: Path, name: str, committed_at_least: int,
                         stream: str = "stock") -> None:
    """inspect, merge, verify, export and Experiment.open run; each names ``name``."""
    for args in (["inspect", str(out)], ["merge", str(out)]):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        one_line_each(proc.stderr, name)
    proc = cli("export", str(out), "--parquet", str(tmp / "pq"))
    assert proc.returncode == 0, proc.stderr
    assert list((tmp / "pq").rglob("*.parquet"))
    with pytest.warns(CorruptDataWarning) as caught:
        exp = Experiment.open(out)
    assert any(name in str(w.message) for w in caught)
    statuses = exp.replications["status"].to_pylist()
    assert statuses.count("committed") >= committed_at_least
    assert exp.select(f"stream={stream}").num_rows > 0


def test_merge_on_a_directory_that_is_not_an_experiment(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    (target / "index").mkdir(parents=True)
    (target / "index" / "notes.parquet").write_bytes(b"my own file")
    (target / "experiment.json").write_text('{"owner": "someone else"}')
    before = digest(tmp_path)
    proc = cli("merge", str(target))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not an experiment directory" in proc.stderr
    assert str(target) in proc.stderr
    assert digest(tmp_path) == before


def test_run_refuses_an_output_another_program_owns(tmp_path: Path) -> None:
    target = tmp_path / "theirs"
    target.mkdir()
    (target / "experiment.json").write_text('{"owner": "someone else"}')
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "output": str(target)}))
    before = digest(tmp_path)
    proc = cli("run", str(config), "--no-progress")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "did not write" in proc.stderr and str(target) in proc.stderr
    assert digest(tmp_path) == before


def test_a_garbage_journal_frame_costs_its_commits_and_a_warning(work: Path) -> None:
    out = work / "out"
    before = committed(out)
    shard = sorted((out / "shards").iterdir())[0]
    journal = shard / JOURNAL_NAME
    data = bytearray(journal.read_bytes())
    start = frames(journal)[1]  # the first group commit
    data[start + FRAME_HEADER_BYTES + 8:start + FRAME_HEADER_BYTES + 40] = os.urandom(32)
    journal.write_bytes(bytes(data))
    sibling = digest(work / "sibling")
    every_command_serves(out, work, f"{shard.name}/{JOURNAL_NAME}",
                         committed_at_least=len([s for s in before.values() if s != shard.name]))
    proc = cli("verify", str(out))
    assert proc.returncode == 1 and JOURNAL_NAME in proc.stderr
    # Resume: what the damaged frame committed is run again; nothing is lost or doubled.
    proc = cli("run", str(work / "damaged.yaml"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "6/6 replications committed" in proc.stdout
    assert set(committed(out)) == set(before)
    assert digest(work / "sibling") == sibling


def test_a_malformed_journal_line_is_skipped_with_its_line_number(work: Path) -> None:
    import zstandard

    from disco_data_logger.sharding.manifest import encode_frame

    out = work / "out"
    shard = sorted((out / "shards").iterdir())[1]
    with open(shard / JOURNAL_NAME, "ab") as fh:
        fh.write(encode_frame([{"type": "commits", "n": 2, "task_id": "oops"}],
                              zstandard.ZstdCompressor()))
    every_command_serves(out, work, "line 1", committed_at_least=6)


def test_a_truncated_journal_loses_only_its_tail(work: Path) -> None:
    out = work / "out"
    shard = sorted((out / "shards").iterdir())[0]
    journal = shard / JOURNAL_NAME
    cut = frames(journal)[2] + 30  # inside the second group commit
    journal.write_bytes(journal.read_bytes()[:cut])
    proc = cli("inspect", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = cli("run", str(work / "damaged.yaml"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "6/6 replications committed" in proc.stdout


def test_a_truncated_experiment_json_is_rebuilt_by_merge(work: Path) -> None:
    out = work / "out"
    info = out / "experiment.json"
    info.write_bytes(info.read_bytes()[:100])
    proc = cli("inspect", str(out))
    assert proc.returncode == 0
    one_line_each(proc.stderr, "experiment.json")
    proc = cli("merge", str(out))
    assert proc.returncode == 0 and "6 replications committed" in proc.stdout
    rebuilt = json.loads(info.read_text())
    assert rebuilt["totals"]["committed"] == 6
    proc = cli("inspect", str(out))
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.parametrize("edit", [{"fingerprint": True}, {"runs": None},
                                  {"shards": [7, None]}, {"totals": "many", "config": []}])
def test_experiment_json_values_of_the_wrong_type_are_ignored(work: Path,
                                                              edit: dict[str, object]) -> None:
    """Valid JSON holding the wrong kind of value (found by the damage fuzzer: a fingerprint
    `true` made `run` fail with a TypeError, `"runs": null` every command): the value is
    ignored with one warning naming the file and key, and every command serves and rebuilds."""
    out = work / "out"
    info = out / "experiment.json"
    doc = json.loads(info.read_text())
    doc.update(edit)
    info.write_text(json.dumps(doc))
    before = digest(work / "sibling")
    for args in (["inspect", str(out)], ["export", str(out), "--parquet", str(work / "pq")]):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        one_line_each(proc.stderr, "experiment.json")
    assert cli("verify", str(out)).returncode == 0  # segments and journals: experiment.json unused
    with pytest.warns(CorruptDataWarning, match="experiment.json: .* of the wrong type"):
        exp = Experiment.open(out)
    assert exp.replications["status"].to_pylist().count("committed") == 6
    assert exp.select("stream=stock").num_rows > 0
    proc = cli("run", str(work / "damaged.yaml"), "--no-progress")
    assert proc.returncode == 0 and "(0 this run, 6 resumed)" in proc.stdout, proc.stderr
    rebuilt = json.loads(info.read_text())
    assert isinstance(rebuilt["fingerprint"], str) and rebuilt["totals"]["committed"] == 6
    assert all(isinstance(r, dict) for r in rebuilt["runs"]) and len(rebuilt["shards"]) == 2
    assert cli("inspect", str(out)).stderr == ""
    assert digest(work / "sibling") == before


def test_a_plan_whose_counts_are_not_numbers_is_ignored(work: Path) -> None:
    out = work / "out"
    info = out / "experiment.json"
    doc = json.loads(info.read_text())
    doc["plan"]["replications"] = "NaN"  # found by the damage fuzzer: int('NaN') everywhere
    info.write_text(json.dumps(doc))
    for args in (["inspect", str(out)], ["merge", str(out)]):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        one_line_each(proc.stderr, "experiment.json")
    proc = cli("run", str(work / "damaged.yaml"), "--no-progress")  # the run knows its plan
    assert proc.returncode == 0 and "(0 this run, 6 resumed)" in proc.stdout, proc.stderr
    assert json.loads(info.read_text())["plan"]["replications"] == 6


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_closed_shard_that_lost_its_journal_with_the_index_is_reported(work: Path,
                                                                         damage: str) -> None:
    """The index and one closed shard's journal gone (or cut to its first bytes) within a
    minute of the run: the folder is not taken for a writer that is starting (it has _DONE),
    so its commits are reported missing, never dropped without a word."""
    out = work / "out"
    shutil.rmtree(out / "index")
    (out / "experiment.json").unlink()
    shard = sorted((out / "shards").iterdir())[0]
    journal = shard / JOURNAL_NAME
    if damage == "delete":
        journal.unlink()
    else:
        journal.write_bytes(journal.read_bytes()[:39])
    proc = cli("inspect", str(out))
    assert proc.returncode == 0, proc.stderr
    one_line_each(proc.stderr, shard.name)
    with pytest.warns(CorruptDataWarning, match=shard.name):
        Experiment.open(out)


def test_a_stray_file_in_shards_is_ignored_with_a_warning(work: Path) -> None:
    out = work / "out"
    (out / "shards" / "notes.txt").write_text("hello")
    (out / "shards" / "empty-folder").mkdir()
    every_command_serves(out, work, "notes.txt", committed_at_least=6)
    proc = cli("verify", str(out))
    assert proc.returncode == 0 and "all intact" in proc.stdout


def test_a_shard_deleted_after_the_merge(work: Path) -> None:
    out = work / "out"
    before = committed(out)
    gone = sorted((out / "shards").iterdir())[0]
    shutil.rmtree(gone)
    proc = cli("verify", str(out))
    assert proc.returncode == 1 and "all intact" not in proc.stdout
    one_line_each(proc.stderr, gone.name)
    proc = cli("export", str(out), "--parquet", str(work / "pq"))
    assert proc.returncode == 0, proc.stderr
    one_line_each(proc.stderr, gone.name)
    with pytest.warns(CorruptDataWarning) as caught:
        exp = Experiment.open(out)
    assert any(gone.name in str(w.message) for w in caught)
    kept = {t for t, s in before.items() if s != gone.name}
    assert set(exp.select()["task_id"].to_pylist()) == kept
    proc = cli("run", str(work / "damaged.yaml"), "--no-progress")
    assert proc.returncode == 0 and "6/6 replications committed" in proc.stdout
    assert f"({len(before) - len(kept)} this run" in proc.stdout, proc.stdout.splitlines()[1]


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_resume_reruns_commits_whose_segment_bytes_are_gone(work: Path, damage: str) -> None:
    out = work / "out"
    reference = Experiment.open(out).select().sort_by(
        [("task_id", "ascending"), ("stream", "ascending"), ("epoch", "ascending"),
         ("index", "ascending")])
    shard = sorted((out / "shards").iterdir())[0]
    segment = shard / "00000.seg.zst"
    lost = {t for t, s in committed(out).items() if s == shard.name}
    if damage == "delete":
        segment.unlink()
    elif damage == "truncate":
        segment.write_bytes(segment.read_bytes()[:200])
    else:  # one byte in every block's zstd frame: every commit of the shard is damaged
        data = bytearray(segment.read_bytes())
        blocks = [u for u in v2.units(bytes(data)) if u.kind == 3]
        assert blocks, "the segment holds no block"
        for block in blocks:
            data[block.end - 3] ^= 0xFF  # inside the block's zstd frame, which ends the unit
        segment.write_bytes(bytes(data))
        os.utime(segment, ns=(1, 1))  # even a change that keeps the size and an old mtime
    proc = cli("verify", str(out))
    assert proc.returncode == 1 and "all intact" not in proc.stdout
    if damage != "delete":
        assert "group commit(s) depend on segment bytes" in proc.stdout, proc.stdout
    proc = cli("run", str(work / "damaged.yaml"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "6/6 replications committed" in proc.stdout
    assert f"({len(lost)} this run" in proc.stdout, proc.stdout
    one_line_each(proc.stderr, "lost")
    with pytest.warns(CorruptDataWarning, match=segment.name):  # the damage is still there
        again = Experiment.open(out).select().sort_by(
        [("task_id", "ascending"), ("stream", "ascending"), ("epoch", "ascending"),
         ("index", "ascending")])
    assert again.drop_columns([]).equals(reference)


def test_paths_in_metadata_never_leave_the_experiment(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    shutil.copytree(GOLDEN, out)
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "00000.seg.zst").write_bytes(b"not a segment")
    manifest = out / "shards" / "byo-shard" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["shard_id"] = "../../x"
    doc["segments"] = [{**doc["segments"][0], "name": "../../../x/00000.seg.zst"}]
    for rep in doc["replications"]:
        rep["shard_id"] = "../../x"
    manifest.write_text(json.dumps(doc))
    before = digest(outside)
    for args in (["merge", str(out)], ["inspect", str(out)], ["verify", str(out)],
                 ["export", str(out), "--parquet", str(tmp_path / "pq")]):
        proc = cli(*args)
        assert "Traceback" not in proc.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptDataWarning)
        exp = Experiment.open(out)
    assert "byo-shard" in exp.streams()["shard_id"].to_pylist()
    assert "../../x" not in exp.replications["shard_id"].to_pylist()
    assert digest(outside) == before and sorted(os.listdir(outside)) == ["00000.seg.zst"]


def test_a_garbage_consolidated_manifest_of_a_format_1_shard(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    shutil.copytree(GOLDEN, out)
    manifest = out / "shards" / "byo-shard" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:57])
    every_command_serves(out, tmp_path, "byo-shard/manifest.json", committed_at_least=9,
                         stream="level")
