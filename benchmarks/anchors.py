"""The anchors' virtual environment: made only by ``python -m benchmarks --setup-anchors``.

disco-data-logger 0.1.5 is the old release of our own distribution name, so it cannot live in the
project's environment. Its ``main.py`` imports ``graphblas`` (python-graphblas) and its
``collector.py`` imports ``tools.label_selector`` (distribution ``disco-tools``); both are declared
dependencies of the 0.1.5 wheel and come with it. pyarrow and numpy are pinned to the project
environment's versions so that the Arrow read/write code the contenders share is the same build;
matplotlib is there to draw the plot without adding it to the project's environment.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

ANCHOR_DIR = Path(__file__).resolve().parent / ".anchors"
VENV_DIR = ANCHOR_DIR / "venv"
SEED_REQUIREMENT = "disco-data-logger==0.1.5"


def venv_python() -> Path | None:
    """The anchors venv's interpreter, or None when ``--setup-anchors`` has not been run."""
    python = VENV_DIR / "bin" / "python"
    return python if python.exists() else None


def _pinned(name: str) -> str:
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return name


def setup(log=print) -> Path:
    """Create (or complete) the anchors venv and check that the seed imports and runs there."""
    ANCHOR_DIR.mkdir(parents=True, exist_ok=True)
    python = venv_python()
    if python is None:
        log(f"creating {VENV_DIR}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV_DIR)
        python = VENV_DIR / "bin" / "python"
    requirements = [SEED_REQUIREMENT, _pinned("numpy"), _pinned("pyarrow"), "matplotlib"]
    log("installing " + " ".join(requirements))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *requirements], check=True)
    check = ("import data_logger, graphblas, tools.label_selector, pyarrow, matplotlib;"
             "from importlib.metadata import version;"
             "print('disco-data-logger', version('disco-data-logger'))")
    out = subprocess.run([str(python), "-c", check], check=True, capture_output=True, text=True)
    log("anchors ready: " + out.stdout.strip())
    return python


if __name__ == "__main__":
    setup()
    sys.exit(0)
