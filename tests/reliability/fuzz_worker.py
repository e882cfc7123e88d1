"""Fuzz worker: reads one case directory per request with both readers and reports the outcome.

Runs as its own process (``python fuzz_worker.py``) so that a crash, an abort or a hang of a
reader shows up as a dead or silent worker instead of taking the test run with it. Protocol: one
directory path per line on stdin, one JSON line per case on stdout. Memory is measured per case
by resetting the peak RSS (``/proc/self/clear_refs``) before it and reading ``VmHWM`` after.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from disco_data_logger import _core, pyreader, read
from disco_data_logger.errors import CorruptDataWarning, DataLoggerError
from tests.common import Decoded, decoded_from_table

# A runaway allocation fails here instead of in the OOM killer. Generous on purpose: the native
# decoder reserves (without touching) columns for the sizes block headers declare, up to ~7 GB
# of address space for one forged header (see test_reader_memory.py); resident memory is what
# the per-case VmHWM check bounds.
ADDRESS_SPACE_LIMIT = 32 << 30


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _summary(d: Decoded) -> dict[str, Any]:
    h = hashlib.sha256()
    for arr in (d.stream_id.astype(np.uint32), d.epoch.astype(np.float64), d.offsets,
                d.indices.astype(np.int64), d.values.astype(np.float64)):
        h.update(np.ascontiguousarray(arr).tobytes())
    # every skipped part of a segment as (file, offset, kind, length, stream id): FORMAT.md
    # section 4 fixes all five
    segment_skips = [(Path(s["segment"]).name, int(s["offset"]), str(s.get("kind")),
                      int(s.get("length", -1)), s.get("stream_id", -1)) for s in d.skipped
                     if str(s["segment"]).endswith(".seg.zst")]
    sidecar_skips = sorted(Path(s["segment"]).name for s in d.skipped
                           if not str(s["segment"]).endswith(".seg.zst"))
    return {"records": len(d), "digest": h.hexdigest(), "skipped_at": sorted(segment_skips),
            "sidecar_problems": sidecar_skips}


def _clean_error(exc: BaseException) -> dict[str, Any]:
    # A project exception (e.g. FormatError for an unknown format version) is a clear error,
    # not a crash; anything else escaping a reader is a bug.
    return {"error": type(exc).__name__, "message": str(exc)[:400],
            "clean": isinstance(exc, DataLoggerError)
            or (isinstance(exc, OSError) and not isinstance(exc, MemoryError)),
            "traceback": "".join(traceback.format_exception(exc))[-3000:]}


def _native(path: Path) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = read(path)
        except Exception as exc:  # noqa: BLE001 - classified and reported to the test
            return _clean_error(exc)
    metadata = table.schema.metadata or {}
    skipped = json.loads(metadata[b"disco.skipped"]) if b"disco.skipped" in metadata else []
    out = _summary(decoded_from_table(table, skipped))
    texts = [str(w.message) for w in caught if issubclass(w.category, CorruptDataWarning)]
    out["other_warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught
                             if not issubclass(w.category, CorruptDataWarning)]
    out["warned_skips"] = any("skipped" in t for t in texts)
    out["sidecar_problems"] = sorted(Path(t.split(": unreadable stream sidecar")[0]).name
                                     for t in texts if ": unreadable stream sidecar" in t)
    return out


def _python(path: Path) -> dict[str, Any]:
    try:
        r = pyreader.read_directory(path)
    except Exception as exc:  # noqa: BLE001 - classified and reported to the test
        return _clean_error(exc)
    return _summary(Decoded(r.stream_id, r.epoch, r.offsets, r.indices, r.values, r.skipped))


def _raw_core(path: Path) -> dict[str, Any]:
    """The extension's entry point itself, without sidecar scales."""
    try:
        raw = _core.decode_directory(str(path), {}, None)
    except Exception as exc:  # noqa: BLE001
        return _clean_error(exc)
    return {"records": len(raw["stream_id"])}


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    print(json.dumps({"ready": True, "rss_kb": _status_kb("VmRSS")}), flush=True)
    for line in sys.stdin:
        path = Path(line.strip())
        _reset_peak()
        before = _status_kb("VmRSS")
        result = {"native": _native(path), "python": _python(path), "core": _raw_core(path)}
        result["rss_before_kb"] = before
        result["peak_kb"] = _status_kb("VmHWM")
        result["vm_peak_kb"] = _status_kb("VmPeak")
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
