"""Installs without root or a compiler (docs/install.md).

- The wheel that scripts/build-wheels.sh builds and repairs carries its zstd and a manylinux tag;
  installed into a fresh virtual environment it records and reads, runs the demo experiment, and
  its extension uses the zstd inside the wheel, with the source tree out of the way.
- A non-root user on a machine without the zstd headers builds from source by the README's route:
  scripts/install-system-deps.sh unpacks Debian's libzstd-dev into .deps/zstd without root (and
  without sudo), and the build links it statically.
- Without root and without any way to get zstd, the script says what would work, once, and fails.

The source-build tests hide the system's zstd development files in a private mount namespace and
run as the user ``nobody``, so they need root to set up (CI runs as root). Marked ``wheel``: they
take minutes; deselect with ``-m "not wheel"``. The built wheel is cached in build/test-wheels/
under a digest of everything that goes into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534

pytestmark = [
    pytest.mark.wheel,
    pytest.mark.skipif(not sys.platform.startswith("linux"),
                       reason="the wheel and source-build checks read /proc and ELF files"),
]

# Recording and reading tests of the suite, run against the installed wheel.
SMOKE_TESTS = ["tests/test_logger.py", "tests/test_periodic.py", "tests/test_golden.py",
               "tests/test_pyreader.py"]
# What goes into a wheel: a change to any of it builds a new one.
WHEEL_INPUTS = ("CMakeLists.txt", "pyproject.toml", "README.md", "scripts/build-wheels.sh",
                "cpp/", "disco_data_logger/")
# zstd's development files as Debian's libzstd-dev (and a /usr/local build) install them.
ZSTD_DEV_PATTERNS = ("include/zstd.h", "include/zdict.h", "include/zstd_errors.h",
                     "lib/libzstd.a", "lib/libzstd.so", "lib/pkgconfig/libzstd.pc",
                     "lib/cmake/zstd", "lib/*/libzstd.a", "lib/*/libzstd.so",
                     "lib/*/pkgconfig/libzstd.pc", "lib/*/cmake/zstd")


def source_files() -> list[str]:
    """The project's files (tracked, or new and not ignored), relative to the root."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return sorted(p for p in out.decode().split("\0") if p and (ROOT / p).is_file())


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        pytest.fail(f"{shlex.join(map(str, cmd))} exited {proc.returncode}\n"
                    f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would put the source tree or another
    environment on a child interpreter's path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The repaired wheel for this interpreter, built by scripts/build-wheels.sh (or taken from
    build/test-wheels/ when nothing that goes into it changed)."""
    digest = hashlib.sha256(sys.implementation.cache_tag.encode())
    for rel in source_files():
        if rel.startswith(WHEEL_INPUTS):
            digest.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes())
    cache_root = ROOT / "build" / "test-wheels"
    cache = cache_root / f"{sys.implementation.cache_tag}-{digest.hexdigest()[:16]}"
    built = sorted(cache.glob("*.whl"))
    if built:
        return built[0]
    if cache_root.exists():
        for old in cache_root.glob(f"{sys.implementation.cache_tag}-*"):
            shutil.rmtree(old)
    partial = cache.with_name(cache.name + ".partial")
    proc = run(["bash", "scripts/build-wheels.sh", str(partial)], cwd=ROOT,
               env=clean_env(PYTHON=sys.executable))
    partial.rename(cache)
    return cache / Path(proc.stdout.strip().splitlines()[-1]).name


def test_wheel_carries_its_zstd_and_a_manylinux_tag(wheel: Path) -> None:
    tag = re.fullmatch(r"disco_data_logger-[^-]+-(cp3\d+)-(cp3\d+)-(manylinux_2_\d+_\w+)\.whl",
                       wheel.name)
    assert tag is not None, wheel.name
    assert tag[1] == tag[2] == sys.implementation.cache_tag.replace("cpython-", "cp")
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if re.fullmatch(r"disco_data_logger/_core\..*\.so", n)]
    bundled = [n for n in names if n.startswith("disco_data_logger.libs/") and n[-1] != "/"]
    assert len(bundled) == 1 and re.fullmatch(r"disco_data_logger\.libs/libzstd-\w+\.so[.\d]*",
                                              bundled[0]), bundled
    # auditwheel itself agrees that the tag in the name is the one this wheel satisfies.
    shown = run([str(ROOT / "build" / "wheel-tools" / "bin" / "auditwheel"), "show", str(wheel)])
    assert f'consistent with the following platform tag: "{tag[3]}"' in " ".join(
        shown.stdout.split())


def test_wheel_installs_into_a_fresh_environment_and_uses_its_own_zstd(
        wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    env = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    run([python, "-m", "pip", "install", "-q", str(wheel)], env=env)
    run([python, "-m", "pip", "install", "-q", "pytest>=8", "hypothesis>=6.90"], env=env)

    # As cibuildwheel does: the tests and the pytest settings, copied away from the source tree.
    work = tmp_path / "work"
    shutil.copytree(ROOT / "tests", work / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")

    check = run([python, "tests/wheel_check.py", "--installed", "--zstd", "bundled"],
                cwd=work, env=env)
    report = json.loads(check.stdout)
    site = Path(report["package"]).parent
    assert site.is_relative_to(venv.resolve())
    assert not any(str(ROOT) in p for p in report["sys_path"])
    (provider,) = report["zstd_mapped"]
    assert Path(provider).parent == site / "disco_data_logger.libs"
    assert report["zstd_provider"] == provider
    # The version the extension's zstd reports is the one named by the bundled file.
    major, minor, release = map(int, re.search(r"\.so\.(\d+)\.(\d+)\.(\d+)$", provider).groups())
    assert report["zstd_version"] == major * 10000 + minor * 100 + release >= 10400

    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SMOKE_TESTS],
                cwd=work, env=env)
    assert re.search(r"\d+ passed", tests.stdout)
    assert "skipped" not in tests.stdout.splitlines()[-1]

    # The console script and the packaged demo model, from the wheel.
    shutil.copy(ROOT / "configs" / "demo.yaml", work / "demo.yaml")
    cli = str(venv / "bin" / "disco-data-logger")
    run([cli, "run", "demo.yaml", "replications=2", "execution.workers=2",
         f"output={work / 'runs' / 'demo'}"], cwd=work, env=env)
    inspected = run([cli, "inspect", str(work / "runs" / "demo")], cwd=work, env=env).stdout
    assert re.search(r"replications +4 total: 4 committed, 0 failed", inspected), inspected
    verified = run([cli, "verify", str(work / "runs" / "demo")], cwd=work, env=env).stdout
    assert "all intact" in verified, verified


# --- source builds without root -------------------------------------------------------------


def missing(reason: str) -> NoReturn:
    """Skip for want of a tool; in CI (CI=true), where .ci/run installs every one, fail instead,
    so that a route is never reported as tested when it was not."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (.ci/run should have installed it)")
    pytest.skip(reason)


def system_python() -> str:
    """The distribution's python3, which an unprivileged user can run (this test's own
    interpreter may live in root's home), with venv and the C headers."""
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if python is None:
        missing("no system python3 for the unprivileged build (apt-get install python3-venv "
                "python3-dev)")
    probe = subprocess.run([python, "-c", "import ensurepip, sysconfig, venv, pathlib; "
                            "assert pathlib.Path(sysconfig.get_path('include'), "
                            "'Python.h').is_file()"], capture_output=True)
    if probe.returncode != 0:
        missing(f"{python} lacks venv/ensurepip or Python.h (apt-get install python3-venv "
                "python3-dev)")
    return str(python)


def zstd_dev_files() -> list[Path]:
    found: list[Path] = []
    for prefix in (Path("/usr"), Path("/usr/local")):
        for pattern in ZSTD_DEV_PATTERNS:
            found.extend(p for p in prefix.glob(pattern) if p.exists() or p.is_symlink())
    return sorted(set(found))


def overlay_root(path: Path) -> Path:
    """The directory that is overlaid to hide ``path``: its include/ or library directory."""
    parent = path.parent
    return parent.parent if parent.name in ("pkgconfig", "cmake") else parent


def hide_zstd_dev_script(scratch: Path) -> str:
    """Shell lines, run as root in a private mount namespace, after which the machine looks as if
    zstd's development files were never installed: each directory that holds some of them is
    overlaid, on a tmpfs, with whiteouts of those files. The runtime libzstd.so.1 stays."""
    lines = [f"mount -t tmpfs tmpfs {shlex.quote(str(scratch))}"]
    by_root: dict[Path, list[Path]] = {}
    for path in zstd_dev_files():
        by_root.setdefault(overlay_root(path), []).append(path)
    for n, (root, paths) in enumerate(sorted(by_root.items(), key=lambda kv: len(kv[0].parts))):
        upper, work = scratch / f"{n}-upper", scratch / f"{n}-work"
        lines.append(f"mkdir -p {upper} {work}")
        for path in paths:
            hidden = upper / path.relative_to(root)
            lines.append(f"mkdir -p {shlex.quote(str(hidden.parent))}")
            lines.append(f"mknod {shlex.quote(str(hidden))} c 0 0")
        lines.append(f"mount -t overlay overlay -o lowerdir={root},upperdir={upper},"
                     f"workdir={work} {root}")
    return "\n".join(lines)


@pytest.fixture
def nobody_home() -> Iterator[Path]:
    """A scratch directory the unprivileged user owns (pytest's tmp_path is root's, mode 0700),
    with a ``sudo`` on its PATH that only records that it was called."""
    if os.geteuid() != 0:
        missing("needs root to hide the system's zstd in a mount namespace and to build as the "
                "user nobody (CI runs as root)")
    for tool in ("unshare", "setpriv", "mount", "mknod"):
        if shutil.which(tool) is None:
            missing(f"{tool} (util-linux/coreutils) is not installed")
    home = Path(tempfile.mkdtemp(prefix="ddl-nobody-"))
    try:
        (home / "bin").mkdir()
        sudo = home / "bin" / "sudo"
        sudo.write_text(f"#!/bin/sh\necho \"$@\" >> {home}/sudo-called\nexit 1\n")
        sudo.chmod(0o755)
        (home / "scratch").mkdir()
        os.chown(home, NOBODY, NOBODY)
        for sub in ("bin", "scratch"):
            os.chown(home / sub, NOBODY, NOBODY)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_as_nobody_without_zstd(home: Path, script: str,
                               path: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with bash as the user nobody, in a mount namespace without zstd's
    development files, with a clean environment (no ZSTD_ROOT, conda or prefix variables)."""
    env = {"HOME": str(home), "PATH": f"{home / 'bin'}:{path}", "LANG": "C.UTF-8",
           "TMPDIR": str(home / "scratch"), "PIP_CACHE_DIR": str(home / "pip-cache"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.update({k: v for k, v in os.environ.items()
                if k.startswith("PIP_") and k not in ("PIP_CACHE_DIR", "PIP_USER")})
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--no-new-privs", "env", "-i",
            *(f"{k}={v}" for k, v in env.items()), "bash", "-c", script]
    outer = (hide_zstd_dev_script(home / "scratch" / "overlay") + "\n"
             + "exec " + shlex.join(drop))
    (home / "scratch" / "overlay").mkdir(exist_ok=True)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", outer],
                          capture_output=True, text=True)


def copy_source(dest: Path) -> None:
    for rel in source_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    for dirpath, _, filenames in os.walk(dest):
        os.chown(dirpath, NOBODY, NOBODY)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY)


def test_source_build_as_an_unprivileged_user_without_system_zstd(nobody_home: Path) -> None:
    for tool in ("apt-get", "dpkg-deb", "readelf"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed: the no-root route unpacks Debian's packages")
    python = system_python()
    home = nobody_home
    copy_source(home / "src")
    # The README's develop route with the test dependencies the recording tests need (not the
    # whole [test] extra: Ray, DuckDB and Polars add nothing to what a build proves).
    script = f"""
set -euo pipefail
cd {home}/src
if echo '#include <zstd.h>' | c++ -E -x c++ - >/dev/null 2>&1; then
  echo "zstd.h is visible to the compiler" >&2; exit 97
fi
bash scripts/install-system-deps.sh
{python} -m venv {home}/venv
{home}/venv/bin/python -m pip install -v -e . pytest hypothesis > {home}/pip.log 2>&1
mkdir {home}/elsewhere && cd {home}/elsewhere
{home}/venv/bin/python {home}/src/tests/wheel_check.py --zstd static > {home}/check.json
cd {home}/src
{home}/venv/bin/python -m pytest -q -p no:cacheprovider tests/test_logger.py tests/test_golden.py
"""
    proc = run_as_nobody_without_zstd(home, script, "/usr/local/bin:/usr/bin:/bin")
    pip_log = (home / "pip.log").read_text() if (home / "pip.log").exists() else ""
    assert proc.returncode == 0, (f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n"
                                  f"{proc.stderr[-4000:]}\n--- pip\n{pip_log[-6000:]}")
    assert not (home / "sudo-called").exists()
    assert re.search(r"\d+ passed", proc.stdout)

    # The script said what it did and what else would work, once; the prefix is Debian's package.
    said = [line for line in proc.stderr.splitlines() if line.startswith("disco-data-logger:")]
    assert said == ["disco-data-logger: no zstd headers here and not root, so no apt-get "
                    "install: unpacked Debian's"], proc.stderr
    assert "DDL_SUDO=1" in proc.stderr and "ZSTD_ROOT=" in proc.stderr
    assert (home / "src/.deps/zstd/SOURCE").read_text().startswith("libzstd-dev_")
    # CMake found that prefix, linked its static library, and the extension needs no libzstd.
    deps = f"{home}/src/.deps/zstd"
    assert re.search(rf"zstd \d+\.\d+\.\d+ \(static\): {re.escape(deps)}/include, "
                     rf"{re.escape(deps)}/lib/libzstd\.a", pip_log), pip_log[-6000:]
    report = json.loads((home / "check.json").read_text())
    assert report["zstd_mapped"] == [] and report["zstd_provider"] is None
    extension = Path(report["extension"])
    assert extension.stat().st_uid == NOBODY
    needed = run(["readelf", "-d", str(extension)]).stdout
    assert "NEEDED" in needed and "libzstd" not in needed


def test_install_script_without_root_or_apt_explains_the_choices(nobody_home: Path) -> None:
    home = nobody_home
    copy_source(home / "src")
    # A PATH with the basic tools only: no apt-get, no pkg-config, no compiler.
    tools = home / "tools"
    tools.mkdir()
    for name in ("bash", "sh", "dirname", "id", "cat", "sed", "tail", "mktemp", "rm", "ls"):
        found = shutil.which(name)
        assert found is not None
        (tools / name).symlink_to(found)
    proc = run_as_nobody_without_zstd(
        home, f"cd {home}/src && bash scripts/install-system-deps.sh", str(tools))
    assert proc.returncode == 1, proc.stderr
    assert not (home / "sudo-called").exists()
    assert not (home / "src" / ".deps").exists()
    message = proc.stderr
    assert [line for line in message.splitlines() if line.startswith("disco-data-logger:")] \
        == [message.splitlines()[0]], message
    assert "not root, and no apt-get" in message
    for choice in ("pip install disco-data-logger", "ZSTD_ROOT=", "conda install zstd",
                   "DDL_SUDO=1"):
        assert choice in message, message


def test_install_script_refuses_a_zstd_root_without_zstd(tmp_path: Path) -> None:
    env = clean_env(ZSTD_ROOT=str(tmp_path))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "install-system-deps.sh")], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"ZSTD_ROOT={tmp_path} has no include/zstd.h" in proc.stderr

