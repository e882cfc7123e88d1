"""The report in a real headless browser: it loads without errors or network requests, and every
chart renders (each one is screenshot and checked for ink).

Needs Debian's ``chromium`` (``.ci/run`` installs it). Without it these tests are skipped, unless
``DDL_REQUIRE_BROWSER=1`` (as in CI), where a missing browser fails them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import yaml
from helpers import run

from disco_data_logger.sharding.experiment import Experiment
from disco_data_logger.sharding.report import write_report
from tests.headless import (
    Chromium,
    chart_boxes,
    colour_count,
    find_chromium,
    ink_fraction,
    open_page,
)

pytestmark = pytest.mark.browser
pytest.importorskip("matplotlib", reason="the report needs the report extra (matplotlib)")

HOSTILE = "<img src=x onerror=console.error(1)>"  # a request and an error if not escaped


@pytest.fixture(scope="module")
def browser() -> Chromium:
    if find_chromium() is None:
        if os.environ.get("DDL_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (DDL_REQUIRE_BROWSER=1): apt-get install "
                        "chromium")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    with Chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    doc = {
        "experiment": {"organisation": "acme", "model": "mm1", "name": "browser"},
        "output": str(tmp / "out"), "replications": 6, "seed": 5,
        "entry_point": "disco_data_logger.models.mm1:run", "duration": 1000.0,
        "seeding": "common", "parameters": {"service_rate": 1.0},
        "sweep": {"grid": {"arrival_rate": [0.5, 0.7, 0.8]}},
        "execution": {"backend": "serial", "workers": 1, "retries": 0},
        "streams": [{"name": "in_system", "value_scale": 1.0},
                    {"name": "sojourn", "value_scale": None},
                    {"name": HOSTILE, "value_scale": 1.0}],  # declared, never recorded
        "metrics": {"L": {"stream": "in_system", "reduce": "time_mean", "window": [100, None]},
                    "W": {"stream": "sojourn", "reduce": "mean", "window": [100, None]}},
    }
    config = tmp / "browser.yaml"
    config.write_text(yaml.safe_dump(doc))
    assert run(config).state == "complete"
    return write_report(Experiment.open(tmp / "out"))


def test_report_loads_offline_without_errors(browser: Chromium, report: Path) -> None:
    url = report.resolve().as_uri()
    page = open_page(browser, url)
    try:
        assert page.problems() == []
        assert page.requests() == [url]  # the page itself, nothing else
        title = page.evaluate("document.title")
        assert title == "acme/mm1/browser: experiment report"
        headings = page.evaluate("Array.from(document.querySelectorAll('h2'))"
                                 ".map(h => h.textContent)")
        assert headings == ["Provenance", "Summary", "Differences against p0000",
                            "Metrics across sweep points", "Convergence",
                            "Streams over simulated time"]
        # the hostile stream name is text, not an element
        assert page.evaluate("document.querySelectorAll('img').length") == 0
    finally:
        page.close()


def test_every_chart_renders(browser: Chromium, report: Path) -> None:
    from PIL import Image

    page = open_page(browser, report.resolve().as_uri())
    try:
        boxes = chart_boxes(page)
        names = [b["name"] for b in boxes]
        assert names == ["metric-L", "metric-W", "convergence-L", "convergence-W",
                         f"fan-{HOSTILE}", "fan-in_system", "fan-sojourn"]
        for box in boxes:
            assert box["width"] > 200 and box["height"] > 100, box
            assert box["shapes"] > 10, box
            png = page.screenshot({k: box[k] for k in ("x", "y", "width", "height")})
            with Image.open(io.BytesIO(png)) as img:
                assert img.width >= int(box["width"]) - 1
            assert ink_fraction(png) > 0.02, box["name"]  # axes, lines and bands drawn
            assert colour_count(png) > 8, box["name"]  # more than a blank frame
        whole = page.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = page.screenshot({"x": 0, "y": 0, "width": whole["width"],
                                "height": min(whole["height"], 4000)})
        assert ink_fraction(shot) > 0.02
        assert page.problems() == []
    finally:
        page.close()
