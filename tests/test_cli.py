"""The disco-data-logger command: run, merge, inspect, export, verify, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from disco_data_logger.cli import main

CONFIG = {
    "experiment": {"organisation": "acme", "model": "inventory", "name": "cli"},
    "replications": 2,
    "seed": 11,
    "entry_point": "disco_data_logger.models.inventory:run",
    "duration": 21,
    "parameters": {"n_skus": 10, "n_stores": 2},
    "execution": {"backend": "serial", "workers": 1, "retries": 0},
    "streams": [
        {"name": "stock", "epoch_scale": 0.001, "value_scale": 1.0, "periodicity": 1.0,
         "kind": "state"},
        {"name": "orders", "epoch_scale": 0.001, "value_scale": 1.0},
    ],
}


def _config(tmp_path: Path, **changes: object) -> Path:
    doc = {**CONFIG, "output": str(tmp_path / "out"), **changes}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def finished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["run", str(_config(tmp_path)), "--no-progress"]) == 0
    capsys.readouterr()
    return tmp_path / "out"


def test_run_prints_where_and_how_to_query(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(_config(tmp_path)), "replications=3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"results: {tmp_path / 'out'}" in out
    assert "3/3 replications committed" in out
    assert "Experiment.open(" in out and "duckdb" in out
    info = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert info["overrides"] == ["replications=3"]
    assert info["config"]["replications"] == 3 and info["state"] == "complete"


def test_run_again_resumes(finished: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(_config(tmp_path)), "replications=3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(1 this run, 2 resumed)" in out


def test_different_config_is_refused_unless_forced(finished: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = str(_config(tmp_path))
    assert main(["run", config, "seed=12", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert main(["run", config, "seed=12", "--force", "--no-progress"]) == 0
    info = json.loads((finished / "experiment.json").read_text())
    assert info["config"]["seed"] == 12 and info["totals"]["committed"] == 2


def test_inspect_summary(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(finished)]) == 0
    out = capsys.readouterr().out
    for word in ("replications", "2 committed", "streams", "records", "compression ratio",
                 "epoch span"):
        assert word in out
    assert main(["inspect", str(finished), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["replications"]["committed"] == 2 and summary["compressed_bytes"] > 0


def test_merge_command(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(finished / "index")
    assert main(["merge", str(finished)]) == 0
    assert "2 replications committed" in capsys.readouterr().out
    assert list((finished / "index" / "parts").glob("streams-*.parquet"))
    assert (finished / "index" / "replications.parquet").exists()


def test_merge_refuses_a_directory_that_is_not_an_experiment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "experiment.json").write_text('{"mine": true}')
    assert main(["merge", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not an experiment directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.json"]
    assert (tmp_path / "experiment.json").read_text() == '{"mine": true}'


def test_export_command(finished: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pq"
    assert main(["export", str(finished), "--parquet", str(out), "--select", "stream=stock"]) == 0
    assert [p.name for p in out.iterdir()] == ["stream=stock"]
    assert main(["export", str(finished), "--parquet", str(out)]) == 1
    assert "exists" in capsys.readouterr().err


def test_verify_clean_and_corrupted(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(finished)]) == 0
    assert "all intact" in capsys.readouterr().out
    segment = next((finished / "shards").glob("*/*.seg.zst"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert main(["verify", str(finished)]) == 1
    captured = capsys.readouterr()
    assert "!" in captured.out
    assert captured.err.startswith("disco-data-logger: error:")


@pytest.mark.parametrize("changes, field", [
    ({"replications": -1}, "replications"),
    ({"entry_point": "no_such_module_xyz:run"}, "entry_point"),
    ({"streams": [{"name": "a", "value_scale": -1.0}]}, "value_scale"),
])
def test_config_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    changes: dict[str, object], field: str) -> None:
    assert main(["run", str(_config(tmp_path, **changes))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("disco-data-logger: error:") and field in err
    assert "Traceback" not in err


def test_missing_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("inspect", "verify", "merge"):
        assert main([command, str(tmp_path / "nope")]) != 0
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "nope" in err


def test_console_script_exit_code_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: [unclosed\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", str(bad)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "invalid YAML" in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "disco_data_logger", "--debug", "run",
                            str(bad)], capture_output=True, text=True, env=env, timeout=60)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_run_progress_in_a_log_and_on_a_terminal(tmp_path: Path) -> None:
    """The progress of the real command: plain lines into a file, a bar redrawn on a terminal."""
    import fcntl
    import re
    import select
    import struct
    import termios

    config = str(_config(tmp_path))
    log = tmp_path / "run.log"
    with log.open("w") as err:
        proc = subprocess.run([sys.executable, "-m", "disco_data_logger", "run", config],
                              stdout=subprocess.PIPE, stderr=err, text=True, timeout=120)
    assert proc.returncode == 0
    lines = log.read_text().splitlines()
    assert lines and lines[-1].startswith("2/2 replications  ") and "elapsed" in lines[-1]
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", log.read_text())

    screen, program = os.openpty()
    fcntl.ioctl(program, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    try:
        proc2 = subprocess.Popen([sys.executable, "-m", "disco_data_logger", "run", config,
                                  "replications=3"], stdout=subprocess.PIPE, stderr=program,
                                 text=True)
        os.close(program)
        shown = b""
        while True:
            ready = select.select([screen], [], [], 60)[0]
            try:
                chunk = os.read(screen, 1 << 16) if ready else b""
            except OSError:  # the terminal's other end closed
                chunk = b""
            if not chunk:
                break
            shown += chunk
        proc2.communicate(timeout=60)
    finally:
        os.close(screen)
    assert proc2.returncode == 0
    text = shown.decode()
    assert "\x1b[?25l" in text and "━" in text and "3/3 replications" in text, text
    assert "(2 resumed)" in text
