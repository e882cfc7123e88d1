"""The experiment service's commands used as a careless user or an attacker would: nothing is
deleted or written outside its place, names are safe wherever they land, configs are bounded,
one run per experiment at a time, and a model that always fails stops the run early.

Every test uses the real command line (``cli.main`` in this process, or ``python -m
disco_data_logger`` in a subprocess where processes must be real: concurrent runs, a killed
coordinator, a pasted shell line), real files, real symbolic links; and checks that the rest of
the sandbox is byte for byte unchanged (:func:`digest`), that no committed record is lost, and
that errors are one line naming the file or key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from disco_data_logger import DataLogger
from disco_data_logger.cli import main, query_hint
from disco_data_logger.errors import ConfigError, InvalidStreamError
from disco_data_logger.layout import RECORD_COLUMNS, RESERVED_LABELS, SERVICE_LABELS
from disco_data_logger.sharding import Experiment, ShardWriter, merge
from disco_data_logger.sharding.config import load_config
from disco_data_logger.sharding.index import REPLICATION_COLUMNS, STREAM_COLUMNS
from disco_data_logger.sharding.lock import LOCK_NAME, ExperimentLock
from tests.reliability.hostile_models import RECORDS_PER_DAY, expected_values

REPO = Path(__file__).resolve().parents[2]
MODELS = "tests.reliability.hostile_models"
PROG = "disco-data-logger"
REPLICATIONS = 3
DURATION = 4

BASE: dict[str, Any] = {
    "experiment": {"organisation": "acme", "model": "walk", "name": "hostile"},
    "replications": REPLICATIONS,
    "seed": 7,
    "entry_point": f"{MODELS}:walk",
    "duration": DURATION,
    "parameters": {},
    "execution": {"backend": "serial", "workers": 1, "retries": 0},
    "logger": {"flush_interval": 0.2, "ring_bytes": "1MiB", "block_bytes": "64KiB"},
    "streams": [{"name": "level", "value_scale": None}],
}


# -- helpers ---------------------------------------------------------------------------------


def write_config(path: Path, output: Path, **changes: Any) -> Path:
    doc = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        node = doc
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    doc["output"] = str(output)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(*args: str) -> tuple[int, str, str]:
    """``disco-data-logger ARGS`` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def env() -> dict[str, str]:
    paths = [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def cli_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "disco_data_logger", *args], env=env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_line_error(stderr: str, *fragments: str) -> str:
    """The single line of ``stderr``: a one-line error containing every fragment."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def digest(root: Path) -> dict[str, Any]:
    """Everything under ``root`` (links not followed): type, mode, content hash, link target."""
    state: dict[str, Any] = {}
    if not os.path.lexists(root):
        return state
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(top) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir", st.st_mode)
            else:
                state[rel] = ("file", st.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def committed_values(out: Path) -> dict[int, list[float]]:
    """Replication -> its committed values in order, read through the experiment index."""
    table = Experiment.open(out).select().sort_by([("replication", "ascending"),
                                                   ("epoch", "ascending"),
                                                   ("index", "ascending")])
    values: dict[int, list[float]] = {}
    for rep, value in zip(table["replication"].to_pylist(), table["value"].to_pylist(),
                          strict=True):
        values.setdefault(rep, []).append(value)
    return values


def assert_all_committed(out: Path, replications: int = REPLICATIONS,
                         duration: int = DURATION) -> None:
    assert committed_values(out) == {r: expected_values(r, duration)
                                     for r in range(replications)}


class Sandbox:
    """``root/exp`` (a finished experiment) beside ``root/sibling`` (a user's files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "exp"
        self.sibling = root / "sibling"
        self.sibling.mkdir(parents=True)
        (self.sibling / "notes.txt").write_text("the user's own work\n")
        (self.sibling / "data").mkdir()
        (self.sibling / "data" / "table.parquet").write_bytes(b"PAR1 not really")
        self.config = write_config(root / "exp.yaml", self.out)

    def outside(self) -> dict[str, Any]:
        """The digest of everything in the sandbox except the experiment."""
        return {k: v for k, v in digest(self.root).items()
                if not (k == "exp" or k.startswith("exp/"))}


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    box = Sandbox(tmp_path / "sandbox")
    code, _, err = cli("run", str(box.config), "--no-progress")
    assert code == 0, err
    assert_all_committed(box.out)
    return box


# -- item 1: export --overwrite never deletes an experiment, a logger directory or the source --


def test_export_overwrite_refuses_every_protected_target(sandbox: Sandbox) -> None:
    out = sandbox.out
    logger_dir = sandbox.root / "plain-logger"
    with DataLogger(logger_dir) as dl:
        dl.record(dl.register_stream({"entity": "a"}, value_scale=None), 0.0, [1], [2.0])
    other = sandbox.root / "other-exp"
    code, _, err = cli("run", str(write_config(sandbox.root / "other.yaml", other)),
                       "--no-progress")
    assert code == 0, err
    shard = next((out / "shards").iterdir())
    (sandbox.root / "link-to-sibling").symlink_to(sandbox.sibling)
    before = digest(sandbox.root)
    targets = {
        str(out): "lies inside the experiment",
        str(out / "shards"): "lies inside the experiment",
        str(shard): "lies inside the experiment",
        str(out / "index"): "lies inside the experiment",
        str(out / "new-dir"): "lies inside the experiment",
        str(sandbox.root): "contains the experiment",
        str(other): "is an experiment directory",
        str(other / "shards"): "lies inside the experiment directory",
        str(logger_dir): "is a logger directory",
        str(logger_dir / "streams"): "lies inside the logger directory",
        str(sandbox.sibling): "refusing to overwrite",
        str(sandbox.root / "link-to-sibling"): "is a symbolic link",
    }
    for target, why in targets.items():
        code, stdout, err = cli("export", str(out), "--parquet", target, "--overwrite")
        assert code != 0, (target, stdout)
        one_line_error(err, target, why)
        assert digest(sandbox.root) == before, target
    assert_all_committed(out)
    assert_all_committed(other)


def test_export_overwrite_replaces_a_previous_export(sandbox: Sandbox) -> None:
    target = sandbox.root / "exp-parquet"
    assert cli("export", str(sandbox.out), "--parquet", str(target))[0] == 0
    first = digest(target)
    assert any(k.endswith(".parquet") for k in first)
    code, _, err = cli("export", str(sandbox.out), "--parquet", str(target))
    one_line_error(err, str(target), "exists and is not empty")
    assert code != 0
    outside = {k: v for k, v in digest(sandbox.root).items() if not k.startswith("exp-parquet")}
    assert cli("export", str(sandbox.out), "--parquet", str(target), "--overwrite",
               "--select", "replication=1")[0] == 0
    assert {k: v for k, v in digest(sandbox.root).items()
            if not k.startswith("exp-parquet")} == outside
    import pyarrow.dataset as ds

    table = ds.dataset(target, format="parquet", partitioning="hive").to_table()
    assert set(table["replication"].to_pylist()) == {1}
    assert len(table) == DURATION * RECORDS_PER_DAY


# -- item 2: partition column names cannot climb out of OUT ----------------------------------


def test_partition_column_names_are_refused_when_unsafe(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sandbox")
    out = sandbox.out
    with ShardWriter(out, "byo-1") as shard:
        with shard.replication("t1", replication=0) as rep:
            sid = rep.logger.register_stream(
                {"stream": "s", "../../../X": "v", "unit": "../../../Y", "=k": 1},
                value_scale=None)
            rep.logger.record(sid, 0.0, [1, 2], [1.0, 2.0])
    merge(out)
    before = sandbox.outside()
    export = sandbox.root / "export"
    for column, why in (("../../../X", "path separator"), ("=k", "'='")):
        code, _, err = cli("export", str(out), "--parquet", str(export),
                           "--partition-by", column)
        assert code != 0
        one_line_error(err, repr(column), why)
        assert sandbox.outside() == before and not export.exists()
    # values are escaped: a value of ../../../Y stays one directory inside OUT
    assert cli("export", str(out), "--parquet", str(export), "--partition-by", "unit")[0] == 0
    added = set(digest(sandbox.root)) - set(before) - {k for k in digest(sandbox.root)
                                                       if k == "exp" or k.startswith("exp/")}
    assert added and all(k == "export" or k.startswith("export/") for k in added), added
    assert {k for k in before} <= set(digest(sandbox.root))
    (partition,) = [p.name for p in export.iterdir()]
    assert partition.startswith("unit=") and "/" not in partition


@pytest.mark.parametrize("key", ["../../../X", "a/b", "..", "k=v", ".hidden", "_private",
                                 "tab\there"])
def test_unsafe_label_keys_and_sweep_names_are_refused_at_load(tmp_path: Path, key: str) -> None:
    out = tmp_path / "out"
    label = write_config(tmp_path / "label.yaml", out,
                         streams=[{"name": "level", "value_scale": None, "labels": {key: 1}}])
    sweep = write_config(tmp_path / "sweep.yaml", out, sweep={"grid": {key: [1, 2]}})
    for config in (label, sweep):
        code, _, err = cli("run", str(config), "--no-progress")
        assert code == 2
        line = one_line_error(err, str(config), "unsafe")
        assert "\t" not in line
    assert not out.exists()


# -- item 3: verify --repair touches only regular, listed files inside the experiment --------


def _tear(data: bytes) -> bytes:
    """``data`` cut in the middle of its last frame: a torn tail the walk recognises."""
    return data[: len(data) - 3]


def test_verify_repair_never_follows_a_symlinked_segment(sandbox: Sandbox) -> None:
    out = sandbox.out
    shard = next((out / "shards").iterdir())
    segment = sorted(shard.glob("*.seg.zst"))[0]
    victim = sandbox.sibling / "victim.seg.zst"
    victim.write_bytes(_tear(segment.read_bytes()))
    segment.unlink()
    segment.symlink_to(victim)
    before = sandbox.outside()
    code, stdout, err = cli("verify", str(out))
    assert code == 1 and "all intact" not in stdout
    assert "symbolic link" in stdout
    one_line_error(err, segment.name, "symbolic link")
    code, stdout, err = cli("verify", str(out), "--repair")
    assert code == 1 and "repaired:" not in stdout.replace("not repaired", "")
    assert sandbox.outside() == before  # the victim is untouched, no backup beside it
    assert not list(shard.glob("*.torn-*"))


def test_verify_repair_never_follows_a_symlinked_shard_directory(sandbox: Sandbox) -> None:
    out = sandbox.out
    shard = next((out / "shards").iterdir())
    moved = sandbox.sibling / "moved-shard"
    shutil.move(str(shard), moved)
    segment = sorted(moved.glob("*.seg.zst"))[-1]
    segment.write_bytes(_tear(segment.read_bytes()))
    shard.symlink_to(moved, target_is_directory=True)
    before = sandbox.outside()
    for args in (("verify", str(out)), ("verify", str(out), "--repair")):
        code, stdout, err = cli(*args)
        assert code == 1 and "all intact" not in stdout
        one_line_error(err, shard.name, "symbolic link")
        assert sandbox.outside() == before
    assert not list(moved.glob("*.torn-*"))


def test_verify_reports_a_segment_a_closed_shard_does_not_list(sandbox: Sandbox) -> None:
    shard = next((sandbox.out / "shards").iterdir())
    segment = sorted(shard.glob("*.seg.zst"))[0]
    extra = shard / "00099.seg.zst"
    extra.write_bytes(_tear(segment.read_bytes()))
    code, stdout, err = cli("verify", str(sandbox.out), "--repair")
    assert code == 1 and "not listed" in stdout
    one_line_error(err, "00099.seg.zst", "not listed")
    assert not list(shard.glob("*.torn-*"))  # an unlisted file is not repaired either


def test_verify_repair_waits_for_a_running_run(sandbox: Sandbox) -> None:
    with ExperimentLock(sandbox.out):
        code, _, err = cli("verify", str(sandbox.out), "--repair")
    assert code == 2
    one_line_error(err, f"pid {os.getpid()}", socket.gethostname(), "--repair")


# -- item 5: run --force with shards/ or index/ a symbolic link --------------------------------


@pytest.mark.parametrize("name", ["shards", "index"])
def test_run_refuses_a_symlinked_shards_or_index_directory(tmp_path: Path, name: str) -> None:
    sandbox = Sandbox(tmp_path / "sandbox")
    elsewhere = sandbox.sibling / "elsewhere"
    assert cli("run", str(write_config(tmp_path / "old.yaml", elsewhere)), "--no-progress")[0] == 0
    sandbox.out.mkdir()
    (sandbox.out / name).symlink_to(elsewhere / name, target_is_directory=True)
    before = sandbox.outside()
    code, _, err = cli("run", str(sandbox.config), "--no-progress")
    assert code == 2
    one_line_error(err, str(sandbox.out / name), "symbolic link", "--force")
    assert sandbox.outside() == before
    # --force with a new config: the link goes (never its target), nothing is "resumed"
    code, stdout, err = cli("run", str(sandbox.config), "seed=99", "--force", "--no-progress")
    assert code == 0, err
    assert "removed the symbolic link" in err and "(0 this run, 0 resumed)" not in stdout
    assert f"{REPLICATIONS} this run, 0 resumed" in stdout
    assert sandbox.outside() == before
    assert not (sandbox.out / name).is_symlink() and (sandbox.out / name).is_dir()
    assert_all_committed(sandbox.out)
    assert_all_committed(elsewhere)


def test_force_never_reuses_old_shards_it_could_not_delete(sandbox: Sandbox) -> None:
    """A shard that --force cannot delete stops the run: old data is never resumed under a
    new config."""
    shard = next((sandbox.out / "shards").iterdir())
    shard.chmod(0o555)  # root ignores it: make deletion fail with an immutable-like directory
    (sandbox.out / "shards").chmod(0o555)
    try:
        proc = _as_user_job(["run", str(sandbox.config), "seed=5", "--force", "--no-progress"])
    finally:
        (sandbox.out / "shards").chmod(0o755)
        shard.chmod(0o755)
    if proc is None:
        pytest.skip("needs setpriv to drop root's permission override")
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc.stderr, "--force could not remove", "Permission denied")
    assert "resumed" not in proc.stdout


def _as_user_job(args: list[str]) -> subprocess.CompletedProcess[str] | None:
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return None
        caps = "-dac_override,-dac_read_search,-fowner"
        prefix = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
    return subprocess.run([*prefix, sys.executable, "-m", "disco_data_logger", *args],
                          env=env(), capture_output=True, text=True, timeout=120, check=False)


# -- item 6 and one run at a time: the experiment lock ----------------------------------------


def _wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_second_run_and_force_stop_at_once_while_a_run_is_active(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    reps, days = 8, 8
    config = write_config(tmp_path / "exp.yaml", out, replications=reps, duration=days,
                          parameters={"sleep": 0.25},
                          execution={"backend": "multiprocessing", "workers": 2, "retries": 0})
    command = [sys.executable, "-m", "disco_data_logger", "run", str(config), "--no-progress"]
    first = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait_for(lambda: (out / LOCK_NAME).exists() and (out / "shards").is_dir()
                  and any((out / "shards").iterdir()))
        shards_before = {p.name for p in (out / "shards").iterdir()}
        others = [subprocess.Popen(command + extra, env=env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
                  for extra in ([], ["seed=8", "--force"])]
        for proc in others:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 2, stderr
            one_line_error(stderr, f"pid {first.pid}", f"host {socket.gethostname()}",
                           str(out / LOCK_NAME))
            assert "results:" not in stdout
        assert shards_before <= {p.name for p in (out / "shards").iterdir()}
        assert first.poll() is None, "the first run should still be running"
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert f"{reps}/{reps} replications committed ({reps} this run" in stdout
    assert not (out / LOCK_NAME).exists()
    assert_all_committed(out, reps, days)
    info = json.loads((out / "experiment.json").read_text())
    assert info["totals"]["duplicates_dropped"] == 0 and info["config"]["seed"] == 7


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    config = write_config(tmp_path / "exp.yaml", out, replications=6, parameters={"sleep": 0.2})
    victim = subprocess.Popen([sys.executable, "-m", "disco_data_logger", "run", str(config),
                               "--no-progress"], env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / LOCK_NAME).exists() and (out / "index").is_dir())
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.wait()
    held = json.loads((out / LOCK_NAME).read_text())
    assert held["pid"] == victim.pid  # left behind, naming the dead run
    code, stdout, err = cli("run", str(config), "--no-progress")
    assert code == 0, err
    assert f"took over the lock of a run that is no longer running (pid {victim.pid}" in err
    assert "6/6 replications committed" in stdout
    assert not (out / LOCK_NAME).exists()
    assert_all_committed(out, 6)


def test_the_lock_is_released_when_a_run_fails(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    flag = tmp_path / "bug"
    flag.write_text("")
    config = write_config(tmp_path / "exp.yaml", out, entry_point=f"{MODELS}:fails_while_flagged",
                          parameters={"flag": str(flag)})
    assert cli("run", str(config), "--no-progress")[0] == 1
    assert not (out / LOCK_NAME).exists()
    flag.unlink()
    code, _, err = cli("run", str(config), "--no-progress")
    assert code == 0 and "took over" not in err


def test_a_symlinked_lock_file_is_refused(sandbox: Sandbox) -> None:
    target = sandbox.sibling / "notes.txt"
    (sandbox.out / LOCK_NAME).symlink_to(target)
    before = sandbox.outside()
    code, _, err = cli("run", str(sandbox.config), "--no-progress")
    assert code == 2
    one_line_error(err, str(sandbox.out / LOCK_NAME), "symbolic link")
    assert sandbox.outside() == before


def test_part_locks_and_the_whole_lock_exclude_each_other(tmp_path: Path) -> None:
    with ExperimentLock(tmp_path, "1/2") as one, ExperimentLock(tmp_path, "2/2"):
        assert one.path.name == "run.part-1-of-2.lock"
        with pytest.raises(Exception, match=r"holds part 1/2"):
            ExperimentLock(tmp_path).acquire()
        with pytest.raises(Exception, match=r"holds part 1/2"):
            ExperimentLock(tmp_path, "1/2").acquire()
    with ExperimentLock(tmp_path), pytest.raises(Exception, match=r"holds it since"):
        ExperimentLock(tmp_path, "2/2").acquire()
    assert sorted(os.listdir(tmp_path)) == []


# -- item 7: the printed shell lines are safe to paste ----------------------------------------


def test_the_query_hint_quotes_every_name_and_path(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out dir'$(touch PWNED1)\"; touch PWNED2; \""
    stream = 'a" ; touch PWNED3 ; echo "'
    config = write_config(tmp_path / "exp.yaml", out,
                          streams=[{"name": stream, "value_scale": None}],
                          entry_point=f"{MODELS}:walk")
    cfg = load_config(config)
    assert cfg.streams[0].name == stream  # printable: accepted, and quoted where shown
    lines = query_hint(out, stream)
    assert len(lines) == 2
    bin_dir = Path(sys.executable).parent
    shell_env = {**env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for line in lines:
        subprocess.run(["bash", "-c", line], cwd=work, env=shell_env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("PWNED")) == []
    assert not list(tmp_path.rglob("PWNED*"))


def test_the_query_hint_runs_as_printed(tmp_path: Path) -> None:
    pytest.importorskip("polars")
    pytest.importorskip("duckdb")
    out = tmp_path / "it's here"
    config = write_config(tmp_path / "exp.yaml", out,
                          streams=[{"name": "lev'el \"x\"", "value_scale": None}],
                          entry_point=f"{MODELS}:walk")
    # walk records on "level": give the run the stream it writes, plus the odd one
    doc = yaml.safe_load(config.read_text())
    doc["streams"].append({"name": "level", "value_scale": None})
    config.write_text(yaml.safe_dump(doc))
    code, stdout, err = cli("run", str(config), "--no-progress")
    assert code == 0, err
    printed = stdout.split("query:\n", 1)[1].splitlines()
    assert [line.strip() for line in printed] == query_hint(out, "lev'el \"x\"")
    bin_dir = Path(sys.executable).parent
    shell_env = {**env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for line in printed:
        proc = subprocess.run(["bash", "-c", line.strip()], cwd=tmp_path, env=shell_env,
                              capture_output=True, text=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "it's here-parquet").is_dir()


# -- items 8, 9: bounded configs -------------------------------------------------------------


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ["parameters:", "  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    base = yaml.safe_dump({k: v for k, v in BASE.items() if k != "parameters"})
    config = tmp_path / "bomb.yaml"
    config.write_text(base + f"output: {tmp_path / 'out'}\n" + "\n".join(lines) + "\n")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) forking test process
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from disco_data_logger.cli import main
        code = main(["run", {str(config)!r}, "--no-progress"])
        status = Path("/proc/self/status").read_text().splitlines()
        print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
        sys.exit(code)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env(), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2
    one_line_error(proc.stderr, str(config), "expands to more than 1,000,000 values")
    assert int(proc.stdout.strip()) < 400_000, "peak RSS (KiB): the bomb must not be expanded"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("changes, fragments", [
    ({"replications": 1_000_000_000},
     ["replications: too large to plan: 1000000000 replications x 1 sweep point(s)",
      "at most 1000000 tasks"]),
    ({"sweep": {"grid": {f"k{i}": list(range(10)) for i in range(9)}}},
     ["sweep.grid: too large to plan: a grid of 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 = "
      "1000000000 points"]),
    ({"replications": 2000, "sweep": {"grid": {"a": list(range(100)), "b": list(range(10))}}},
     ["too large to plan: 2000 replications x 1000 sweep point(s) = 2000000 tasks"]),
    ({"execution": {"workers": 20_000}}, ["execution.workers: must be <= 10000"]),
    ({"execution": {"max_failures": 0}}, ["execution.max_failures: must be >= 1"]),
])
def test_sizes_beyond_the_bounds_are_refused_in_one_line(tmp_path: Path, changes: dict[str, Any],
                                                         fragments: list[str]) -> None:
    config = write_config(tmp_path / "big.yaml", tmp_path / "out", **changes)
    code, _, err = cli("run", str(config), "--no-progress")
    assert code == 2
    one_line_error(err, str(config), *fragments)
    assert not (tmp_path / "out").exists()


def test_workers_are_capped_at_the_tasks(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    config = write_config(tmp_path / "exp.yaml", out, replications=2,
                          execution={"backend": "multiprocessing", "workers": 32})
    code, _, err = cli("run", str(config), "--no-progress")
    assert code == 0, err
    assert "note: execution.workers=32 capped at 2: only 2 task(s) to run" in err
    run = json.loads((out / "experiment.json").read_text())["runs"][-1]
    assert run["workers"] == 2 and run["notes"]
    assert len(list((out / "shards").iterdir())) == 2  # two worker processes, two shards
    assert_all_committed(out, 2)


def _one_cpu() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def test_workers_are_capped_at_what_the_machine_allows(tmp_path: Path) -> None:
    """On one CPU (affinity set for the run's process), 10,000 workers become 4."""
    out = tmp_path / "exp"
    config = write_config(tmp_path / "exp.yaml", out, replications=6,
                          execution={"backend": "multiprocessing", "workers": 10_000})
    proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(config),
                           "--no-progress"], env=env(), capture_output=True, text=True,
                          timeout=300, check=False, preexec_fn=_one_cpu)
    assert proc.returncode == 0, proc.stderr
    assert "capped at 6: only 6 task(s) to run" in proc.stderr
    assert "capped at 4: 4 worker processes per CPU, and this process may use 1 CPU(s)" \
        in proc.stderr
    assert json.loads((out / "experiment.json").read_text())["runs"][-1]["workers"] == 4
    assert_all_committed(out, 6)


# -- item 18: reserved names -----------------------------------------------------------------


def test_every_column_the_project_produces_is_reserved(sandbox: Sandbox) -> None:
    """The single list in layout.py covers the real columns of read(), both index tables and
    Experiment.select/export (checked on a real experiment, not on the constants alone)."""
    from disco_data_logger import read

    exp = Experiment.open(sandbox.out)
    shard = next((sandbox.out / "shards").iterdir())
    produced = set(read(shard).column_names) | set(RECORD_COLUMNS)
    produced |= set(STREAM_COLUMNS) | set(REPLICATION_COLUMNS)
    produced |= set(exp.replications.column_names)
    labels = set(exp.label_columns)
    produced |= set(exp.select().column_names) - labels
    produced |= set(exp.select(format="list").column_names) - labels
    produced |= set(exp.streams().column_names) - labels
    missing = produced - RESERVED_LABELS - set(SERVICE_LABELS)
    assert missing == set()
    assert not RESERVED_LABELS & set(SERVICE_LABELS)


@pytest.mark.parametrize("name", ["value", "values", "epoch", "index", "indices", "stream_id",
                                  "task_id", "shard_id", "records", "labels", "point_index",
                                  "attempt", "kind", "value_scale", "status"])
def test_reserved_names_are_refused_everywhere(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    label = write_config(tmp_path / "label.yaml", out,
                         streams=[{"name": "level", "value_scale": None, "labels": {name: 1}}])
    sweep = write_config(tmp_path / "sweep.yaml", out, sweep={"points": [{name: 1}]})
    for config, where in ((label, f"streams[0].labels.{name}"), (sweep, f"sweep.points[0].{name}")):
        code, _, err = cli("run", str(config), "--no-progress")
        assert code == 2
        one_line_error(err, str(config), where, "reserved")
    with DataLogger(tmp_path / "logger") as dl, pytest.raises(InvalidStreamError,
                                                             match=f"label '{name}' is reserved"):
        dl.register_stream({name: 1}, value_scale=None)
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(SERVICE_LABELS))
def test_service_labels_are_the_service_s_alone(tmp_path: Path, name: str) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "out",
                          streams=[{"name": "level", "value_scale": None, "labels": {name: 1}}])
    with pytest.raises(ConfigError, match="the service sets the label"):
        load_config(config)


def test_select_by_task_id_never_matches_a_label(tmp_path: Path) -> None:
    """A label named like a column can only come from a hand-made manifest (the logger refuses
    such labels): the column wins. A 0.2.0 shard's manifest.json is plain JSON, easy to forge."""
    out = tmp_path / "exp"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "experiment_v1", out)
    manifest = out / "shards" / "byo-shard" / "manifest.json"
    doc = json.loads(manifest.read_text())
    real = doc["replications"][0]["task_id"]
    expected = Experiment.open(out).select(f"task_id={real}").num_rows
    assert expected > 0
    doc["replications"][0]["streams"][0]["labels"]["task_id"] = "fake"
    manifest.write_text(json.dumps(doc))
    merge(out)
    exp = Experiment.open(out)
    assert exp.select("task_id=fake").num_rows == 0
    assert exp.select(f"task_id={real}").num_rows == expected


# -- item 19: the fingerprint is the same in every process -----------------------------------


EXOTIC = textwrap.dedent("""
    parameters:
      when: 2001-12-14t21:59:43.10-05:00
      day: 2002-12-14
      blob: !!binary aGVsbG8gd29ybGQ=
      raw: !!binary /w==
      tags: !!set {alpha, beta, gamma, delta, epsilon, zeta, eta, theta}
      big: 123456789012345678901234567890123456789
      huge: 1.0e+400
      tiny: -.inf
      nan: .nan
      pairs: !!omap [b: 1, a: 2]
      keys: {1: one, '1': text, 2.5: float, null: none}
      base: &base {x: 1, y: [1, 2, {z: &inner [1, {w: 2}]}]}
      more: {<<: *base, y: 3, again: *inner}
""")


def test_fingerprint_is_identical_across_processes_and_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = write_config(tmp_path / "exp.yaml", out)
    config.write_text(config.read_text().replace("parameters: {}\n", "") + EXOTIC)
    script = ("import sys; from disco_data_logger.sharding.config import load_config; "
              "print(load_config(sys.argv[1]).fingerprint())")
    prints = set()
    for seed in ("0", "1", "2", "random"):
        proc = subprocess.run([sys.executable, "-c", script, str(config)],
                              env={**env(), "PYTHONHASHSEED": seed}, capture_output=True,
                              text=True, timeout=60, check=True)
        prints.add(proc.stdout.strip())
    assert len(prints) == 1 and re.fullmatch("[0-9a-f]{64}", prints.pop())
    first = cli_process("run", str(config), "--no-progress")
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(config),
                            "replications=4", "--no-progress"],
                           env={**env(), "PYTHONHASHSEED": "12345"}, capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert f"(1 this run, {REPLICATIONS} resumed)" in again.stdout


@pytest.mark.parametrize("value, fragment", [
    ("!!python/name:os.system", "YAML"),
    ('"\\ud800"', "not valid Unicode"),
    ("&r [*r]", "recursive"),
    ("2001-13-45", "invalid value"),
    ("!!int " + "9" * 5000, "invalid value"),
])
def test_values_without_a_canonical_form_are_refused(tmp_path: Path, value: str,
                                                     fragment: str) -> None:
    config = write_config(tmp_path / "exp.yaml", tmp_path / "out")
    config.write_text(config.read_text().replace("parameters: {}", f"parameters: {{x: {value}}}"))
    code, _, err = cli("run", str(config), "--no-progress")
    assert code == 2
    one_line_error(err, str(config), fragment)


# -- item 20: names in terminals and paths ----------------------------------------------------


@pytest.mark.parametrize("key, value, fragment", [
    ("experiment__name", "a/b", "path separator"),
    ("experiment__organisation", "..", "directory"),
    ("experiment__model", "evil\x1b[2J", "control character"),
    ("streams", [{"name": "x\ny", "value_scale": None}], "control character"),
    ("streams", [{"name": " padded", "value_scale": None}], "whitespace"),
    ("streams", [{"name": "s", "value_scale": None, "labels": {"unit": "\x1b]0;title\x07"}}],
     "control character"),
    ("streams", [{"name": "s\u202egnp.exe", "value_scale": None}], "U+202E"),
])
def test_unsafe_names_are_refused_with_an_escaped_one_line_error(tmp_path: Path, key: str,
                                                                 value: Any,
                                                                 fragment: str) -> None:
    config = write_config(tmp_path / "exp.yaml", tmp_path / "out", **{key: value})
    code, _, err = cli("run", str(config), "--no-progress")
    assert code == 2
    line = one_line_error(err, str(config), fragment)
    assert not re.search("[\x00-\x1f\x7f\u202e]", line), repr(line)
    assert not (tmp_path / "out").exists()


def test_an_output_path_with_control_characters_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "exp.yaml", tmp_path / "out\nrm -rf ~")
    code, _, err = cli("run", str(config), "--no-progress")
    assert code == 2
    one_line_error(err, "output", "control character")


# -- issue 10 item 5: a model that always fails stops the run early --------------------------


def test_a_model_that_always_fails_stops_early_and_resumes_when_fixed(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    flag = tmp_path / "bug"
    flag.write_text("")
    reps = 20
    config = write_config(tmp_path / "exp.yaml", out, replications=reps,
                          entry_point=f"{MODELS}:fails_while_flagged",
                          parameters={"flag": str(flag)},
                          execution={"backend": "serial", "retries": 2})
    code, stdout, err = cli("run", str(config), "--no-progress")
    assert code == 1
    assert err.count("Traceback (most recent call last)") == 1
    assert "ValueError: model bug hit by p0000-r000000" in err
    # The tasks already handed to a worker when the run stopped still run (a pipelined backend
    # holds a few), so at least the first three failed and the rest never started.
    last = err.splitlines()[-1]
    n_failed = int(re.search(r"; ([0-9]+) replication\(s\) failed", last).group(1))
    assert 3 <= n_failed <= 6
    one_line_error(last, "run stopped early", "the first 3 attempts all failed "
                   "with the same error (ValueError at", f"{n_failed} replication(s) failed",
                   f"{reps - n_failed} pending", str(out / "index" / "replications.parquet"))
    info = json.loads((out / "experiment.json").read_text())
    assert info["state"] == "failed"
    rows = replication_rows(out)
    statuses = [r["status"] for r in rows]
    assert statuses.count("failed") == n_failed and statuses.count("pending") == reps - n_failed
    assert all((r["attempts"] or 0) <= 1 for r in rows)  # no retry was burnt
    assert "the first 3 attempts" in info["runs"][-1]["stopped_early"]
    flag.unlink()  # the user fixes the model
    code, stdout, err = cli("run", str(config), "--no-progress")
    assert code == 0, err
    assert f"{reps}/{reps} replications committed ({reps} this run, 0 resumed)" in stdout
    assert_all_committed(out, reps)


def replication_rows(out: Path) -> list[dict]:
    """One dict per replication, pending ones included (what ``Experiment.replications`` says)."""
    from disco_data_logger.sharding.experiment import Experiment

    return Experiment.open(out).replications.to_pylist()


def test_max_failures_stops_after_that_many_failed_tasks(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    reps = 12
    config = write_config(tmp_path / "exp.yaml", out, replications=reps,
                          entry_point=f"{MODELS}:fails_some",
                          parameters={"fail_replications": [1, 3, 5, 7, 9]},
                          execution={"backend": "serial", "retries": 0, "max_failures": 3})
    code, _, err = cli("run", str(config), "--no-progress")
    assert code == 1
    one_line_error(err.splitlines()[-1], "3 task(s) failed every attempt "
                   "(execution.max_failures=3)")
    by_status: dict[str, list[int]] = {}
    for r in replication_rows(out):
        by_status.setdefault(r["status"], []).append(r["replication"])
    assert sorted(by_status["failed"]) == [1, 3, 5]
    assert 7 in by_status["pending"] and 9 in by_status["pending"]
    # and with no limit, every task is tried: five fail, the rest commit
    code, stdout, err = cli("run", str(config), "--max-failures", "none", "--no-progress")
    assert code == 1 and "stopped early" not in err
    info = json.loads((out / "experiment.json").read_text())
    failed = sorted(r["replication"] for r in replication_rows(out) if r["status"] == "failed")
    assert failed == [1, 3, 5, 7, 9] and info["totals"]["committed"] == reps - 5
