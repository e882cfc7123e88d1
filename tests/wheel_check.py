"""Which disco-data-logger and which zstd the running environment really uses.

Run inside the environment under test, from a directory outside the source tree
(tests/test_wheel.py does so for a freshly installed wheel and for a source build as an
unprivileged user; [tool.cibuildwheel] does so for every wheel of the release matrix):

    python tests/wheel_check.py [--installed] [--zstd bundled|static]

It imports the package, then reads the process's own memory map (/proc/self/maps) to see every
libzstd file loaded, and asks the dynamic linker which file provides the ``ZSTD_versionNumber``
that the extension resolves. It prints what it found as JSON and exits non-zero, naming the
problem, when an expectation fails:

- ``--installed``: the package and its extension come from site-packages, and no source tree or
  editable-install hook is on ``sys.path``;
- ``--zstd bundled``: the extension's zstd is a shared library inside the installed distribution
  (what auditwheel puts in ``disco_data_logger.libs/``), and no other libzstd is loaded;
- ``--zstd static``: zstd is linked into the extension: no libzstd is loaded at all.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def mapped_zstd_files() -> list[str]:
    """Every libzstd shared object mapped into this process, by real path."""
    found: set[str] = set()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and Path(parts[5].strip()).name.startswith("libzstd"):
                found.add(os.path.realpath(parts[5].strip()))
    return sorted(found)


def zstd_symbol_provider(extension: str) -> tuple[str | None, int | None]:
    """The file that provides ``ZSTD_versionNumber`` as the extension sees it (its own dependency
    tree, as dlsym on its handle searches it), and the version that function reports. (None,
    None) when the symbol is not visible: zstd linked statically with its symbols kept private."""
    handle = ctypes.CDLL(extension, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    try:
        function = handle.ZSTD_versionNumber
    except AttributeError:
        return None, None
    function.restype = ctypes.c_uint
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    info = _DlInfo()
    address = ctypes.cast(function, ctypes.c_void_p)
    if not libc.dladdr(address, ctypes.byref(info)):
        raise SystemExit("wheel_check: dladdr found no object for ZSTD_versionNumber")
    return os.path.realpath(info.dli_fname.decode()), int(function())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installed", action="store_true")
    parser.add_argument("--zstd", choices=["bundled", "static"])
    args = parser.parse_args()

    import disco_data_logger
    from disco_data_logger import _core

    site_dirs = {os.path.realpath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    package_dir = os.path.realpath(os.path.dirname(disco_data_logger.__file__))
    extension = os.path.realpath(_core.__file__)
    report: dict[str, Any] = {
        "python": sys.executable,
        "package": package_dir,
        "extension": extension,
        "site_packages": sorted(site_dirs),
        "sys_path": sys.path,
        "editable_hooks": sorted(m for m in sys.modules if "editable" in m),
    }
    problems: list[str] = []
    if args.installed:
        if os.path.dirname(package_dir) not in site_dirs:
            problems.append(f"disco_data_logger imported from {package_dir}, not site-packages")
        if os.path.dirname(os.path.dirname(extension)) not in site_dirs:
            problems.append(f"the extension {extension} is not in site-packages")
        sources = [p for p in sys.path if (Path(p or ".") / "CMakeLists.txt").exists()]
        if sources:
            problems.append(f"a source tree is on sys.path: {sources}")
        if report["editable_hooks"]:
            problems.append(f"editable-install hooks are loaded: {report['editable_hooks']}")

    if sys.platform.startswith("linux"):
        maps = mapped_zstd_files()
        provider, version = zstd_symbol_provider(extension)
        report.update(zstd_mapped=maps, zstd_provider=provider, zstd_version=version)
        distribution_root = os.path.dirname(package_dir)
        if args.zstd == "bundled":
            if provider is None:
                problems.append("the extension resolves no ZSTD_versionNumber: zstd is not a "
                                "shared library beside it")
            elif not provider.startswith(distribution_root + os.sep + "disco_data_logger"):
                problems.append(f"the extension's zstd is {provider}, outside the installed "
                                "distribution")
            if maps != ([provider] if provider else []):
                problems.append(f"libzstd files loaded: {maps}; expected only the bundled one")
        elif args.zstd == "static":
            if maps:
                problems.append(f"libzstd files loaded: {maps}; expected zstd linked in")
            if provider is not None:
                problems.append(f"ZSTD_versionNumber resolves to {provider}: not linked in")
    print(json.dumps(report, indent=1))
    for problem in problems:
        print(f"wheel_check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
