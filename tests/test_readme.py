"""The README's Python example runs as written, and its quick-start commands match .ci/run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs(capsys) -> None:
    (example,) = _blocks("python")
    shutil.rmtree("/tmp/ddl-readme", ignore_errors=True)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("250 ['stream_id', 'epoch', 'indices', 'values']")
    assert "'entity': 'DC1'" in out


def test_ci_runs_the_readme_test_command() -> None:
    commands = [line for block in _blocks("bash") for line in block.splitlines()]
    test_cmd = next(c for c in commands if "pytest" in c and not c.startswith("#"))
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_cmd.replace("pip install", "python -m pip install") in ci
