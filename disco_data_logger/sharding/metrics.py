"""Per-replication metrics: one number per committed replication and metric, computed out of core.

A stream metric (:class:`~.config.MetricSpec`) is computed in three steps over the records of one
stream of one replication, with the sparse semantics of the logger (an index absent from a record
is zero):

1. ``entities`` turns every record into one number: ``sum`` of its values, ``mean`` over the
   replication's entities (the indices its stream ever recorded; absent ones count as zeros),
   ``max`` over those entities (so a record that leaves an entity out has a maximum of at least
   0), or the value at ``index:<i>`` (0 when absent). A record with an empty vector is 0.
2. ``window`` = [from, to) keeps the records whose epoch lies in it.
3. ``reduce`` makes one number of them: ``mean``, ``sum``, ``min``, ``max``, ``last`` (latest
   epoch, the last recorded on ties), ``count`` (records), or ``time_mean``: for a periodic
   stream the mean over its records in the window (one per period); for a plain stream the
   time-weighted mean of the piecewise-constant signal (each record holds until the next, zero
   before the first) over [from, min(to, duration)), with an open ``from`` meaning epoch 0.

Undefined results (a mean, minimum, maximum or last value of no records, a time mean of an
empty window, a division by zero in an ``expr``) are null, and summaries count them as missing.

Records are read with :meth:`Experiment.select` in batches of whole replications sized by their
record counts, so memory is bounded by a batch, not by the experiment. Results are cached per
metric definition in ``index/metrics/`` together with what the index says each replication's
commit was (shard, finish time, record count): a later call computes only the replications
committed since, and drops those no longer committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError, MetricError, MetricsCacheWarning
from .config import ExperimentConfig, MetricSpec, metric_problem, validate_config
from .expression import Expression
from .layout import METRICS_DIR
from .records import ReplicationStatus

__all__ = [
    "ExperimentView",
    "MetricsArg",
    "compute_metrics",
    "experiment_config",
    "resolve_metrics",
    "parse_metric_option",
    "CACHE_DIR",
    "ENGINE_VERSION",
]

MetricsArg = None | str | Sequence[str] | Mapping[str, MetricSpec | Mapping[str, Any]]
"""What ``Experiment.metrics(metrics=...)`` takes: None (the config's metrics), one name or a list
of names of the config's metrics, or a mapping ``name -> definition`` (a MetricSpec or a dict with
the keys of a ``metrics:`` entry)."""

class ExperimentView(Protocol):
    """What the analysis modules need of an experiment: an :class:`~.experiment.Experiment`.

    Typed by its shape, so that metrics, fan charts and the report do not import the query
    module whose methods call them (no import cycle).
    """

    path: Path
    info: dict[str, Any]

    @property
    def replications(self) -> pa.Table: ...

    def streams(self, rule: Any = None) -> pa.Table: ...

    def select(self, rule: Any = None, *, format: Literal["long", "list"] = "long") -> pa.Table: ...

    def metrics(self, metrics: MetricsArg = None, *, duration: float | None = None,
                cache: bool = True) -> pa.Table: ...

    def fan(self, stream: str, *, entities: str = "sum", points: Sequence[str] | None = None,
            max_epochs: int = 400) -> pa.Table: ...


ENGINE_VERSION = 1
"""Part of every cache key: bumped whenever the meaning of a definition changes."""

CACHE_DIR = METRICS_DIR
"""Cache directory inside the index directory."""

_KEY_COLUMNS = ("task_id", "point_id", "replication")
_INITIAL_RECORD_BUDGET = 1 << 20
_VALUE_BUDGET = 1 << 23
"""Non-zeros per batch (about 128 MiB of indices and values) once the first batch showed the
stream's non-zeros per record."""


# -- the experiment's config and metric definitions -------------------------------------------


def experiment_config(exp: ExperimentView) -> ExperimentConfig | None:
    """The config snapshot of ``exp`` (None for shards written by users' own pools).

    A snapshot that no longer validates costs a warning naming ``experiment.json``, not the
    analysis: the metrics can still be given explicitly.
    """
    snapshot = exp.info.get("config")
    if not snapshot:
        return None
    try:
        return validate_config(snapshot, str(Path(exp.path) / "experiment.json"))
    except ConfigError as exc:
        warnings.warn(f"{exc}; analysing without the config", MetricsCacheWarning, stacklevel=3)
        return None


def stream_names(exp: ExperimentView) -> list[str]:
    """The distinct ``stream`` labels of the committed streams, sorted."""
    streams = exp.streams()
    if "stream" not in streams.column_names:
        return []
    values = pc.unique(streams["stream"].cast(pa.string())).to_pylist()
    return sorted(v for v in values if v is not None)


def sweep_parameters(cfg: ExperimentConfig | None) -> list[str]:
    """The names of the sweep parameters, in the order of the config's points."""
    if cfg is None:
        return []
    names: dict[str, None] = {}
    for point in cfg.points():
        for key in point:
            names.setdefault(key)
    return list(names)


def parse_metric_option(text: str) -> tuple[str, MetricSpec | None]:
    """``NAME`` (a metric of the config) or ``NAME={stream: s, reduce: sum}`` (YAML) from a CLI.

    Returns the name and the definition (None for a plain name).
    """
    import yaml

    name, sep, body = text.partition("=")
    name = name.strip()
    if not sep:
        return name, None
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise MetricError(f"--metric {name}: not valid YAML ({problem})") from None
    return name, _validate_spec(name, data)


def _validate_spec(name: str, data: Any) -> MetricSpec:
    from pydantic import ValidationError

    from .config import _describe

    if isinstance(data, MetricSpec):
        return data
    if not isinstance(data, Mapping):
        raise MetricError(
            f"metrics.{name}: must be a mapping such as {{stream: queue, reduce: time_mean}} or "
            f"{{expr: 'a / b'}} (got {data!r})")
    try:
        return MetricSpec.model_validate(dict(data))
    except ValidationError as exc:
        path, message = _describe(exc.errors(include_url=False)[0])
        where = f"metrics.{name}" + (f".{path}" if path else "")
        raise MetricError(f"{where}: {message}") from None


def resolve_metrics(exp: ExperimentView, metrics: MetricsArg = None,
                    cfg: ExperimentConfig | None = None) -> dict[str, MetricSpec]:
    """The metric definitions to compute, checked against the experiment's streams.

    Names of expr metrics pull in the metrics they use, and a given expr may use the config's
    metrics by name (they are added). Every problem is one MetricError naming
    the metric and the field.
    """
    configured = dict(cfg.metrics) if cfg is not None else {}
    if metrics is None:
        if not configured:
            raise MetricError(
                f"{exp.path}: the experiment declares no metrics; add a metrics: section to its "
                "config, or give them, e.g. metrics={'L': {'stream': 'queue', "
                "'reduce': 'time_mean'}}")
        chosen = configured
    elif isinstance(metrics, str) or (isinstance(metrics, Sequence)
                                      and all(isinstance(m, str) for m in metrics)):
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        if not names:
            raise MetricError("no metric names given")
        chosen = {}
        todo = list(names)
        while todo:
            name = todo.pop(0)
            if name in chosen:
                continue
            if name not in configured:
                from .config import _suggest

                known = ", ".join(configured) or "none"
                raise MetricError(
                    f"unknown metric {name!r}{_suggest(name, list(configured))} (the config's "
                    f"metrics: {known})")
            chosen[name] = spec = configured[name]
            if spec.expr is not None:
                todo.extend(Expression(spec.expr).names)
        chosen = {n: chosen[n] for n in configured if n in chosen}  # the config's order
    elif isinstance(metrics, Mapping):
        chosen = {str(name): _validate_spec(str(name), spec) for name, spec in metrics.items()}
        if not chosen:
            raise MetricError("no metrics given")
        # an expr may use the config's metrics without repeating their definitions
        todo = [n for spec in chosen.values() if spec.expr is not None
                for n in Expression(spec.expr).names]
        while todo:
            name = todo.pop()
            if name in chosen or name not in configured:
                continue
            chosen[name] = spec = configured[name]
            if spec.expr is not None:
                todo.extend(Expression(spec.expr).names)
    else:
        raise MetricError(
            f"metrics must be None, a name, a list of names or a mapping name -> definition "
            f"(got {type(metrics).__name__})")
    problem = metric_problem(chosen, stream_names(exp), sweep_parameters(cfg))
    if problem is not None:
        where, message = problem
        raise MetricError(f"metrics{where}: {message}")
    return chosen


def evaluation_order(specs: Mapping[str, MetricSpec]) -> list[str]:
    """Expr metrics after the metrics they use (the definitions are known to have no cycle)."""
    done: dict[str, None] = {}

    def add(name: str) -> None:
        stack = [name]
        while stack:
            top = stack[-1]
            if top in done:
                stack.pop()
                continue
            spec = specs[top]
            uses = Expression(spec.expr).names if spec.expr is not None else ()
            pending = [u for u in uses if u not in done]
            if pending:
                stack.extend(pending)
            else:
                done[top] = None
                stack.pop()

    for name in specs:
        add(name)
    return list(done)


# -- the committed replications ----------------------------------------------------------------


@dataclass
class Replications:
    """The committed replications, in point then replication order, with their commit keys."""

    task_id: list[str]
    point_id: list[str | None]
    point_index: np.ndarray
    replication: np.ndarray
    commit: list[str]

    def __len__(self) -> int:
        return len(self.task_id)

    @classmethod
    def of(cls, exp: ExperimentView) -> Replications:
        reps = exp.replications
        reps = reps.filter(pc.equal(reps["status"], ReplicationStatus.COMMITTED))
        point_index = reps["point_index"].to_numpy(zero_copy_only=False)
        replication = reps["replication"].to_numpy(zero_copy_only=False)
        tids = reps["task_id"].to_pylist()
        pidx = np.array([-1 if v is None or v != v else int(v) for v in point_index.tolist()],
                        dtype=np.int64)
        rnum = np.array([-1 if v is None or v != v else int(v) for v in replication.tolist()],
                        dtype=np.int64)
        order = sorted(range(len(tids)), key=lambda i: (pidx[i], rnum[i], tids[i]))
        shard = reps["shard_id"].to_pylist()
        finished = reps["finished"].to_pylist()
        records = reps["records"].to_pylist()
        # What the index says the commit was: a task committed again elsewhere (after its first
        # shard was lost) gets a different key and is recomputed.
        commit = [f"{shard[i]}|{finished[i]!r}|{records[i]}" for i in range(len(tids))]
        points = reps["point_id"].to_pylist()
        return cls(
            task_id=[tids[i] for i in order],
            point_id=[points[i] for i in order],
            point_index=pidx[order] if len(order) else pidx,
            replication=rnum[order] if len(order) else rnum,
            commit=[commit[i] for i in order],
        )


# -- the cache ---------------------------------------------------------------------------------


def _cache_key(spec: MetricSpec, duration: float | None) -> str:
    definition = {
        "engine": ENGINE_VERSION,
        "stream": spec.stream,
        "reduce": spec.reduce,
        "entities": spec.entities,
        "window": list(spec.window),
        "duration": duration,
    }
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class MetricCache:
    """``index/metrics/<name>-<key>.parquet``: task id, commit key and value of one definition."""

    SCHEMA = pa.schema([("task_id", pa.string()), ("commit", pa.string()),
                        ("value", pa.float64())])

    def __init__(self, exp_path: Path, enabled: bool = True) -> None:
        from .index import INDEX_DIR

        self.index_dir = Path(exp_path) / INDEX_DIR
        self.dir = self.index_dir / CACHE_DIR
        self.enabled = enabled

    def path(self, name: str, key: str) -> Path:
        return self.dir / f"{name}-{key}.parquet"

    def load(self, name: str, key: str) -> dict[str, tuple[str, float]]:
        if not self.enabled:
            return {}
        path = self.path(name, key)
        try:
            table = pq.read_table(path)
            if not table.schema.equals(self.SCHEMA, check_metadata=False):
                raise ValueError(f"unexpected columns {table.schema.names}")
        except FileNotFoundError:
            return {}
        except Exception as exc:  # a damaged cache costs a warning and a recomputation
            warnings.warn(f"{path}: unreadable metrics cache ({type(exc).__name__}: {exc}); "
                          "recomputing it", MetricsCacheWarning, stacklevel=4)
            return {}
        tids = table["task_id"].to_pylist()
        commits = table["commit"].to_pylist()
        values = table["value"].to_numpy(zero_copy_only=False)
        return {t: (c, float(v)) for t, c, v in zip(tids, commits, values, strict=True)}

    def store(self, name: str, key: str, task_ids: Sequence[str], commits: Sequence[str],
              values: np.ndarray) -> None:
        """Replace the cache file atomically; a read-only experiment just goes uncached."""
        if not self.enabled:
            return
        for parent in (self.index_dir, self.dir):
            if parent.is_symlink():
                return  # never write through a link planted in the experiment
        table = pa.table({"task_id": pa.array(list(task_ids), pa.string()),
                          "commit": pa.array(list(commits), pa.string()),
                          "value": pa.array(values, pa.float64())}, schema=self.SCHEMA)
        path = self.path(name, key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as fh:  # "x": never follows or reuses an existing file
                pq.write_table(table, fh, compression="zstd")
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass


# -- reading records in batches ----------------------------------------------------------------


def _stream_rows(exp: ExperimentView, stream: str, needed: Sequence[str]) -> pa.Table:
    rows = exp.streams({"stream": stream})
    rows = rows.filter(pc.is_in(rows["task_id"], value_set=pa.array(list(needed), pa.string())))
    rows = rows.select(["task_id", "shard_id", "records", "periodicity"])
    counts = rows.group_by("task_id").aggregate([("task_id", "count")])
    dup = counts.filter(pc.greater(counts["task_id_count"], 1))
    if len(dup):
        raise MetricError(
            f"replication {dup['task_id'][0].as_py()!r} has {dup['task_id_count'][0].as_py()} "
            f"streams labelled stream={stream!r}; a metric needs one per replication (label "
            "the streams of your own shards apart)")
    return rows.sort_by([("shard_id", "ascending"), ("task_id", "ascending")])


def _batches(rows: pa.Table, budget: Callable[[], int]) -> Iterator[list[str]]:
    """Task ids in groups of one shard whose record counts fit the current budget."""
    tids = rows["task_id"].to_pylist()
    shards = rows["shard_id"].to_pylist()
    records = rows["records"].to_numpy(zero_copy_only=False)
    batch: list[str] = []
    size = 0
    shard = None
    for tid, sh, n in zip(tids, shards, records, strict=True):
        n = int(n) if n == n else 0
        if batch and (sh != shard or size + n > budget()):
            yield batch
            batch, size = [], 0
        batch.append(tid)
        size += n
        shard = sh
    if batch:
        yield batch


def _read_batch(exp: ExperimentView, stream: str, task_ids: Sequence[str]) -> pa.Table:
    wanted = frozenset(task_ids)

    def rule(labels: Mapping[str, Any]) -> bool:
        return labels.get("task_id") in wanted and labels.get("stream") == stream

    table = exp.select(rule, format="list")
    return table.select(["task_id", "epoch", "indices", "values"])


# -- the reductions ----------------------------------------------------------------------------


def _flat(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values flattened, offsets from 0) of a list column, without copying one chunk."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = arr.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return flat, offsets - offsets[0]


def _segment_reduce(ufunc: np.ufunc, values: np.ndarray, offsets: np.ndarray,
                    empty: float) -> np.ndarray:
    """``ufunc.reduce`` of every list ``values[offsets[k]:offsets[k + 1]]`` (``empty`` if none)."""
    n = offsets.size - 1
    out = np.full(n, empty, dtype=np.float64)
    full = offsets[1:] > offsets[:-1]
    if values.size and full.any():
        # reduceat on the starts of the non-empty lists only: each runs to the next start
        out[full] = ufunc.reduceat(values, offsets[:-1][full])
    return out


class _Batch:
    """The records of one stream for a group of replications, sorted by replication and epoch."""

    def __init__(self, table: pa.Table, codes_of: Mapping[str, int]) -> None:
        n = table.num_rows
        # The code of every record's task, looked up in Arrow: no Python per record.
        keys = list(codes_of)
        positions = pc.index_in(table["task_id"], value_set=pa.array(keys, type=pa.string()))
        if positions.null_count:
            raise KeyError("a record of a replication that was not asked for")
        key_codes = np.fromiter((codes_of[k] for k in keys), dtype=np.int64, count=len(keys))
        global_codes = key_codes[np.asarray(positions.to_numpy(zero_copy_only=False),
                                            dtype=np.int64)]
        self.tasks, local = np.unique(global_codes, return_inverse=True)
        epoch = np.asarray(table["epoch"].to_numpy(zero_copy_only=False), dtype=np.float64)
        # stable: records with equal epochs stay in recording order
        self.order = np.lexsort((epoch, local))
        self.codes = local[self.order]
        self.epoch = epoch[self.order]
        self.groups = len(self.tasks)
        self.index, self.offsets = _flat(table["indices"])
        values, _ = _flat(table["values"])
        self.values = np.asarray(values, dtype=np.float64)
        self.nnz = np.diff(self.offsets)
        self.records = n
        self._local_of_record: np.ndarray | None = None
        self._entity_count: np.ndarray | None = None
        self._record_values: dict[str, np.ndarray] = {}

    def local_of_record(self) -> np.ndarray:
        """The local replication number of every record, in table order."""
        if self._local_of_record is None:
            local = np.empty(self.records, dtype=np.int64)
            local[self.order] = self.codes
            self._local_of_record = local
        return self._local_of_record

    def entity_count(self) -> np.ndarray:
        """Per replication: how many distinct indices its stream recorded."""
        if self._entity_count is None:
            if self.index.size:
                owner = np.repeat(self.local_of_record(), self.nnz)
                width = int(self.index.max()) + 1
                pairs = np.unique(owner * width + self.index.astype(np.int64, copy=False))
                self._entity_count = np.bincount(pairs // width, minlength=self.groups)
            else:
                self._entity_count = np.zeros(self.groups, dtype=np.int64)
        return self._entity_count

    def record_values(self, entities: str) -> np.ndarray:
        """One number per record (sorted order) after combining its indices by ``entities``."""
        cached = self._record_values.get(entities)
        if cached is not None:
            return cached
        n = self.records
        if entities == "sum":
            x = _segment_reduce(np.add, self.values, self.offsets, 0.0)
        elif entities.startswith("index:"):
            i = int(entities[len("index:"):])
            hit = np.flatnonzero(self.index == i)
            owner = np.searchsorted(self.offsets, hit, side="right") - 1
            x = np.bincount(owner, weights=self.values[hit], minlength=n)
        else:
            population = self.entity_count()[self.local_of_record()]
            if entities == "mean":
                total = _segment_reduce(np.add, self.values, self.offsets, 0.0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    x = np.where(population > 0, total / np.maximum(population, 1), 0.0)
            elif entities == "max":
                x = _segment_reduce(np.maximum, self.values, self.offsets, 0.0)
                # an entity the record leaves out is zero, so it bounds the maximum from below
                x = np.where(self.nnz < population, np.maximum(x, 0.0), x)
            else:  # pragma: no cover - MetricSpec validates entities
                raise MetricError(f"unknown entities rule {entities!r}")
        x = x[self.order]
        self._record_values[entities] = x
        return x


def _empty_value(spec: MetricSpec, periodic: bool, end: float) -> float:
    """The metric of a replication with no records of its stream."""
    if spec.reduce in ("count", "sum"):
        return 0.0
    if spec.reduce == "time_mean" and not periodic:
        lo, hi = spec.bounds
        start = lo if np.isfinite(lo) else 0.0
        return 0.0 if min(hi, end) > start else float("nan")
    return float("nan")


def _reduce(batch: _Batch, spec: MetricSpec, periodic: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The metric for every replication of ``batch`` (``periodic``/``end`` per local group)."""
    g = batch.groups
    x = batch.record_values(spec.entities)
    c, t = batch.codes, batch.epoch
    lo, hi = spec.bounds
    inside = (t >= lo) & (t < hi)
    cw, xw = c[inside], x[inside]
    count = np.bincount(cw, minlength=g).astype(np.float64)
    reduce = spec.reduce
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduce == "count":
            return count
        total = np.bincount(cw, weights=xw, minlength=g)
        if reduce == "sum":
            return total
        mean = np.where(count > 0, total / np.maximum(count, 1.0), np.nan)
        if reduce == "mean":
            return mean
        if reduce in ("min", "max"):
            out = np.full(g, np.inf if reduce == "min" else -np.inf)
            (np.minimum if reduce == "min" else np.maximum).at(out, cw, xw)
            return np.where(count > 0, out, np.nan)
        if reduce == "last":
            out = np.full(g, np.nan)
            if cw.size:
                is_last = np.ones(cw.size, dtype=bool)
                is_last[:-1] = cw[:-1] != cw[1:]
                out[cw[is_last]] = xw[is_last]
            return out
        assert reduce == "time_mean"
        start = lo if np.isfinite(lo) else 0.0
        stop = np.minimum(hi, end)
        following = np.empty(t.size)
        if t.size:
            following[:-1] = t[1:]
            boundary = np.ones(t.size, dtype=bool)
            boundary[:-1] = c[:-1] != c[1:]
            following[boundary] = end[c[boundary]]
        held = np.minimum(following, stop[c]) - np.maximum(t, start)
        area = np.bincount(c, weights=x * np.maximum(held, 0.0), minlength=g)
        span = stop - start
        weighted = np.where(span > 0, area / np.where(span > 0, span, 1.0), np.nan)
        return np.where(periodic, mean, weighted)


# -- putting it together -----------------------------------------------------------------------


def _durations(exp: ExperimentView, reps: Replications, duration: float | None,
               cfg: ExperimentConfig | None) -> tuple[np.ndarray, float | None]:
    """The end of every replication's run, and the value that keys the cache (None: per run)."""
    if duration is not None:
        d = float(duration)
        if not (np.isfinite(d) and d > 0):
            raise MetricError(f"duration must be a positive number (got {duration!r})")
        return np.full(len(reps), d), d
    if cfg is not None:
        return np.full(len(reps), float(cfg.duration)), float(cfg.duration)
    # Shards of users' own pools: the run ends with the last record of any of its streams.
    streams = exp.streams().select(["task_id", "max_epoch"])
    ends = streams.group_by("task_id").aggregate([("max_epoch", "max")])
    lookup = dict(zip(ends["task_id"].to_pylist(), ends["max_epoch_max"].to_pylist(),
                      strict=True))
    return np.array([lookup.get(t) or 0.0 for t in reps.task_id], dtype=np.float64), None


def _stream_metrics(exp: ExperimentView, reps: Replications, stream: str,
                    specs: Mapping[str, MetricSpec], needed: list[int],
                    ends: np.ndarray) -> dict[str, np.ndarray]:
    """Values of ``specs`` (all on ``stream``) for the replications at positions ``needed``."""
    needed_tids = [reps.task_id[i] for i in needed]
    codes_of = {t: k for k, t in enumerate(needed_tids)}
    rows = _stream_rows(exp, stream, needed_tids)
    periodic = np.zeros(len(needed), dtype=bool)
    periodicity = rows["periodicity"].to_pylist()
    for tid, p in zip(rows["task_id"].to_pylist(), periodicity, strict=True):
        periodic[codes_of[tid]] = p is not None
    end = ends[needed]
    out = {name: np.array([_empty_value(spec, bool(periodic[k]), float(end[k]))
                           for k in range(len(needed))], dtype=np.float64)
           for name, spec in specs.items()}
    budget = [_INITIAL_RECORD_BUDGET]
    for batch_tids in _batches(rows, lambda: budget[0]):
        table = _read_batch(exp, stream, batch_tids)
        if table.num_rows == 0:
            continue
        batch = _Batch(table, codes_of)
        if batch.records:
            per_record = max(batch.values.size / batch.records, 1.0)
            budget[0] = max(int(_VALUE_BUDGET / per_record), 1)
        for name, spec in specs.items():
            values = _reduce(batch, spec, periodic[batch.tasks], end[batch.tasks])
            out[name][batch.tasks] = values
    return out


def compute_metrics(exp: ExperimentView, metrics: MetricsArg = None, *,
                    duration: float | None = None, cache: bool = True) -> pa.Table:
    """One row per committed replication, one column per metric; see :meth:`Experiment.metrics`.

    Columns: ``task_id``, ``point_id``, ``replication``, the sweep parameters, then the metrics
    asked for (all of the config's, in its order, for None); the metrics an expr needs are
    computed but not returned unless asked for. Rows in point, then replication order.
    Undefined values are null.
    """
    cfg = experiment_config(exp)
    specs = resolve_metrics(exp, metrics, cfg)
    if isinstance(metrics, str):
        wanted = [metrics]
    elif isinstance(metrics, Mapping):
        wanted = [str(name) for name in metrics]
    elif metrics is not None:
        wanted = list(dict.fromkeys(metrics))
    else:
        wanted = list(specs)
    reps = Replications.of(exp)
    ends, duration_key = _durations(exp, reps, duration, cfg)
    store = MetricCache(Path(exp.path), enabled=cache)

    values: dict[str, np.ndarray] = {}
    by_stream: dict[str, dict[str, MetricSpec]] = {}
    for name, spec in specs.items():
        if spec.stream is not None:
            by_stream.setdefault(spec.stream, {})[name] = spec

    for stream, group in by_stream.items():
        keys = {name: _cache_key(spec, duration_key) for name, spec in group.items()}
        stale: set[int] = set()
        cached_rows: dict[str, dict[str, tuple[str, float]]] = {}
        for name in group:
            cached = store.load(name, keys[name])
            cached_rows[name] = cached
            arr = np.full(len(reps), np.nan)
            for i, tid in enumerate(reps.task_id):
                hit = cached.get(tid)
                if hit is not None and hit[0] == reps.commit[i]:
                    arr[i] = hit[1]
                else:
                    stale.add(i)
            values[name] = arr
        if stale:
            needed = sorted(stale)
            fresh = _stream_metrics(exp, reps, stream, group, needed, ends)
            for name in group:
                values[name][needed] = fresh[name]
        for name in group:
            cached = cached_rows[name]
            unchanged = (not stale and len(cached) == len(reps)
                         and all(t in cached for t in reps.task_id))
            if not unchanged:
                store.store(name, keys[name], reps.task_id, reps.commit, values[name])

    for name in evaluation_order(specs):
        spec = specs[name]
        if spec.expr is not None:
            values[name] = Expression(spec.expr).evaluate(values)

    return _metrics_table(reps, cfg, {name: specs[name] for name in wanted}, values)


def _parameter_array(values: list[Any]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    try:
        if kinds <= {bool}:
            return pa.array(values, pa.bool_())
        if kinds <= {int}:
            return pa.array(values, pa.int64())
        if kinds <= {int, float}:
            return pa.array([None if v is None else float(v) for v in values], pa.float64())
    except (pa.ArrowInvalid, OverflowError):
        pass
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def point_parameters(cfg: ExperimentConfig | None, point_index: Sequence[int]
                     ) -> dict[str, pa.Array]:
    """One Arrow column per sweep parameter for rows of the given point indices."""
    if cfg is None:
        return {}
    points = cfg.points()
    cols: dict[str, pa.Array] = {}
    for key in sweep_parameters(cfg):
        cols[key] = _parameter_array([
            points[i].get(key) if 0 <= i < len(points) else None for i in point_index])
    return cols


def _metrics_table(reps: Replications, cfg: ExperimentConfig | None,
                   specs: Mapping[str, MetricSpec], values: Mapping[str, np.ndarray]
                   ) -> pa.Table:
    cols: dict[str, pa.Array] = {
        "task_id": pa.array(reps.task_id, pa.string()),
        "point_id": pa.array(reps.point_id, pa.string()),
        "replication": pa.array([None if r < 0 else int(r) for r in reps.replication.tolist()],
                                pa.int64()),
    }
    cols.update(point_parameters(cfg, reps.point_index.tolist()))
    for name in specs:
        arr = np.asarray(values[name], dtype=np.float64)
        cols[name] = pa.array(arr, pa.float64(), mask=~np.isfinite(arr))
    meta = {b"disco.metrics": json.dumps({n: s.model_dump(mode="json", exclude_unset=True)
                                          for n, s in specs.items()}).encode()}
    return pa.table(cols).replace_schema_metadata(meta)
