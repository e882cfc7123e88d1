"""The shard manifest: what one worker committed, written so that a crash never corrupts it.

A shard keeps two files beside its segments:

``manifest.jsonl``
    An append-only journal, one JSON object per line: a ``shard`` header, then one ``commit`` line
    per committed replication and one ``failure`` line per replication that raised. A line is
    appended, flushed and fsynced as the commit point of a replication. A worker killed mid-line
    leaves a torn last line, which readers ignore, so a replication is in the manifest exactly when
    its whole line is. Appending keeps a commit O(1) however many replications a shard runs.
``manifest.json``
    The consolidated manifest, written once when the shard's logger is closed (temp file + fsync
    + ``os.replace``): header, replications, failures, the segment files with sizes and checksums
    and the logger's final statistics. Readers prefer it; a killed worker's shard has only the
    journal.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import JOURNAL_NAME, MANIFEST_NAME

MANIFEST_FORMAT = "disco-shard-manifest/1"

# Keys of a stream sidecar that describe the stream rather than label it.
STREAM_META_KEYS = frozenset({"stream_id", "epoch_scale", "value_scale", "periodicity", "kind"})


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())


def fsync_directory(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths turn up in labels and parameters.
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json_line(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=_json_default) + "\n").encode()


def file_checksums(path: Path, chunk: int = 1 << 20) -> dict[str, Any]:
    """Size, crc32 and sha256 of a file in one pass (segments can be large)."""
    crc = 0
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(chunk)
            if not buf:
                break
            size += len(buf)
            crc = zlib.crc32(buf, crc)
            sha.update(buf)
    return {"name": path.name, "bytes": size, "crc32": crc, "sha256": sha.hexdigest()}


def split_sidecar(sidecar: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a stream sidecar into (labels, stream metadata)."""
    labels = {k: v for k, v in sidecar.items() if k not in STREAM_META_KEYS}
    meta = {k: sidecar[k] for k in STREAM_META_KEYS if k in sidecar}
    return labels, meta


@dataclass
class ShardManifest:
    """Everything one shard committed: from ``manifest.json`` or, failing that, the journal."""

    shard_id: str
    path: Path
    host: str = ""
    pid: int = 0
    created: float = 0.0
    fingerprint: str | None = None
    replications: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    segments: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    torn_lines: int = 0

    @classmethod
    def load(cls, shard_dir: str | os.PathLike[str]) -> ShardManifest | None:
        """Load the manifest of ``shard_dir``; None when the shard never wrote one."""
        shard_dir = Path(shard_dir)
        consolidated = shard_dir / MANIFEST_NAME
        try:
            raw = consolidated.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            doc = json.loads(raw)
            return cls(
                shard_id=doc["shard_id"],
                path=shard_dir,
                host=doc.get("host", ""),
                pid=doc.get("pid", 0),
                created=doc.get("created", 0.0),
                fingerprint=doc.get("fingerprint"),
                replications=doc.get("replications", []),
                failures=doc.get("failures", []),
                closed=bool(doc.get("closed", False)),
                segments=doc.get("segments", []),
                stats=doc.get("stats", {}),
            )
        try:
            journal = (shard_dir / JOURNAL_NAME).read_bytes()
        except FileNotFoundError:
            return None
        return cls.from_journal(shard_dir, journal)

    @classmethod
    def from_journal(cls, shard_dir: Path, journal: bytes) -> ShardManifest | None:
        manifest: ShardManifest | None = None
        torn = 0
        lines = journal.split(b"\n")
        # Only newline-terminated lines are complete: the last element is the unterminated rest.
        if lines and lines[-1]:
            torn += 1
        for line in lines[:-1]:
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                torn += 1
                continue
            kind = entry.get("type")
            if kind == "shard":
                manifest = cls(
                    shard_id=entry["shard_id"],
                    path=shard_dir,
                    host=entry.get("host", ""),
                    pid=entry.get("pid", 0),
                    created=entry.get("created", 0.0),
                    fingerprint=entry.get("fingerprint"),
                )
            elif manifest is None:
                torn += 1
            elif kind == "commit":
                manifest.replications.append(entry["replication"])
                if "stats" in entry:
                    manifest.stats = entry["stats"]
            elif kind == "failure":
                manifest.failures.append(entry["failure"])
        if manifest is not None:
            manifest.torn_lines = torn
        return manifest

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "shard_id": self.shard_id,
            "host": self.host,
            "pid": self.pid,
            "created": self.created,
            "fingerprint": self.fingerprint,
            "closed": self.closed,
            "replications": self.replications,
            "failures": self.failures,
            "segments": self.segments,
            "stats": self.stats,
        }


class ManifestJournal:
    """Appends commit points to a shard's ``manifest.jsonl``; owned by the shard's one writer."""

    def __init__(self, shard_dir: Path, shard_id: str, fingerprint: str | None) -> None:
        self.manifest = ShardManifest(
            shard_id=shard_id,
            path=shard_dir,
            host=socket.gethostname(),
            pid=os.getpid(),
            created=time.time(),
            fingerprint=fingerprint,
        )
        self._path = shard_dir / JOURNAL_NAME
        # O_APPEND: every write lands at the end even if the file was touched meanwhile.
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        header = {
            "type": "shard",
            "format": MANIFEST_FORMAT,
            "shard_id": shard_id,
            "host": self.manifest.host,
            "pid": self.manifest.pid,
            "created": self.manifest.created,
            "fingerprint": fingerprint,
        }
        self._append(header)
        fsync_directory(shard_dir)

    def _append(self, entry: Mapping[str, Any]) -> None:
        data = to_json_line(entry)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def commit(self, replication: dict[str, Any], stats: Mapping[str, Any] | None = None) -> None:
        entry: dict[str, Any] = {"type": "commit", "replication": replication}
        if stats is not None:
            entry["stats"] = dict(stats)
        self._append(entry)
        self.manifest.replications.append(replication)
        if stats is not None:
            self.manifest.stats = dict(stats)

    def fail(self, failure: dict[str, Any]) -> None:
        self._append({"type": "failure", "failure": failure})
        self.manifest.failures.append(failure)

    def close(self, segments: Iterable[Path], stats: Mapping[str, Any] | None) -> None:
        """Write the consolidated ``manifest.json`` once the logger is closed."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        self.manifest.closed = True
        self.manifest.segments = [file_checksums(p) for p in sorted(segments)]
        if stats is not None:
            self.manifest.stats = dict(stats)
        atomic_write_json(self.manifest.path / MANIFEST_NAME, self.manifest.to_json())

    def abandon(self) -> None:
        """Close the journal without consolidating (the logger failed to close)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
