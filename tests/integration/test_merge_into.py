"""``merge A B --into D``: outputs of one experiment run in separate directories (as on two
machines) combined exactly once, with the real CLI."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_committed_once, assert_same_as_one_run, decoded, run

from disco_data_logger.cli import main
from disco_data_logger.sharding import Experiment, merge_into


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def tree(root: Path) -> dict[str, Any]:
    """Every file under ``root``: size, mtime and content hash (links as their target)."""
    state: dict[str, Any] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_file():
                st = path.stat()
                state[rel] = (st.st_size, st.st_mtime_ns,
                              hashlib.sha256(path.read_bytes()).hexdigest())
    return state


@pytest.fixture
def halves(make_config: Any, tmp_path: Path) -> dict[str, Path]:
    """One run of the whole experiment, and its two halves run into two other outputs."""
    paths = {"reference": tmp_path / "one-run", "a": tmp_path / "laptop" / "out",
             "b": tmp_path / "workstation" / "out"}
    run(make_config(output=paths["reference"], replications=4))
    for key, part in (("a", "1/2"), ("b", "2/2")):
        config = make_config(output=paths[key], replications=4)
        code, _, err = cli("run", str(config), "--part", part, "--no-progress")
        assert code == 0, err
    return paths


def test_two_halves_merge_into_one_run(halves: dict[str, Path], tmp_path: Path) -> None:
    a, b, d = halves["a"], halves["b"], tmp_path / "merged"
    before = tree(tmp_path / "laptop"), tree(tmp_path / "workstation")
    code, out, err = cli("merge", str(a), str(b), "--into", str(d))
    assert code == 0, err
    assert "hard-linked" in out and "no data copied" in out and "copied (" not in out
    assert "8 replications committed, 0 failed, 0 pending" in out
    assert_same_as_one_run(d, halves["reference"])
    # nothing in the inputs changed (their files are shared by hard links, never moved)
    assert (tree(tmp_path / "laptop"), tree(tmp_path / "workstation")) == before
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith("config")} == \
        {"one-run", "laptop", "workstation", "merged"}
    # merging the same inputs again changes nothing
    merged = tree(d)
    code, out, err = cli("merge", str(a), str(b), "--into", str(d))
    assert code == 0, err
    assert "already there" in out and "hard-linked" not in out
    assert tree(d) == merged


def test_merging_into_one_of_the_inputs(halves: dict[str, Path]) -> None:
    a, b = halves["a"], halves["b"]
    before = tree(b)
    result = merge_into([a, b], a)
    assert len(result.present) == len(list((a / "shards").iterdir())) - len(result.linked)
    assert result.linked and not result.copied
    assert_same_as_one_run(a, halves["reference"])
    assert tree(b) == before


def test_merging_across_filesystems_copies(halves: dict[str, Path]) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or \
            os.stat(shm).st_dev == os.stat(halves["a"]).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to merge into here")
    d = shm / f"ddl-merge-{os.getpid()}"
    try:
        code, out, err = cli("merge", str(halves["a"]), str(halves["b"]), "--into", str(d))
        assert code == 0, err
        assert "copied (" in out and "hard-linked" not in out
        assert_same_as_one_run(d, halves["reference"])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_task_in_two_inputs_is_kept_once(make_config: Any, halves: dict[str, Path],
                                           tmp_path: Path) -> None:
    # the whole experiment on one machine, and its first half again on another
    whole = tmp_path / "whole"
    run(make_config(output=whole, replications=4))
    d = tmp_path / "merged"
    code, out, err = cli("merge", str(whole), str(halves["a"]), "--into", str(d))
    assert code == 0, err
    half = Experiment.open(halves["a"]).replications.num_rows - \
        Experiment.open(halves["a"]).replications["status"].to_pylist().count("pending")
    assert f"{half} duplicate commit(s) ignored" in out
    assert_same_as_one_run(d, halves["reference"])
    assert decoded(d).equals(decoded(whole))


def test_outputs_of_different_configs_are_refused_in_one_line(make_config: Any,
                                                              halves: dict[str, Path],
                                                              tmp_path: Path) -> None:
    other = tmp_path / "other"
    run(make_config(output=other, replications=2, parameters={"entities": 9}))
    d = tmp_path / "merged"
    before = tree(tmp_path)
    code, out, err = cli("merge", str(halves["a"]), str(other), "--into", str(d))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("disco-data-logger: error: ")
    assert "are not the same experiment (parameters.entities: 8 vs 9)" in lines[0]
    assert not d.exists() and tree(tmp_path) == before


def test_links_are_never_followed(halves: dict[str, Path], tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shard = next((halves["b"] / "shards").iterdir())
    (halves["a"] / "shards" / "elsewhere").symlink_to(shard)  # a link among the shards
    link = tmp_path / "link-target"
    link.symlink_to(outside)
    code, _, err = cli("merge", str(halves["a"]), str(halves["b"]), "--into", str(link))
    assert code == 2 and "is a symbolic link" in err and os.listdir(outside) == []
    d = tmp_path / "merged"
    with pytest.warns(Warning, match="elsewhere: a symbolic link; ignored"):
        result = merge_into([halves["a"], halves["b"]], d)
    assert "elsewhere" not in {p.name for p in (d / "shards").iterdir()}
    assert result.index is not None
    assert_committed_once(d, 8)


def test_a_target_that_is_not_an_experiment_is_refused(halves: dict[str, Path],
                                                       tmp_path: Path) -> None:
    d = tmp_path / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("mine")
    code, _, err = cli("merge", str(halves["a"]), "--into", str(d))
    assert code == 2 and "is not an experiment" in err
    assert os.listdir(d) == ["todo.txt"]
    code, _, err = cli("merge", str(halves["a"]), "--into", str(halves["a"] / "sub"))
    assert code == 2 and "one inside the other" in err
    code, _, err = cli("merge", str(halves["a"]), str(halves["b"]))
    assert code == 1 and "give --into D" in err


def test_outputs_in_object_storage_are_refused_in_one_line(halves: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """merge --into copies local shards; an s3:// input or target gets one line saying what to
    do, before anything is read or written (and never becomes a local folder named 's3:')."""
    before = tree(tmp_path)
    for args in ((str(halves["a"]), "s3://bucket/exp", "--into", str(tmp_path / "m")),
                 (str(halves["a"]), "--into", "s3://bucket/merged")):
        code, out, err = cli("merge", *args)
        assert code == 2 and out == ""
        lines = err.splitlines()
        assert len(lines) == 1 and "is in object storage" in lines[0], err
    assert tree(tmp_path) == before and not Path("s3:").exists()
