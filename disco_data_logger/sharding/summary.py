"""Summaries of per-replication metrics: confidence intervals per sweep point, and comparisons.

Both work on the table :func:`~.metrics.compute_metrics` returns (one row per replication) and
return Arrow tables; the numbers come from :mod:`.statistics`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import MetricError
from .config import ExperimentConfig
from .statistics import mean_interval, paired_difference, welch_difference

__all__ = [
    "summary_table",
    "compare_table",
    "resolve_point",
    "metric_columns",
    "PAIRING_NOTE",
    "verdict",
]

_FIXED = ("task_id", "point_id", "replication")

PAIRING_NOTE = (
    "replications are not paired (seeding: independent): the differences use Welch's interval "
    "for independent samples; set seeding: common in the config to compare on common random "
    "numbers")


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    """How a difference's interval reads: ``higher``, ``lower``, ``not distinguishable``
    (the interval contains 0) or ``identical`` (every pair was equal)."""
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return "-"
    if ci_low == 0 and ci_high == 0:
        return "identical"
    return "higher" if ci_low > 0 else "lower" if ci_high < 0 else "not distinguishable"


def metric_columns(table: pa.Table) -> list[str]:
    """The metric columns of a metrics table, in definition order."""
    raw = (table.schema.metadata or {}).get(b"disco.metrics")
    if raw is not None:
        return [n for n in json.loads(raw) if n in table.column_names]
    return [c for c in table.column_names if c not in _FIXED
            and pa.types.is_floating(table.schema.field(c).type)]


def _parameter_columns(table: pa.Table) -> list[str]:
    metrics = set(metric_columns(table))
    return [c for c in table.column_names if c not in _FIXED and c not in metrics]


def _points(table: pa.Table) -> tuple[list[Any], dict[Any, np.ndarray], dict[Any, dict[str, Any]]]:
    """Point ids in table order, the rows of each, and each point's parameter values."""
    pids = table["point_id"].to_pylist()
    params = _parameter_columns(table)
    param_values = {c: table[c].to_pylist() for c in params}
    order: list[Any] = []
    rows: dict[Any, list[int]] = {}
    values: dict[Any, dict[str, Any]] = {}
    for i, pid in enumerate(pids):
        if pid not in rows:
            order.append(pid)
            rows[pid] = []
            values[pid] = {c: param_values[c][i] for c in params}
        rows[pid].append(i)
    return order, {p: np.asarray(r, dtype=np.int64) for p, r in rows.items()}, values


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table[name].to_numpy(zero_copy_only=False), dtype=np.float64)


def _typed(table: pa.Table, name: str, values: list[Any]) -> pa.Array:
    return pa.array(values, type=table.schema.field(name).type)


def summary_table(table: pa.Table, confidence: float = 0.95,
                  metrics: Sequence[str] | None = None) -> pa.Table:
    """One row per metric and sweep point: ``metric, point_id, <parameters>, n, mean, sd, se,
    half_width, ci_low, ci_high, missing`` (Student t; ``missing``: replications whose value is
    undefined, left out of ``n``)."""
    names = list(metrics) if metrics is not None else metric_columns(table)
    params = _parameter_columns(table)
    order, rows, point_values = _points(table)
    out: dict[str, list[Any]] = {k: [] for k in ("metric", "point_id", *params, "n", "mean",
                                                 "sd", "se", "half_width", "ci_low", "ci_high",
                                                 "missing")}
    for name in names:
        column = _column(table, name)
        for pid in order:
            stats = mean_interval(column[rows[pid]], confidence)
            out["metric"].append(name)
            out["point_id"].append(pid)
            for c in params:
                out[c].append(point_values[pid][c])
            out["n"].append(stats.n)
            out["missing"].append(stats.missing)
            for key, value in (("mean", stats.mean), ("sd", stats.sd), ("se", stats.se),
                               ("half_width", stats.half_width), ("ci_low", stats.ci_low),
                               ("ci_high", stats.ci_high)):
                out[key].append(None if math.isnan(value) else value)
    cols: dict[str, pa.Array] = {
        "metric": pa.array(out["metric"], pa.string()),
        "point_id": pa.array(out["point_id"], pa.string()),
    }
    for c in params:
        cols[c] = _typed(table, c, out[c])
    cols["n"] = pa.array(out["n"], pa.int64())
    for key in ("mean", "sd", "se", "half_width", "ci_low", "ci_high"):
        cols[key] = pa.array(out[key], pa.float64())
    cols["missing"] = pa.array(out["missing"], pa.int64())
    meta = {b"disco.confidence": str(float(confidence)).encode()}
    return pa.table(cols).replace_schema_metadata(meta)


def resolve_point(reference: Any, table: pa.Table,
                  cfg: ExperimentConfig | None = None) -> str:
    """The point id meant by ``reference``: a point id, a point index, a mapping of parameter
    values, or ``"k=v,k2=v2"`` text (values compared as text, so ``s=4`` matches 4.0)."""
    order, _, values = _points(table)
    known = [p for p in order if p is not None]
    if isinstance(reference, bool):
        raise MetricError(f"reference point must be a point id or parameters (got {reference!r})")
    if isinstance(reference, int):
        pid = f"p{reference:04d}"
        if pid in known:
            return pid
    if isinstance(reference, str) and reference in known:
        return reference
    wanted: dict[str, str] | None = None
    if isinstance(reference, Mapping):
        wanted = {str(k): _text(v) for k, v in reference.items()}
    elif isinstance(reference, str) and "=" in reference:
        wanted = {}
        for part in reference.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise MetricError(f"reference point {reference!r}: expected k=v[,k=v...]")
            wanted[key.strip()] = value.strip()
    if wanted is not None:
        matches = [p for p in known
                   if all(k in values[p] and _same(values[p][k], v) for k, v in wanted.items())]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise MetricError(f"reference point {reference!r} matches {len(matches)} points "
                              f"({', '.join(matches)}); give more parameters or a point id")
    listing = ", ".join(
        p + (" (" + ", ".join(f"{k}={_text(v)}" for k, v in values[p].items()) + ")"
             if values[p] else "") for p in known)
    raise MetricError(f"no sweep point {reference!r}; points: {listing or 'none'}")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(value: Any, text: str) -> bool:
    if _text(value) == text:
        return True
    try:
        return (not isinstance(value, bool) and isinstance(value, int | float)
                and float(text) == float(value))
    except ValueError:
        return False


def compare_table(table: pa.Table, reference: str, *, paired: bool,
                  confidence: float = 0.95, metrics: Sequence[str] | None = None) -> pa.Table:
    """Every other point minus ``reference``, per metric, with a confidence interval.

    ``paired``: differences of the replications with the same number (common random numbers),
    a t interval on the pairs; otherwise Welch's interval. Columns ``metric, point_id,
    <parameters>, reference, method, n, n_reference, difference, se, df, half_width, ci_low,
    ci_high, p_value``.
    """
    names = list(metrics) if metrics is not None else metric_columns(table)
    params = _parameter_columns(table)
    order, rows, point_values = _points(table)
    if reference not in rows:
        raise MetricError(f"no sweep point {reference!r} in the table")
    reps = np.asarray(table["replication"].to_numpy(zero_copy_only=False), dtype=np.float64)
    keys = ("n", "n_reference", "difference", "se", "df", "half_width", "ci_low", "ci_high",
            "p_value")
    out: dict[str, list[Any]] = {k: [] for k in ("metric", "point_id", *params, "reference",
                                                 "method", *keys)}
    for name in names:
        column = _column(table, name)
        base_rows = rows[reference]
        for pid in order:
            if pid == reference:
                continue
            if paired:
                here = dict(zip(reps[rows[pid]].tolist(), column[rows[pid]].tolist(),
                                strict=True))
                there = dict(zip(reps[base_rows].tolist(), column[base_rows].tolist(),
                                 strict=True))
                common = sorted(set(here) & set(there))
                diff = paired_difference([here[r] for r in common], [there[r] for r in common],
                                         confidence)
            else:
                diff = welch_difference(column[rows[pid]], column[base_rows], confidence)
            out["metric"].append(name)
            out["point_id"].append(pid)
            for c in params:
                out[c].append(point_values[pid][c])
            out["reference"].append(reference)
            out["method"].append(diff.method)
            values = {"n": diff.n, "n_reference": diff.n_reference,
                      "difference": diff.difference, "se": diff.se, "df": diff.df,
                      "half_width": diff.half_width, "ci_low": diff.ci_low,
                      "ci_high": diff.ci_high, "p_value": diff.p_value}
            for key in keys:
                value = values[key]
                out[key].append(None if isinstance(value, float) and math.isnan(value)
                                else value)
    cols: dict[str, pa.Array] = {
        "metric": pa.array(out["metric"], pa.string()),
        "point_id": pa.array(out["point_id"], pa.string()),
    }
    for c in params:
        cols[c] = _typed(table, c, out[c])
    cols["reference"] = pa.array(out["reference"], pa.string())
    cols["method"] = pa.array(out["method"], pa.string())
    cols["n"] = pa.array(out["n"], pa.int64())
    cols["n_reference"] = pa.array(out["n_reference"], pa.int64())
    for key in keys[2:]:
        cols[key] = pa.array(out[key], pa.float64())
    meta = {b"disco.confidence": str(float(confidence)).encode(),
            b"disco.method": b"paired" if paired else b"welch"}
    if not paired:
        meta[b"disco.note"] = PAIRING_NOTE.encode()
    return pa.table(cols).replace_schema_metadata(meta)
