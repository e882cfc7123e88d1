"""Hostile configs, labels and paths: unsafe YAML tags, ``../`` in labels, shard ids, task ids and
export partitions, labels that are not JSON, 1 MB and 20 MB labels, 1e5 streams in one logger.
Each gets a clear error or is stored harmlessly; nothing is written outside the output root."""

from __future__ import annotations

import json
import os
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from disco_data_logger import DataLogger, read
from disco_data_logger.cli import main
from disco_data_logger.errors import ConfigError, InvalidStreamError
from disco_data_logger.sharding import Coordinator, Experiment, ShardWriter, merge
from disco_data_logger.sharding.config import load_config
from tests.reliability.helpers import rss_kb


def files_under(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("*")}


def only_inside(sandbox: Path, before: set[Path], root: Path) -> None:
    """Every path created in ``sandbox`` since ``before`` lies inside ``root``."""
    outside = [p for p in files_under(sandbox) - before if not p.is_relative_to(root.resolve())]
    assert outside == [], outside


CONFIG = textwrap.dedent(
    """
    experiment: {{organisation: acme, model: inventory, name: hostile}}
    output: {output}
    replications: 2
    seed: 1
    entry_point: disco_data_logger.models.inventory:run
    duration: 6
    parameters: {{n_skus: 3, n_stores: 1}}
    execution: {{backend: serial, workers: 1}}
    streams:
      - name: stock
        value_scale: 1.0
        periodicity: 1.0
        labels: {{unit: "../../escaped", up: "/etc/passwd"}}
    """
)


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
])
def test_unsafe_yaml_tags_are_refused(tmp_path: Path, tag: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG.format(output=tmp_path / "out").replace(
        "seed: 1", f"seed: {tag.format(marker=marker)}"))
    with pytest.raises(ConfigError, match="cfg.yaml"):
        load_config(cfg)
    assert main(["run", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cfg.yaml" in err[0] and "YAML" in err[0], err

    good = tmp_path / "good.yaml"
    good.write_text(CONFIG.format(output=tmp_path / "out"))
    with pytest.raises(ConfigError):
        load_config(good, [f"seed={tag.format(marker=marker)}"])
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_traversal_in_labels_stays_inside_the_output(tmp_path: Path) -> None:
    """``../`` in stream labels, a label name, task ids and export partitions: files are named by
    ids and Hive partitions are escaped, so nothing lands outside the output or export roots."""
    sandbox = tmp_path / "sandbox"
    out = sandbox / "deep" / "out"
    out.parent.mkdir(parents=True)
    before = files_under(sandbox)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(CONFIG.format(output=out))
    cfg = load_config(cfg_path)
    result = Coordinator(cfg, config_path=cfg_path, progress=False).run()
    assert result.committed == 2

    with ShardWriter(out, "byo-1") as shard:
        with shard.replication("../../../escaped-task", replication=99) as rep:
            sid = rep.logger.register_stream({"stream": "../../x", "../..": "../../y"},
                                             value_scale=None)
            rep.logger.record(sid, 0.0, [1], [1.0])
    merge(out)
    exp = Experiment.open(out)
    export = sandbox / "deep" / "export"
    exp.export(export, partition_by=["unit", "stream"])
    only_inside(sandbox, before, sandbox / "deep")
    for p in files_under(sandbox) - before:
        assert p.is_relative_to(out.resolve()) or p.is_relative_to(export.resolve()), p
    assert len(exp.select("unit=../../escaped")) > 0  # and the values are kept as given


@pytest.mark.parametrize("shard_id", ["../escape", "..", "a/b", "/abs", ".hidden", "", "x" * 200])
def test_unsafe_shard_ids_are_refused(tmp_path: Path, shard_id: str) -> None:
    with pytest.raises(ValueError, match="shard id"):
        ShardWriter(tmp_path / "out", shard_id)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "shards").exists() \
        or list((tmp_path / "out" / "shards").iterdir()) == []


@pytest.mark.parametrize("labels,match", [
    ({"x": object()}, "JSON-serialisable"),
    ({"x": np.int64(3)}, "JSON-serialisable"),
    ({"x": float("nan")}, "JSON-serialisable"),
    ({"x": b"bytes"}, "JSON-serialisable"),
    ({"x": {1, 2}}, "JSON-serialisable"),
    ({1: "a"}, "label names must be strings"),
    ({"stream_id": 5}, "reserved"),
    ("not a mapping", "mapping"),
])
def test_labels_that_cannot_be_stored(tmp_path: Path, labels: Any, match: str) -> None:
    with DataLogger(tmp_path / "l") as dl:
        with pytest.raises(InvalidStreamError, match=match):
            dl.register_stream(labels, value_scale=1.0)
        ok = dl.register_stream({"fine": True}, value_scale=1.0)  # the logger is unharmed
        dl.record(ok, 0.0, [1], [1.0])
    assert sorted(os.listdir(tmp_path / "l" / "streams")) == ["00000000.json"]
    assert read(tmp_path / "l").num_rows == 1


def test_a_1_mb_label_round_trips(tmp_path: Path) -> None:
    big = "€" * (1 << 20)  # 3 MB of UTF-8
    with DataLogger(tmp_path / "l") as dl:
        sid = dl.register_stream({"big": big, "entity": "a"}, value_scale=1.0)
        dl.record(sid, 0.0, [1], [1.0])
    table = read(tmp_path / "l", "entity=a", label_columns=True)
    assert table.num_rows == 1 and table["big"][0].as_py() == big
    (tmp_path / "l" / "streams" / "00000000.json").unlink()  # and from the in-band copy
    assert read(tmp_path / "l", label_columns=True)["big"][0].as_py() == big


def test_labels_over_the_format_limit_get_a_clear_error(tmp_path: Path) -> None:
    """FORMAT.md bounds the registration JSON at 2^24 bytes: refused before anything is written,
    naming the size and the limit; the logger stays usable."""
    with DataLogger(tmp_path / "l") as dl:
        with pytest.raises(InvalidStreamError, match="16 MiB"):
            dl.register_stream({"big": "x" * (20 << 20)}, value_scale=1.0)
        sid = dl.register_stream({"small": 1}, value_scale=1.0)
        assert sid == 0
        dl.record(sid, 0.0, [1], [1.0])
    assert sorted(os.listdir(tmp_path / "l" / "streams")) == ["00000000.json"]
    assert read(tmp_path / "l").num_rows == 1


def test_labels_of_mixed_types_become_label_columns(tmp_path: Path) -> None:
    """Streams may give one label values of different JSON types; ``label_columns`` used to fail
    with an ArrowTypeError on them. The column follows ``labels.label_array`` (the rule of the
    experiment index and the selectors): text, non-strings as their compact JSON."""
    with DataLogger(tmp_path / "l") as dl:
        for value in ("kg", 5, 2.5, True, None, {"nested": [1, 2]}, [1, "a"]):
            sid = dl.register_stream({"unit": value}, value_scale=1.0)
            dl.record(sid, 0.0, [1], [1.0])
    table = read(tmp_path / "l", label_columns=True)
    units = table["unit"].to_pylist()
    assert units == ["kg", "5", "2.5", "true", None, '{"nested":[1,2]}', '[1,"a"]']
    assert table["unit"].type == pa.string()


def test_100k_streams_in_one_logger(tmp_path: Path, runslow: bool) -> None:
    """Registration, a record per stream, close and reading back, with memory bounded (the
    figures measured are in docs/reliability.md; no wall-time assertion)."""
    n = 100_000
    start = rss_kb()
    path = tmp_path / "many"
    with DataLogger(path, ring_bytes=1 << 20, block_bytes=1 << 16) as dl:
        for i in range(n):
            assert dl.register_stream({"entity": f"e{i}", "measure": "stock"},
                                      value_scale=0.01) == i
        offsets = np.arange(n + 1, dtype=np.int64) * 2
        dl.record_many(np.arange(n), np.zeros(n), offsets, np.tile([0, 5], n), np.ones(2 * n))
        dl.record(n - 1, 1.0, [7], [3.0])
    table = read(path)
    assert table.num_rows == n + 1
    assert np.array_equal(np.bincount(table["stream_id"].to_numpy(), minlength=n)[:n - 1],
                          np.ones(n - 1))
    assert rss_kb() - start < 1_500_000, "1e5 streams should cost far less than 1.5 GB"
    if runslow:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            picked = read(path, "entity=e99999", label_columns=True)
        assert picked.num_rows == 2 and picked["entity"].to_pylist() == ["e99999"] * 2
    meta = json.loads((path / "streams" / f"{n - 1:08d}.json").read_text())
    assert meta["entity"] == f"e{n - 1}"
