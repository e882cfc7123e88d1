"""Damage fuzzer: small real experiments, damaged at random, put through every command.

Two experiments are built once with the real coordinator: ``closed`` (two runs, so two closed
shards) and ``killed`` (a worker killed with SIGKILL in the middle of a replication: a shard with
only its journal and a torn tail, and the retry's shard). Each case copies one of them and
applies one to three damages to whatever files and directories exist (the fuzzer does not know
the layout): truncation, garbage bytes, a JSON value replaced, deletion, a duplicated file or
directory, a file or directory moved outside and replaced by a symbolic link to it, a permission
removed, a stray file. Then a worker process (without root's permission override, so permissions
apply) runs ``inspect``, ``inspect --json``, ``verify``, ``Experiment.open().select()``,
``merge``, ``select`` again, ``export``, ``export --overwrite``, ``run`` (resume) and ``select``
once more. A case passes when

* nothing escapes a command and no traceback is printed; a failing command prints exactly one
  error line, which is not an internal error (``KeyError: ...``) and names a file or directory;
  ``select`` raises only project, OS or path-naming value errors;
* nothing outside the experiment and the export target changed: the directory holding the moved
  originals (the symlinks' targets) is byte for byte the same, and nothing new appeared beside
  the experiment;
* no committed record is silently lost: every row ``select`` returns was recorded by the model
  (the model's values are known in closed form), and a committed task returned short or missing
  came with a warning or an error; after a ``run`` that exits 0, every task is back, complete.

Short mode (the normal suite): ``DDL_DAMAGE_CASES`` cases, default 16, seed ``DDL_DAMAGE_SEED``
(default 20261130). Long mode::

    DDL_DAMAGE_CASES=2000 python -m pytest tests/reliability/test_damage_fuzz.py --runslow

Failing cases are kept under ``DDL_DAMAGE_KEEP`` (default: the test's tmp dir) with their damage
list (``CASE.json``); the first findings are printed. ``DDL_DAMAGE_ONLY=7,49`` runs only those
case numbers of the sequence (to reproduce one).
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tests.reliability.hostile_models import RECORDS_PER_DAY
from tests.reliability.test_hostile_service import digest

REPO = Path(__file__).resolve().parents[2]
MODELS = "tests.reliability.hostile_models"
SHORT_CASES = 16
SEED = 20261130
CASE_TIMEOUT = 300.0
DURATION = 4


@dataclass
class Base:
    name: str
    path: Path
    config: dict[str, Any]
    tasks: list[str]
    expected: dict[str, list[list[float]]] = field(default_factory=dict)


def _env() -> dict[str, str]:
    paths = [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _rows(replication: int) -> list[list[float]]:
    """What ``walk`` records for one replication: (epoch, index, value) in order."""
    return [[day + 0.5, float(i), float(day * 1000 + replication)]
            for day in range(DURATION) for i in range(RECORDS_PER_DAY)]


def _run(config: dict[str, Any], path: Path, *overrides: str) -> None:
    cfg = path.with_suffix(".yaml")
    cfg.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(cfg),
                           "--no-progress", *overrides], env=_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr


def _config(output: Path, replications: int, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "experiment": {"organisation": "acme", "model": "walk", "name": "damage"},
        "output": str(output), "replications": replications, "seed": 5,
        "entry_point": f"{MODELS}:walk", "duration": DURATION, "parameters": {},
        "execution": {"backend": "serial", "workers": 1, "retries": 2},
        "logger": {"flush_interval": 0.1, "ring_bytes": "1MiB", "block_bytes": "4KiB",
                   "rotate_bytes": "8KiB"},
        "streams": [{"name": "level", "value_scale": None}],
    }
    config.update(changes)
    return config


def _build_bases(root: Path) -> list[Base]:
    root.mkdir(parents=True, exist_ok=True)
    closed = root / "closed"
    config = _config(closed, 4)
    _run({**config, "replications": 2}, closed)
    _run(config, closed)
    killed = root / "killed"
    markers = root / "markers"
    kconfig = _config(killed, 3, entry_point=f"{MODELS}:killed_once",
                      parameters={"marker_dir": str(markers), "kill_replications": [1]},
                      execution={"backend": "multiprocessing", "workers": 1, "retries": 2})
    _run(kconfig, killed)
    assert any(markers.iterdir()), "the worker was not killed"
    bases = []
    for name, path, cfg in (("closed", closed, config), ("killed", killed, kconfig)):
        tasks = [f"p0000-r{r:06d}" for r in range(cfg["replications"])]
        base = Base(name, path, {**cfg, "execution": {**cfg["execution"], "backend": "serial"}},
                    tasks, {t: _rows(r) for r, t in enumerate(tasks)})
        bases.append(base)
    return bases


# -- damage ----------------------------------------------------------------------------------

JSON_VALUES = [None, "x", "", -1, 0, 2**70, 1e308, [], {}, True, "../../../outside", "NaN"]


def _entries(exp: Path) -> list[Path]:
    out = []
    for top, dirs, files in os.walk(exp, followlinks=False):
        out.extend(Path(top) / n for n in [*dirs, *files])
    return sorted(out)


def _json_edit(rng: random.Random, data: Any) -> Any:
    """``data`` with one value somewhere inside replaced (or a key removed)."""
    if isinstance(data, dict) and data and rng.random() < 0.8:
        key = rng.choice(sorted(data))
        if rng.random() < 0.2:
            del data[key]
        else:
            data[key] = _json_edit(rng, data[key])
        return data
    if isinstance(data, list) and data and rng.random() < 0.8:
        i = rng.randrange(len(data))
        data[i] = _json_edit(rng, data[i])
        return data
    return rng.choice(JSON_VALUES)


def damage(rng: random.Random, exp: Path, outside: Path) -> dict[str, Any] | None:
    entries = _entries(exp)
    if not entries:
        return None
    target = rng.choice(entries)
    rel = str(target.relative_to(exp))
    is_file = target.is_file() and not target.is_symlink()
    kind = rng.choice(["truncate", "garbage", "json", "delete", "duplicate", "symlink",
                       "chmod", "stray"])
    if kind in ("truncate", "garbage", "json") and not is_file:
        kind = "stray"
    if kind == "truncate":
        size = target.stat().st_size
        cut = rng.randrange(size) if size else 0
        with open(target, "r+b") as fh:
            fh.truncate(cut)
        return {"kind": kind, "target": rel, "size": cut}
    if kind == "garbage":
        data = bytearray(target.read_bytes())
        if data and rng.random() < 0.7:
            at = rng.randrange(len(data))
            n = rng.randint(1, 64)
            data[at:at + n] = rng.randbytes(n)
            target.write_bytes(bytes(data))
            return {"kind": kind, "target": rel, "at": at, "n": n}
        target.write_bytes(rng.randbytes(rng.randint(0, 200)))
        return {"kind": "garbage-whole", "target": rel}
    if kind == "json":
        text = target.read_bytes()
        try:
            if target.suffix == ".jsonl":
                lines = text.decode().splitlines()
                i = rng.randrange(len(lines))
                lines[i] = json.dumps(_json_edit(rng, json.loads(lines[i])))
                target.write_text("\n".join(lines) + "\n")
            else:
                target.write_text(json.dumps(_json_edit(rng, json.loads(text))))
        except (ValueError, UnicodeDecodeError):
            target.write_bytes(text[: len(text) // 2])
            return {"kind": "json-cut", "target": rel}
        return {"kind": kind, "target": rel}
    if kind == "delete":
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        return {"kind": kind, "target": rel}
    if kind == "duplicate":
        copy = target.with_name(target.name + "-dup")
        if target.name.endswith(".seg.zst"):
            number = int(target.name.split(".")[0]) if target.name[0].isdigit() else 0
            copy = target.with_name(f"{number + 50:05d}.seg.zst")
        while os.path.lexists(copy):
            copy = copy.with_name("x" + copy.name)
        if target.is_dir() and not target.is_symlink():
            shutil.copytree(target, copy, symlinks=True)
        else:
            shutil.copy2(target, copy, follow_symlinks=False)
        return {"kind": kind, "target": rel, "copy": str(copy.relative_to(exp))}
    if kind == "symlink":
        moved = outside / f"moved-{len(list(outside.iterdir()))}-{target.name}"
        shutil.move(str(target), moved)
        target.symlink_to(moved, target_is_directory=moved.is_dir())
        return {"kind": kind, "target": rel, "to": str(moved)}
    if kind == "chmod":
        mode = rng.choice([0o000, 0o444, 0o555, 0o200])
        target.chmod(mode)
        return {"kind": kind, "target": rel, "mode": oct(mode)}
    where = target if target.is_dir() and not target.is_symlink() else target.parent
    stray = where / rng.choice(["stray", "00007.seg.zst", "manifest.json", "x.parquet",
                                "run.lock", "streams.parquet", "README"])
    if stray.exists() or stray.is_symlink():
        stray = where / f"stray-{rng.randrange(1 << 30)}"
    stray.write_bytes(rng.randbytes(rng.randint(0, 100)))
    return {"kind": "stray", "target": str(stray.relative_to(exp))}


def _restore_permissions(root: Path) -> None:
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(top) / name
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)
        # os.walk could not list unreadable directories before; they are readable now
    os.chmod(root, 0o755)


# -- the worker ------------------------------------------------------------------------------


def _without_root_override() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return []  # permission damage then tests less, everything else the same
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [*_without_root_override(), sys.executable, "-m", "tests.reliability.damage_worker"],
            cwd=REPO, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        hello = self._reply(120.0)
        assert hello and hello.get("ready"), "damage worker did not start"

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, request: dict[str, Any]) -> dict[str, Any] | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._reply(CASE_TIMEOUT)

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
        return stderr


# -- checks ----------------------------------------------------------------------------------
#
# Every finding has a category, so that each promise is its own test below:
#   outside  something outside the experiment and the export target changed
#   crash    an exception escaped, a traceback, an internal error type, a worker death or hang,
#            more than one error line, select raising something that is not a clear error
#   unnamed  a one-line error that names no file or directory
#   loss     a committed record silently lost, rows never recorded, a run that exits 0 with
#            records missing

Finding = tuple[str, str]

_INTERNAL = re.compile(r"^disco-data-logger: error: ([A-Za-z_][A-Za-z0-9_.]*"
                       r"(Error|Exception|Exit|Interrupt)):")


def _names_a_path(line: str, names: set[str], case: Path) -> bool:
    return str(case) in line or any(n in line for n in names)


def check_command(c: dict[str, Any], names: set[str], case: Path) -> list[Finding]:
    what = " ".join(a if not a.startswith("/") else Path(a).name for a in c["args"])
    if c["escaped"]:
        return [("crash", f"{what}: an exception escaped: {c['escaped'][-400:]}")]
    found: list[Finding] = []
    if c["traceback"]:
        found.append(("crash", f"{what}: printed a traceback: {c['stderr_tail'][-400:]}"))
    errors = c["errors"]
    if c["code"] == 0:
        if errors:
            found.append(("crash", f"{what}: exit 0 with an error line {errors[0]}"))
        return found
    if len(errors) != 1:
        found.append(("crash", f"{what}: exit {c['code']} with {len(errors)} error lines: "
                               f"{c['stderr_tail'][-300:]}"))
        return found
    line = errors[0]
    internal = _INTERNAL.match(line)
    if internal:
        found.append(("crash", f"{what}: internal error {internal.group(1)}: {line}"))
    elif not _names_a_path(line, names, case):
        found.append(("unnamed", f"{what}: error names no file or directory: {line}"))
    return found


def _contained(got: list[list[float]], want: list[list[float]]) -> bool:
    left = Counter(map(tuple, want))
    left.subtract(Counter(map(tuple, got)))
    return all(v >= 0 for v in left.values())


def check_select(stage: str, sel: dict[str, Any], base: Base, case: Path,
                 committed: set[str], must_be_complete: bool) -> list[Finding]:
    if "error" in sel:
        clean = sel["project"] or sel["os"] or (sel["value"] and str(case) in sel["message"])
        message = f"select ({stage}): {sel['error']}: {sel['message'][:300]}"
        if not clean:
            return [("crash", message + f"\n{sel['traceback'][-600:]}")]
        if must_be_complete:
            return [("loss", "run exited 0, then " + message)]
        return []
    found: list[Finding] = []
    rows = sel["rows"]
    for task, got in rows.items():
        want = base.expected.get(task)
        if want is None:
            found.append(("loss", f"select ({stage}): rows of a task never planned: {task}"))
        elif not _contained(got, want):
            found.append(("loss", f"select ({stage}): task {task} returned rows that were never "
                                  f"recorded ({len(got)} rows, {len(want)} recorded)"))
    short = sorted(t for t in (base.tasks if must_be_complete else committed)
                   if len(rows.get(t, [])) < len(base.expected[t]))
    if short and must_be_complete:
        found.append(("loss", f"select ({stage}): run exited 0 but {len(short)} task(s) lack "
                              f"records ({short[0]}: {len(rows.get(short[0], []))} of "
                              f"{len(base.expected[short[0]])})"))
    elif short and not sel["warnings"] and not sel.get("earlier_warnings"):
        found.append(("loss", f"select ({stage}): committed records of {short} silently lost "
                              f"({short[0]}: {len(rows.get(short[0], []))} of "
                              f"{len(base.expected[short[0]])})"))
    return found


# -- the run ---------------------------------------------------------------------------------


@dataclass
class FuzzRun:
    cases: int
    seed: int
    keep: Path
    kinds: Counter[str]
    findings: dict[str, list[str]]
    failing_cases: set[int]

    def report(self, category: str) -> str:
        items = self.findings.get(category, [])
        return (f"{len(items)} {category} finding(s) in {self.cases} damaged experiments "
                f"(seed {self.seed}; failing cases kept under {self.keep}):\n"
                + "\n".join(items[:20]))


def _committed(base: Base) -> set[str]:
    table = pq.read_table(base.path / "index" / "replications.parquet")
    return {r["task_id"] for r in table.to_pylist() if r["status"] == "committed"}


def fuzz(bases: list[Base], root: Path, cases: int, seed: int, keep: Path,
         only: set[int]) -> FuzzRun:
    committed = {b.name: _committed(b) for b in bases}
    for b in bases:
        assert committed[b.name] == set(b.tasks), f"base {b.name} is not complete"
    run = FuzzRun(cases, seed, keep, Counter(), {}, set())
    worker = Worker()
    try:
        for n in range(cases):
            if only and n not in only:
                continue
            rng = random.Random(seed * 1_000_003 + n)
            base = rng.choice(bases)
            case = root / f"case-{n:05d}"
            exp, outside, export = case / "exp", case / "outside", case / "export"
            shutil.copytree(base.path, exp, symlinks=True)
            outside.mkdir()
            config = case / "config.yaml"
            config.write_text(yaml.safe_dump({**base.config, "output": str(exp)}))
            damages = [d for _ in range(rng.randint(1, 3))
                       if (d := damage(rng, exp, outside)) is not None]
            run.kinds.update(d["kind"] for d in damages)
            names = {p.name for p in _entries(exp) if len(p.name) >= 5} | {
                p.name for p in _entries(base.path) if len(p.name) >= 5}
            outside_before = digest(outside)
            reply = worker.run({"exp": str(exp), "export": str(export), "config": str(config)})
            found: list[Finding] = []
            if reply is None or "worker_error" in reply:
                stderr = worker.close()
                found.append(("crash", f"worker died or hung: {(reply or {}).get('worker_error')}"
                                       f" {stderr[-1500:]}"))
                worker = Worker()
            else:
                for c in reply["commands"]:
                    found += check_command(c, names, case)
                run_ok = reply["commands"][-1]["code"] == 0
                for stage in ("first", "merged", "resumed"):
                    found += check_select(stage, reply["select"][stage], base, case,
                                          committed[base.name],
                                          must_be_complete=stage == "resumed" and run_ok)
            outside_after = digest(outside)  # before permissions are restored below
            _restore_permissions(case)
            if outside_after != outside_before:
                found.append(("outside", "something outside the experiment changed (the "
                                         "targets of the symbolic links)"))
            beside = sorted(p.name for p in case.iterdir())
            if not set(beside) <= {"exp", "outside", "export", "config.yaml"}:
                found.append(("outside", f"new entries beside the experiment: {beside}"))
            if found:
                run.failing_cases.add(n)
                kept = keep / case.name
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(case, kept, symlinks=True)
                (kept / "CASE.json").write_text(json.dumps(
                    {"seed": seed, "case": n, "base": base.name, "damages": damages,
                     "findings": found}, indent=1))
                for category, message in found:
                    run.findings.setdefault(category, []).append(
                        f"case {n} ({base.name}, {damages}): {message}")
            shutil.rmtree(case)
    finally:
        worker.close()
    return run


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory: pytest.TempPathFactory,
             pytestconfig: pytest.Config) -> FuzzRun:
    cases = int(os.environ.get("DDL_DAMAGE_CASES", SHORT_CASES))
    if cases > SHORT_CASES and not pytestconfig.getoption("--runslow"):
        pytest.skip("more than the short mode's cases: run with --runslow")
    seed = int(os.environ.get("DDL_DAMAGE_SEED", SEED))
    root = tmp_path_factory.mktemp("damage")
    keep = Path(os.environ.get("DDL_DAMAGE_KEEP", root / "kept"))
    only = {int(x) for x in os.environ.get("DDL_DAMAGE_ONLY", "").split(",") if x.strip()}
    bases = _build_bases(root / "bases")
    (root / "cases").mkdir()
    run = fuzz(bases, root / "cases", cases, seed, keep, only)
    print(f"\ndamage fuzz: {cases} cases (seed {seed}), damages {dict(sorted(run.kinds.items()))}"
          f", {len(run.failing_cases)} failing: "
          + ", ".join(f"{k} {len(v)}" for k, v in sorted(run.findings.items())))
    return run


# -- the promises, one test each --------------------------------------------------------------


def test_damage_never_changes_anything_outside_the_experiment(fuzz_run: FuzzRun) -> None:
    assert not fuzz_run.findings.get("outside"), fuzz_run.report("outside")


def test_damage_never_crashes_a_command(fuzz_run: FuzzRun) -> None:
    assert not fuzz_run.findings.get("crash"), fuzz_run.report("crash")


def test_damage_errors_name_the_file(fuzz_run: FuzzRun) -> None:
    assert not fuzz_run.findings.get("unnamed"), fuzz_run.report("unnamed")


def test_damage_never_loses_a_committed_record_silently(fuzz_run: FuzzRun) -> None:
    assert not fuzz_run.findings.get("loss"), fuzz_run.report("loss")
