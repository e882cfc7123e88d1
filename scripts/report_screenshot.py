"""Screenshot an experiment report in headless Chromium (for docs/report.png).

    python scripts/report_screenshot.py runs/demo/report.html docs/report.png

Uses the DevTools-protocol driver of the tests (tests/headless.py), so it needs the test extras
and Debian's chromium. The top of the page is captured (provenance, summary, differences and the
charts across sweep points), at reduced scale to keep the file small.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.headless import Chromium, ink_fraction, open_page  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--height", type=int, default=2300, help="CSS pixels from the top")
    parser.add_argument("--scale", type=float, default=0.6)
    args = parser.parse_args()
    with Chromium(width=1280, height=900) as browser:
        page = open_page(browser, args.report.resolve().as_uri())
        problems = page.problems()
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        size = page.send("Page.getLayoutMetrics")["cssContentSize"]
        png = page.screenshot({"x": 0, "y": 0, "width": size["width"],
                               "height": min(size["height"], args.height),
                               "scale": args.scale})
        page.close()
    if ink_fraction(png) < 0.02:
        print("the screenshot is blank", file=sys.stderr)
        return 1
    args.png.write_bytes(png)
    print(f"wrote {args.png} ({len(png) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
