"""Experiment: selecting streams by labels, Arrow long/list tables, pandas/Polars, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from disco_data_logger.sharding import Experiment, ShardWriter, merge


@pytest.fixture
def experiment_dir(tmp_path: Path) -> Path:
    """Two shards, three committed replications, one aborted one whose records must not show."""
    root = tmp_path / "exp"
    for shard_id, reps in (("a", [0, 1]), ("b", [2])):
        with ShardWriter(root, shard_id) as shard:
            for r in reps:
                with shard.replication(f"p0000-r{r:06d}", replication=r, point_id="p0000") as rep:
                    for name in ("stock", "demand"):
                        sid = rep.logger.register_stream(
                            {"stream": name, "replication": r, "point_id": "p0000"},
                            value_scale=None)
                        for day in range(5):
                            rep.logger.record(sid, day + 0.5, [day, day + 10],
                                              [r * 100.0 + day, -1.0])
            if shard_id == "b":
                with pytest.raises(KeyError):
                    with shard.replication("p0000-r000003", replication=3, point_id="p0000") as rep:
                        sid = rep.logger.register_stream(
                            {"stream": "stock", "replication": 3, "point_id": "p0000"},
                            value_scale=None)
                        rep.logger.record(sid, 0.5, [0], [666.0])
                        rep.logger.flush()
                        raise KeyError("model failed")
    merge(root)
    return root


def test_streams_by_rule(experiment_dir: Path) -> None:
    exp = Experiment.open(experiment_dir)
    assert exp.streams().num_rows == 6
    assert exp.streams("stream=stock").num_rows == 3
    assert exp.streams({"stream": "stock", "replication": [0, 2]}).num_rows == 2
    assert exp.streams(lambda labels: labels["replication"] == 1).num_rows == 2
    assert sorted(exp.replications["status"].to_pylist()) == ["committed"] * 3 + ["failed"]


def test_streams_and_select_take_disco_tools_rules(experiment_dir: Path) -> None:
    from tools.label_selector import Label

    exp = Experiment.open(experiment_dir)
    rule = (Label("stream") == "stock") & Label("replication").isin([0, 2])
    assert exp.streams(rule).num_rows == 2
    assert sorted(set(exp.select(rule)["replication"].to_pylist())) == [0, 2]
    assert exp.select(~(Label("stream") == "stock")).equals(exp.select("stream!=stock"))


def test_select_long_format(experiment_dir: Path) -> None:
    exp = Experiment.open(experiment_dir)
    table = exp.select("stream=stock")
    assert table.column_names[:3] == ["task_id", "point_id", "replication"]
    assert {"stream", "epoch", "index", "value"} <= set(table.column_names)
    assert table.num_rows == 3 * 5 * 2
    assert 666.0 not in table["value"].to_pylist()  # the aborted replication never shows
    rep1 = table.filter(pc.equal(table["replication"], 1))
    first = rep1.filter(pc.equal(rep1["index"], 0))
    assert first["value"].to_pylist() == [100.0] and first["epoch"].to_pylist() == [0.5]


def test_select_list_format(experiment_dir: Path) -> None:
    table = Experiment.open(experiment_dir).select("stream=demand", format="list")
    assert table.num_rows == 15
    assert table["indices"].type == pa.list_(pa.int64())
    assert all(len(i) == 2 for i in table["indices"].to_pylist())


def test_select_nothing_gives_an_empty_table(experiment_dir: Path) -> None:
    table = Experiment.open(experiment_dir).select("stream=nothing")
    assert table.num_rows == 0 and "value" in table.column_names


def test_pandas_and_polars(experiment_dir: Path) -> None:
    exp = Experiment.open(experiment_dir)
    df = exp.to_pandas("stream=stock")
    assert len(df) == 30 and df["value"].dtype == np.float64
    polars = pytest.importorskip("polars")
    pl_df = exp.to_polars("stream=stock")
    assert isinstance(pl_df, polars.DataFrame) and pl_df.height == 30


def test_open_without_index_builds_it_in_memory(experiment_dir: Path) -> None:
    shutil.rmtree(experiment_dir / "index")
    exp = Experiment.open(experiment_dir)
    assert exp.streams().num_rows == 6
    assert sorted(exp.replications["status"].to_pylist()) == ["committed"] * 3 + ["failed"]
    assert not (experiment_dir / "index").exists()


def test_open_reads_commits_made_since_the_last_merge(experiment_dir: Path) -> None:
    with ShardWriter(experiment_dir, "c") as shard:
        with shard.replication("p0000-r000009", replication=9, point_id="p0000") as rep:
            sid = rep.logger.register_stream({"stream": "stock", "replication": 9},
                                             value_scale=None)
            rep.logger.record(sid, 0.5, [1], [9.0])
    exp = Experiment.open(experiment_dir)
    assert exp.streams("stream=stock").num_rows == 4
    assert exp.select("replication=9")["value"].to_pylist() == [9.0]


def test_callable_rules_are_called_once_per_distinct_labels(experiment_dir: Path) -> None:
    seen = []

    def rule(labels):
        seen.append(dict(labels))
        return labels["stream"] == "stock" and labels["replication"] != 1

    exp = Experiment.open(experiment_dir)
    assert sorted(exp.streams(rule)["replication"].to_pylist()) == [0, 2]
    assert len(seen) == 6  # six distinct label sets here: each once
    assert all({"task_id", "point_id", "replication", "stream"} <= set(s) for s in seen)


def test_rules_on_columns_mean_what_they_mean_on_labels(tmp_path: Path) -> None:
    """Every selector form, evaluated on index columns, selects what selector.select selects
    on the registered labels."""
    from disco_data_logger.selector import select

    labels = [
        {"stream": "a", "flag": True, "n": 3, "x": 2.5, "mixed": "u"},
        {"stream": "b", "flag": False, "n": 4, "x": 3.0, "mixed": 7},
        {"stream": "a", "n": 5, "mixed": True},
        {"stream": "c", "flag": True, "x": 2.5},
    ]
    with ShardWriter(tmp_path, "s") as shard:
        for i, lab in enumerate(labels):
            with shard.replication(f"t{i}", replication=i, point_id="p") as rep:
                sid = rep.logger.register_stream(lab, value_scale=None)
                rep.logger.record(sid, 0.0, [0], [1.0])
    exp = Experiment.open(tmp_path)
    rules = ["flag=true", "flag=True", "flag!=false", "n in (3, 5)", "n=3.0", "x=2.5",
             "!flag", "flag", "stream notin (a)", "mixed=7", "mixed=u", "stream=a, n>=4",
             "nothing=1", "nothing!=1", "stream=a, flag=true",
             {"n": [3, 4]}, {"flag": True}, {"x": 2.5}, {"stream": ("a", "c")}]
    for rule in rules:
        if rule == "stream=a, n>=4":
            with pytest.raises(ValueError):
                exp.streams(rule)
            continue
        want = sorted(lab["stream"] + str(i) for i, lab in enumerate(labels)
                      if select([{**lab}], rule))
        got = exp.streams(rule)
        got_keys = sorted(r["stream"] + str(r["replication"]) for r in got.to_pylist())
        assert got_keys == want, rule
    # A label of mixed types is a text column: True reads "true", as selector text spells it.
    assert exp.streams("mixed=true")["replication"].to_pylist() == [2]


def test_open_refuses_a_non_experiment(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an experiment"):
        Experiment.open(tmp_path)


def test_export_hive_partitioned_readable_by_duckdb_and_polars(experiment_dir: Path,
                                                               tmp_path: Path) -> None:
    out = Experiment.open(experiment_dir).export(tmp_path / "pq")
    assert (out / "stream=stock" / "point_id=p0000").is_dir()
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f"SELECT stream, count(*) AS n, sum(value) AS s FROM "
        f"read_parquet('{out}/**/*.parquet', hive_partitioning=true) "
        f"GROUP BY stream ORDER BY stream").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("demand", 30), ("stock", 30)]
    polars = pytest.importorskip("polars")
    frame = polars.scan_parquet(f"{out}/**/*.parquet", hive_partitioning=True).collect()
    assert frame.height == 60 and "stream" in frame.columns
    with pytest.raises(FileExistsError):
        Experiment.open(experiment_dir).export(out)


def test_export_with_rule_and_partitions(experiment_dir: Path, tmp_path: Path) -> None:
    out = Experiment.open(experiment_dir).export(tmp_path / "pq", "replication in (0, 2)",
                                                 partition_by=["replication"])
    assert sorted(p.name for p in out.iterdir()) == ["replication=0", "replication=2"]


def test_a_stray_segment_copy_is_neither_read_nor_hidden(experiment_dir: Path) -> None:
    """A copy of a committed segment under a name the journal never wrote to: queries read only
    the segments the shard's commits wrote, so no record is counted twice; verify names it."""
    from disco_data_logger.sharding.verify import verify_path

    before = Experiment.open(experiment_dir).select()
    shard = experiment_dir / "shards" / "a"
    (shard / "00050.seg.zst").write_bytes((shard / "00000.seg.zst").read_bytes())
    assert Experiment.open(experiment_dir).select().equals(before)
    merge(experiment_dir)
    assert Experiment.open(experiment_dir).select().equals(before)
    shutil.rmtree(experiment_dir / "index")
    assert Experiment.open(experiment_dir).select("stream=stock").num_rows == 30
    report = verify_path(experiment_dir)
    assert not report.ok
    lines = list(report.lines())
    at = next(i for i, line in enumerate(lines) if "00050.seg.zst" in line)
    assert "not listed" in lines[at + 1]


def test_verify_names_a_stray_segment_in_a_shard_still_open(tmp_path: Path) -> None:
    """An open shard (its writer running, or dead) lists no segments yet; its journal's commits
    cover every segment up to the last one they wrote, and the writer's later segments follow
    without a gap. A segment outside both is named by verify; the writer's own are not."""
    from disco_data_logger.sharding.verify import verify_path

    rng = np.random.default_rng(3)
    shard = ShardWriter(tmp_path, "open", logger_kwargs={"block_bytes": 4096,
                                                         "rotate_bytes": 16 << 10})
    for r in range(3):
        with shard.replication(f"p0000-r{r:06d}", replication=r, point_id="p0000") as rep:
            sid = rep.logger.register_stream({"stream": "stock"}, value_scale=None)
            for t in range(300):
                rep.logger.record(sid, float(t), np.arange(8), rng.normal(size=8))
    with shard.replication("p0000-r000003", replication=3, point_id="p0000") as rep:
        sid = rep.logger.register_stream({"stream": "stock"}, value_scale=None)
        for t in range(300):  # recorded and flushed, not committed: the writer's own tail
            rep.logger.record(sid, float(t), np.arange(8), rng.normal(size=8))
        rep.logger.flush()
        folder = tmp_path / "shards" / "open"
        names = sorted(p.name for p in folder.glob("*.seg.zst"))
        assert len(names) >= 3, names
        report = verify_path(tmp_path)
        assert report.ok, list(report.lines())  # an open shard alone is not damage
        stray = f"{int(names[-1][:5]) + 3:05d}.seg.zst"  # after a gap
        (folder / stray).write_bytes((folder / names[0]).read_bytes())
        report = verify_path(tmp_path)
        assert not report.ok
        lines = list(report.lines())
        flagged = [line for line in lines if "not written by this shard's writer" in line]
        assert len(flagged) == 1, lines
        at = next(i for i, line in enumerate(lines) if stray in line)
        assert "not written by this shard's writer" in lines[at + 1]
        (folder / stray).unlink()
    shard.close()
    assert verify_path(tmp_path).ok
