"""The HTML report as text: sections, escaping, no external references, atomic writing.

Rendering in a real browser is tested in tests/integration/test_report_browser.py.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from disco_data_logger.errors import MetricError, MissingDependencyError
from disco_data_logger.sharding import Experiment
from disco_data_logger.sharding.report import build_report, write_report
from tests.experiments import Rep, StreamData, write_experiment

pytest.importorskip("matplotlib", reason="the report needs the report extra (matplotlib)")

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    root = tmp_path_factory.mktemp("report")
    reps = [Rep(f"p{p:04d}-r{r:06d}", f"p{p:04d}", p, r,
                {"x": StreamData([(1.0, {0: float(p + r)}), (2.0, {1: 1.0})]),
                 HOSTILE: StreamData([(0.5, {0: 1.0})])})
            for p in range(2) for r in range(3)]
    write_experiment(root, reps)
    return Experiment.open(root)


def test_sections_and_charts(experiment: Experiment) -> None:
    text = build_report(experiment, metrics={"total": {"stream": "x", "reduce": "sum"},
                                             "double": {"expr": "2 * total"}})
    for heading in ("Provenance", "Summary", "Differences against p0000",
                    "Metrics across sweep points", "Convergence", "Streams over simulated time"):
        assert f"<h2>{heading}" in text
    charts = re.findall(r'<figure class="chart" data-chart="([^"]*)">', text)
    assert charts == ["metric-total", "metric-double", "convergence-total",
                      "convergence-double", "fan-&lt;img src=x onerror=alert(1)&gt;", "fan-x"]
    assert text.count("<svg") == len(charts)
    # no config: independent samples, and the report says why
    assert "seeding: common" in text and "welch" in text


def test_names_from_disk_are_escaped(experiment: Experiment) -> None:
    text = build_report(experiment, metrics={"total": {"stream": "x", "reduce": "sum"}})
    assert HOSTILE not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_nothing_external(experiment: Experiment) -> None:
    text = build_report(experiment, metrics={"total": {"stream": "x", "reduce": "sum"}})
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", text)
    assert not re.search(r"""url\(\s*["']?\s*(https?:|//|file:)""", text)


def test_without_metrics_the_report_says_how_to_add_them(experiment: Experiment) -> None:
    text = build_report(experiment)
    assert "declares no metrics" in text and "<h2>Summary" not in text
    assert text.count("<svg") == 2  # the fans still are
    with pytest.raises(MetricError, match="unknown stream"):
        build_report(experiment, metrics={"m": {"stream": "nope", "reduce": "sum"}})
    with pytest.raises(MetricError, match="confidence"):
        build_report(experiment, confidence=95)


def test_write_report_is_atomic_and_never_follows_a_link(experiment: Experiment,
                                                         tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "report.html"
    os.symlink(victim, link)
    written = write_report(experiment, link,
                           metrics={"total": {"stream": "x", "reduce": "sum"}})
    assert written == link and not link.is_symlink()
    assert victim.read_text() == "keep me"
    assert link.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    default = write_report(experiment, metrics={"total": {"stream": "x", "reduce": "sum"}})
    assert default == experiment.path / "report.html"


def test_missing_matplotlib_is_a_clear_error(experiment: Experiment,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the extra is not installed: importing matplotlib fails
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "disco-data-logger\[report\]"'):
        build_report(experiment)
