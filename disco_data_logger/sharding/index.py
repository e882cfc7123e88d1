"""The experiment index: every shard manifest of an output directory merged into one view.

:func:`merge` reads ``<output>/shards/*/manifest.json`` (or the journal of a shard whose worker
died), keeps the first commit of every task id (a task re-run after a lost acknowledgement is
never counted twice) and writes

``index/streams.parquet``
    one row per committed stream: shard, local stream id, task, point, replication, scales, record
    count, epoch range, the labels as JSON and one column per label;
``index/replications.parquet``
    one row per replication: status (committed, failed, pending), attempts, shard, timing;
``experiment.json``
    the config snapshot and overrides (when the coordinator ran it), versions, host, git commit,
    per-replication status and totals.

Works the same for shards written by the coordinator and by users' own pools (ShardWriter).
The work is one JSON parse per manifest and one Arrow table build, so 1,000 manifests take seconds.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._version import __version__
from .layout import EXPERIMENT_JSON, INDEX_DIR
from .manifest import ShardManifest, atomic_write_json, fsync_directory
from .shard import SHARDS_DIR

__all__ = [
    "ExperimentIndex",
    "merge",
    "load_manifests",
    "INDEX_DIR",
    "EXPERIMENT_JSON",
    "STREAM_COLUMNS",
]

INDEX_FORMAT = "disco-experiment-index/1"

STREAM_COLUMNS: dict[str, pa.DataType] = {
    "shard_id": pa.string(),
    "stream_id": pa.uint32(),
    "task_id": pa.string(),
    "point_id": pa.string(),
    "point_index": pa.int64(),
    "replication": pa.int64(),
    "attempt": pa.int64(),
    "epoch_scale": pa.float64(),
    "value_scale": pa.float64(),
    "periodicity": pa.float64(),
    "kind": pa.string(),
    "records": pa.int64(),
    "min_epoch": pa.float64(),
    "max_epoch": pa.float64(),
    "labels": pa.string(),
}
"""The fixed columns of ``index/streams.parquet``; label columns follow them."""

REPLICATION_COLUMNS: dict[str, pa.DataType] = {
    "task_id": pa.string(),
    "point_id": pa.string(),
    "point_index": pa.int64(),
    "replication": pa.int64(),
    "status": pa.string(),
    "attempts": pa.int64(),
    "shard_id": pa.string(),
    "streams": pa.int64(),
    "records": pa.int64(),
    "started": pa.float64(),
    "finished": pa.float64(),
    "seconds": pa.float64(),
    "error": pa.string(),
}


def load_manifests(output_dir: str | os.PathLike[str]) -> list[ShardManifest]:
    """Every shard manifest under ``<output>/shards/``, in shard id order."""
    shards = Path(output_dir) / SHARDS_DIR
    try:
        entries = [e for e in os.scandir(shards) if e.is_dir()]
    except FileNotFoundError:
        return []
    manifests = []
    for entry in sorted(entries, key=lambda e: e.name):
        manifest = ShardManifest.load(entry.path)
        if manifest is not None:
            manifests.append(manifest)
    return manifests


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_experiment_json(output_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(output_dir) / EXPERIMENT_JSON).read_text())
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


def environment_info() -> dict[str, Any]:
    """Versions and host, saved with every experiment so results can be traced back."""
    import numpy

    versions = {
        "disco_data_logger": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pyarrow": pa.__version__,
    }
    ray = sys.modules.get("ray")
    if ray is not None:
        versions["ray"] = getattr(ray, "__version__", "?")
    return {"versions": versions, "host": socket.gethostname(), "platform": platform.platform()}


class ExperimentIndex:
    """The merged, deduplicated content of all shard manifests of one output directory."""

    def __init__(self, output_dir: Path, manifests: list[ShardManifest],
                 streams: pa.Table, replications: list[dict[str, Any]], info: dict[str, Any],
                 duplicates: int) -> None:
        self.output_dir = output_dir
        self.manifests = manifests
        self.streams = streams
        self.replications = replications
        self.info = info
        self.duplicates = duplicates

    @property
    def committed_task_ids(self) -> set[str]:
        return {r["task_id"] for r in self.replications if r["status"] == "committed"}

    @property
    def totals(self) -> dict[str, Any]:
        totals: dict[str, Any] = self.info["totals"]
        return totals

    @classmethod
    def build(cls, output_dir: str | os.PathLike[str], *,
              run: Mapping[str, Any] | None = None) -> ExperimentIndex:
        """Merge the manifests in memory (nothing is written).

        ``run`` is what the coordinator knows beyond the manifests: ``planned`` tasks, ``failed``
        (task id -> error), ``attempts``, the config snapshot and the run record.
        """
        output_dir = Path(output_dir)
        run = dict(run or {})
        manifests = load_manifests(output_dir)
        previous = read_experiment_json(output_dir) or {}

        # First commit wins: order by commit time, then shard id, so the choice is reproducible.
        commits = [(rep, m) for m in manifests for rep in m.replications]
        commits.sort(key=lambda c: (c[0].get("finished") or 0.0, c[1].shard_id))
        winners: dict[str, tuple[dict[str, Any], ShardManifest]] = {}
        duplicates = 0
        for rep, m in commits:
            if rep["task_id"] in winners:
                duplicates += 1
            else:
                winners[rep["task_id"]] = (rep, m)

        failures: dict[str, list[dict[str, Any]]] = {}
        for m in manifests:
            for failure in m.failures:
                failures.setdefault(failure["task_id"], []).append(failure)

        rows = _replication_rows(winners, failures, run, previous)
        streams = _streams_table(winners)
        info = _experiment_info(output_dir, manifests, rows, streams, run, previous, duplicates)
        return cls(output_dir, manifests, streams, rows, info, duplicates)

    def write(self) -> None:
        """Write ``index/streams.parquet``, ``index/replications.parquet``, ``experiment.json``."""
        from .paths import refuse_links

        refuse_links(self.output_dir, (INDEX_DIR, EXPERIMENT_JSON))
        index_dir = self.output_dir / INDEX_DIR
        index_dir.mkdir(parents=True, exist_ok=True)
        _write_parquet_atomic(self.streams, index_dir / "streams.parquet")
        _write_parquet_atomic(replications_table(self.replications),
                              index_dir / "replications.parquet")
        fsync_directory(index_dir)
        atomic_write_json(self.output_dir / EXPERIMENT_JSON, self.info)


def merge(output_dir: str | os.PathLike[str], *,
          run: Mapping[str, Any] | None = None) -> ExperimentIndex:
    """Merge all shard manifests of ``output_dir`` into the experiment index and write it.

    Call it after your own ``multiprocessing.Pool`` or Ray tasks wrote shards with
    :class:`~disco_data_logger.sharding.ShardWriter`; the coordinator calls it after every run.
    Safe to call again at any time: the result depends only on the manifests (and on the
    status the coordinator recorded in ``experiment.json``).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"{output_dir}: no such experiment directory")
    index = ExperimentIndex.build(output_dir, run=run)
    index.write()
    return index


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _replication_rows(winners: Mapping[str, tuple[dict[str, Any], ShardManifest]],
                      failures: Mapping[str, list[dict[str, Any]]],
                      run: Mapping[str, Any],
                      previous: Mapping[str, Any]) -> list[dict[str, Any]]:
    prev_rows = {r["task_id"]: r for r in previous.get("replications", []) if "task_id" in r}
    planned: dict[str, dict[str, Any]] = {}
    if run.get("planned") is not None:
        for t in run["planned"]:
            planned[t["task_id"]] = dict(t)
    else:
        for tid, r in prev_rows.items():
            planned[tid] = {k: r.get(k) for k in ("task_id", "point_id", "point_index",
                                                  "replication")}
    run_failed: Mapping[str, Any] = run.get("failed", {})
    run_attempts: Mapping[str, int] = run.get("attempts", {})

    rows: list[dict[str, Any]] = []
    for tid in sorted(set(planned) | set(winners) | set(failures)):
        base = planned.get(tid, {})
        prev = prev_rows.get(tid, {})
        attempts = max(int(run_attempts.get(tid, 0)), int(prev.get("attempts") or 0))
        row: dict[str, Any] = {
            "task_id": tid,
            "point_id": base.get("point_id"),
            "point_index": base.get("point_index"),
            "replication": base.get("replication"),
            "status": "pending",
            "attempts": attempts,
            "shard_id": None,
            "streams": 0,
            "records": 0,
            "started": None,
            "finished": None,
            "seconds": None,
            "error": None,
        }
        if tid in winners:
            rep, m = winners[tid]
            row.update(
                point_id=rep.get("point_id", row["point_id"]),
                point_index=rep.get("point_index", row["point_index"]),
                replication=rep.get("replication", row["replication"]),
                status="committed",
                attempts=max(attempts, int(rep.get("attempt") or 1)),
                shard_id=m.shard_id,
                streams=len(rep.get("streams", [])),
                records=sum(int(s.get("records") or 0) for s in rep.get("streams", [])),
                started=rep.get("started"),
                finished=rep.get("finished"),
                seconds=rep.get("seconds"),
            )
        else:
            fails = failures.get(tid, [])
            if fails:
                last = max(fails, key=lambda f: f.get("finished") or 0.0)
                row["attempts"] = max(attempts, max(int(f.get("attempt") or 1) for f in fails))
                row["error"] = last.get("error")
                row["shard_id"] = last.get("shard_id")
                for key in ("point_id", "point_index", "replication"):
                    if row[key] is None:
                        row[key] = last.get(key)
            if tid in run_failed:
                row["status"] = "failed"
                row["error"] = run_failed[tid] or row["error"]
            elif prev.get("status") == "failed" and run.get("planned") is None:
                row["status"] = "failed"
                row["error"] = row["error"] or prev.get("error")
            elif fails and run.get("planned") is None and tid not in planned:
                row["status"] = "failed"  # a user's own pool: a failure note and no commit
        rows.append(row)
    return rows


def replications_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({name: pa.array([r.get(name) for r in rows], type=typ)
                     for name, typ in REPLICATION_COLUMNS.items()})


def _label_array(values: list[Any]) -> pa.Array:
    """One label column; mixed types fall back to strings so that every value survives."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool}:
        typ: pa.DataType = pa.bool_()
    elif kinds <= {int}:
        typ = pa.int64()
    elif kinds <= {int, float}:
        typ = pa.float64()
    elif kinds <= {str}:
        typ = pa.string()
    else:
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v)
                         for v in values], type=pa.string())
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _streams_table(winners: Mapping[str, tuple[dict[str, Any], ShardManifest]]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in STREAM_COLUMNS}
    label_rows: list[Mapping[str, Any]] = []
    label_keys: dict[str, None] = {}
    for tid in sorted(winners):
        rep, m = winners[tid]
        for s in rep.get("streams", []):
            labels = s.get("labels") or {}
            cols["shard_id"].append(m.shard_id)
            cols["stream_id"].append(s["stream_id"])
            cols["task_id"].append(tid)
            cols["point_id"].append(rep.get("point_id"))
            cols["point_index"].append(rep.get("point_index"))
            cols["replication"].append(rep.get("replication"))
            cols["attempt"].append(rep.get("attempt"))
            for key in ("epoch_scale", "value_scale", "periodicity", "kind", "records",
                        "min_epoch", "max_epoch"):
                cols[key].append(s.get(key))
            cols["labels"].append(json.dumps(labels, sort_keys=True))
            label_rows.append(labels)
            for key in labels:
                label_keys.setdefault(key)
    arrays = {name: pa.array(cols[name], type=typ) for name, typ in STREAM_COLUMNS.items()}
    label_columns = [k for k in label_keys if k not in STREAM_COLUMNS]
    for key in label_columns:
        arrays[key] = _label_array([labels.get(key) for labels in label_rows])
    table = pa.table(arrays)
    return table.replace_schema_metadata({
        b"disco.format": INDEX_FORMAT.encode(),
        b"disco.label_columns": json.dumps(label_columns).encode(),
    })


def label_columns_of(table: pa.Table) -> list[str]:
    """The label columns of a streams table (in first-seen order)."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"disco.label_columns")
    if raw is not None:
        return [c for c in json.loads(raw) if c in table.column_names]
    return [c for c in table.column_names if c not in STREAM_COLUMNS]


def _segment_bytes(manifests: Iterable[ShardManifest]) -> int:
    total = 0
    for m in manifests:
        try:
            with os.scandir(m.path) as it:
                total += sum(e.stat().st_size for e in it if e.name.endswith(".seg.zst"))
        except FileNotFoundError:
            pass
    return total


def _experiment_info(output_dir: Path, manifests: list[ShardManifest],
                     rows: list[dict[str, Any]], streams: pa.Table, run: Mapping[str, Any],
                     previous: Mapping[str, Any], duplicates: int) -> dict[str, Any]:
    status_counts = {"committed": 0, "failed": 0, "pending": 0}
    for r in rows:
        status_counts[r["status"]] = status_counts.get(r["status"], 0) + 1
    records = int(pc.sum(streams["records"]).as_py() or 0) if len(streams) else 0
    min_epoch = pc.min(streams["min_epoch"]).as_py() if len(streams) else None
    max_epoch = pc.max(streams["max_epoch"]).as_py() if len(streams) else None
    raw_bytes = sum(int(m.stats.get("raw_bytes") or 0) for m in manifests)
    totals = {
        "replications": len(rows),
        **status_counts,
        "duplicates_dropped": duplicates,
        "shards": len(manifests),
        "streams": len(streams),
        "records": records,
        "raw_bytes": raw_bytes,
        "compressed_bytes": _segment_bytes(manifests),
        "min_epoch": min_epoch,
        "max_epoch": max_epoch,
    }
    if run.get("state"):
        state = run["state"]
    elif status_counts["pending"] or status_counts["failed"]:
        state = previous.get("state", "incomplete")
    else:
        state = "complete"
    runs = list(previous.get("runs", []))
    if run.get("run") is not None:
        record = dict(run["run"])
        # The coordinator writes the same run record at start and at the end: replace, not append.
        runs = [r for r in runs if r.get("run_id") != record.get("run_id")] + [record]
    failed_detail = {tid: msg for tid, msg in run.get("failed", {}).items()}
    replications = []
    for r in rows:
        entry = {k: v for k, v in r.items() if v is not None}
        if r["task_id"] in failed_detail and run.get("tracebacks", {}).get(r["task_id"]):
            entry["traceback"] = run["tracebacks"][r["task_id"]]
        replications.append(entry)
    info: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "output": str(output_dir),
        "experiment": run.get("experiment", previous.get("experiment")),
        "fingerprint": run.get("fingerprint", previous.get("fingerprint")),
        "config": run.get("config", previous.get("config")),
        "overrides": run.get("overrides", previous.get("overrides", [])),
        "config_path": run.get("config_path", previous.get("config_path")),
        "git_commit": run.get("git_commit", previous.get("git_commit")),
        "created": previous.get("created", _now_iso()),
        "updated": _now_iso(),
        "state": state,
        **environment_info(),
        "runs": runs,
        "totals": totals,
        "shards": [
            {
                "shard_id": m.shard_id,
                "host": m.host,
                "pid": m.pid,
                "closed": m.closed,
                "committed": len(m.replications),
                "failures": len(m.failures),
                "torn_lines": m.torn_lines,
                "segments": len(m.segments),
            }
            for m in manifests
        ],
        "replications": replications,
    }
    return info
