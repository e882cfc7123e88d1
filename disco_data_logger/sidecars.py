"""Reading the ``streams/<id>.json`` sidecars of a logger directory (FORMAT.md section 1).

Shared by the native-backed reader and the pure-Python reader: sidecars are plain JSON, not part
of the segment format the two readers implement independently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def sidecar_stream_id(meta: Any) -> int:
    """A sidecar's ``stream_id``: an int in [0, 2**32), the u32 of FORMAT.md (not a bool, string
    or float, which a damaged or hand-edited sidecar may hold)."""
    sid = meta["stream_id"]
    if isinstance(sid, bool) or not isinstance(sid, int) or not 0 <= sid < 1 << 32:
        raise ValueError(f"stream_id {sid!r} is not an integer from 0 to 2**32-1")
    return sid


def read_sidecars(
    directory: str | os.PathLike[str],
) -> tuple[dict[int, dict[str, Any]], list[tuple[Path, str]]]:
    """Stream id -> sidecar dict for every readable sidecar, and (file, problem) for the rest."""
    streams_dir = Path(directory) / "streams"
    sidecars: dict[int, dict[str, Any]] = {}
    problems: list[tuple[Path, str]] = []
    if not streams_dir.is_dir():
        return sidecars, problems
    for file in sorted(streams_dir.glob("*.json")):
        try:
            meta = json.loads(file.read_text(encoding="utf-8"))
            sid = sidecar_stream_id(meta)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append((file, str(exc)))
            continue
        sidecars[sid] = meta
    return sidecars, problems
