"""The project's documentation stands on its own: every relative link and every repository path
that README.md and docs/*.md mention exists (or is output the project's commands generate, which
.gitignore lists), and no text of the repository cites a specification kept outside it."""

from __future__ import annotations

import fnmatch
import glob
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
"""A markdown link's target: ``[text](target "title")``."""

PATH = re.compile(r"(?<![\w./-])((?:docs|scripts|benchmarks|tests|configs|cpp|disco_data_logger"
                  r"|data_logger)/[\w.*/-]*[\w*])")
"""A path of the repository mentioned in text (``docs/FORMAT.md``, ``benchmarks/scale.py``)."""

OUTSIDE = ["SPEC" + " section", "SPEC" + ".md", "../" + "shared/", "/work/" + "shared"]
"""Ways of citing a specification kept outside the repository (split so that this file does
not cite one itself)."""


def ignored_patterns() -> list[str]:
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "!"))]


def generated(path: str) -> bool:
    """Whether ``path`` is output the project's commands make (an ignored name, or inside one)."""
    parts = path.split("/")
    for pattern in ignored_patterns():
        anchored = pattern.strip("/")
        if pattern.endswith("/"):
            if any("/".join(parts[:i]) == anchored or fnmatch.fnmatch(parts[i - 1], anchored)
                   for i in range(1, len(parts) + 1)):
                return True
        elif any(fnmatch.fnmatch(part, anchored) for part in parts):
            return True
    return False


def repository_texts() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
        files = [ROOT / name for name in out]
    except (OSError, subprocess.CalledProcessError):  # not a checkout (an unpacked sdist)
        files = [p for p in ROOT.rglob("*") if p.is_file() and not generated(
            str(p.relative_to(ROOT)))]
    return [p for p in files if p.is_file() and p.suffix not in {".png", ".zst", ".parquet",
                                                                  ".seg", ".arrow"}]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(doc: Path) -> None:
    missing = []
    for match in LINK.finditer(doc.read_text(encoding="utf-8")):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or a heading of the same page
        if not (doc.parent / target.split("#", 1)[0]).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_mentioned_paths_exist(doc: Path) -> None:
    missing = []
    for match in PATH.finditer(doc.read_text(encoding="utf-8")):
        path = match.group(1).rstrip(".")
        if "*" in path:
            if not glob.glob(str(ROOT / path)):
                missing.append(path)
        elif not (ROOT / path).exists() and not generated(path):
            missing.append(path)
    assert not missing, f"{doc.name} mentions paths that do not exist: {missing}"


def test_the_path_check_sees_a_missing_file() -> None:
    # The checks above must be able to fail: a made-up path is neither there nor generated.
    assert not generated("docs/no-such-page.md") and not (ROOT / "docs/no-such-page.md").exists()
    assert generated("benchmarks/results/scale") and generated("disco_data_logger/_core.abi3.so")
    assert PATH.findall("see docs/FORMAT.md, and `scripts/sanitize.sh`.") == \
        ["docs/FORMAT.md", "scripts/sanitize.sh"]


def test_no_text_cites_a_specification_outside_the_repository() -> None:
    found = []
    for path in repository_texts():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for needle in OUTSIDE:
            if needle.lower() in text.lower():
                found.append(f"{path.relative_to(ROOT)}: {needle!r}")
    assert not found, found
