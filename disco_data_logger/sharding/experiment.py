"""Experiment: query the results of a merged (or mergeable) output directory.

Streams are chosen by labels from the index (:mod:`.index`: label columns, one per label key),
column by column with Arrow compute (a callable rule is called once per distinct set of labels),
then each shard's segments are decoded once by the native reader with exactly the committed
stream ids of that shard and only the segment files its journal's commits wrote to, so the records
of failed or uncommitted replications, and of stray segment files, never appear.
Everything after the decode is Arrow compute on whole columns: no Python loop per record.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..errors import CorruptDataWarning, UnsafePathError
from .index import ExperimentIndex, label_columns_of
from .layout import SHARD_ID_RE, SHARDS_DIR
from .names import key_problem
from .paths import check_export_target
from .storage import is_uri

if TYPE_CHECKING:
    import pandas
    import polars

    from ..selector import Rule
    from .metrics import MetricsArg

__all__ = ["Experiment"]

# Columns the record tables carry besides the labels, in front of them.
_KEY_COLUMNS = ("task_id", "point_id", "replication")
DEFAULT_PARTITIONS = ("stream", "point_id")


class Experiment:
    """A finished (or interrupted) experiment: its replications, streams and records."""

    def __init__(self, path: Path, index: ExperimentIndex) -> None:
        self.path = path
        """The experiment's directory (for one in object storage, its local mirror)."""
        self._index = index
        self.info = index.info
        closed = {s["shard_id"]: bool(s.get("closed")) for s in self.info.get("shards", [])}
        self._closed_shards = closed
        self._mirror = index.mirror
        self.location: str = index.location or str(path)
        """Where the experiment is, as users name it: its directory or its URI."""

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, storage: Any = None) -> Experiment:
        """Open an output directory or an object-store URI (``s3://bucket/prefix``); what the
        index lacks (commits since the last merge) is read from the journals in memory, nothing
        is written. ``storage``: the ``storage:`` options of a config (endpoint, region, cache)
        for a URI."""
        if is_uri(path):
            index = ExperimentIndex.build(str(path), storage=storage)
            return cls(index.output_dir, index)
        path = Path(path)
        return cls(path, ExperimentIndex.build(path))

    # -- metadata ------------------------------------------------------------------------------

    @property
    def replications(self) -> pa.Table:
        """One row per replication: task id, point, replication, status, attempts, shard, timing,
        error."""
        return self._index.replications

    @property
    def _streams(self) -> pa.Table:
        return self._index.streams

    @property
    def label_columns(self) -> list[str]:
        return label_columns_of(self._streams)

    def streams(self, rule: Rule = None) -> pa.Table:
        """The committed streams whose labels match ``rule`` (:mod:`disco_data_logger.selector`).

        The labels a rule sees are the label columns plus ``task_id``, ``point_id`` and
        ``replication``; a label whose value is null counts as absent.
        """
        table = self._streams
        if rule is None or (isinstance(rule, str) and not rule.strip()):
            return table
        mask = _rule_mask(table, rule, [*_KEY_COLUMNS, *label_columns_of(table)])
        return table.filter(pa.array(mask))

    # -- records -------------------------------------------------------------------------------

    def select(self, rule: Rule = None, *,
               format: Literal["long", "list"] = "long") -> pa.Table:
        """Records of the matching streams as one Arrow table.

        ``format="long"``: one row per non-zero: ``task_id, point_id, replication, <labels...>,
        epoch, index, value`` (records with an empty vector have no row).
        ``format="list"``: one row per record with ``indices`` and ``values`` list columns.
        """
        if format not in ("long", "list"):
            raise ValueError(f"format must be 'long' or 'list' (got {format!r})")
        selected = self.streams(rule)
        parts = list(self._iter_parts(selected, format))
        if not parts:
            return self._empty(selected, format)
        return pa.concat_tables(parts)

    def _meta_columns(self, selected: pa.Table) -> list[str]:
        labels = [c for c in label_columns_of(selected)
                  if c not in _KEY_COLUMNS and selected[c].null_count < len(selected)]
        return [*_KEY_COLUMNS, *labels]

    def _iter_parts(self, selected: pa.Table, format: str) -> Iterator[pa.Table]:
        from ..reader import read

        if len(selected) == 0:
            return
        meta_names = self._meta_columns(selected)
        meta = selected.select(meta_names)
        shard_col = selected["shard_id"].to_numpy(zero_copy_only=False)
        sid_col = selected["stream_id"].to_numpy().astype(np.int64)
        expected = selected["records"].to_numpy(zero_copy_only=False)
        order = np.argsort(shard_col, kind="stable")
        shard_ids, starts = np.unique(shard_col[order], return_index=True)
        bounds = [*starts[1:], len(order)]
        for shard_id, lo, hi in zip(shard_ids, starts, bounds, strict=True):
            rows = order[lo:hi]
            sids = sid_col[rows]
            if not SHARD_ID_RE.match(str(shard_id)):
                warnings.warn(f"{self.path}: index row names shard {str(shard_id)!r}, which is "
                              "not a shard id; its streams are skipped", CorruptDataWarning,
                              stacklevel=3)
                continue
            shard_dir = self.path / SHARDS_DIR / str(shard_id)
            segments = self._committed_segments(str(shard_id))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CorruptDataWarning)
                if self._mirror is not None:
                    # Only the shards a query needs are fetched; the mirror's lock keeps another
                    # command from dropping the copy while it is decoded.
                    with self._mirror.locked():
                        self._mirror.sync_shard(str(shard_id))
                        table = read(shard_dir, stream_ids=sids.tolist(), segments=segments)
                else:
                    table = read(shard_dir, stream_ids=sids.tolist(), segments=segments)
            closed = self._closed_shards.get(str(shard_id), True)
            for w in caught:
                # A shard whose worker died has a torn tail after its last commit; that is
                # expected, and the record counts below catch any loss of committed data.
                if closed or not issubclass(w.category, CorruptDataWarning):
                    message = w.message
                    if self._mirror is not None and isinstance(message, Warning):
                        message = type(message)(self._mirror.display(str(message)))
                    warnings.warn_explicit(message, w.category, w.filename, w.lineno)
            table = table.combine_chunks()
            lookup = np.full(int(sids.max()) + 1, -1, dtype=np.int64)
            lookup[sids] = rows
            got_sid = table["stream_id"].to_numpy().astype(np.int64)
            in_range = got_sid < len(lookup)
            pos = np.where(in_range, lookup[np.minimum(got_sid, len(lookup) - 1)], -1)
            if (pos < 0).any():  # the reader returned streams we did not ask for
                keep = pos >= 0
                table = table.filter(pa.array(keep))
                pos = pos[keep]
            self._check_counts(str(shard_id), rows, pos, sid_col, expected)
            meta_rows = meta.take(pa.array(pos))
            if format == "list":
                cols = {n: meta_rows[n] for n in meta_names}
                cols.update(epoch=table["epoch"], indices=table["indices"],
                            values=table["values"])
                yield pa.table(cols)
                continue
            indices = table["indices"].chunk(0) if table.num_rows else pa.array(
                [], pa.list_(pa.int64()))
            values = table["values"].chunk(0) if table.num_rows else pa.array(
                [], pa.list_(pa.float64()))
            parents = pc.list_parent_indices(indices)
            cols = {n: meta_rows[n].take(parents) for n in meta_names}
            cols["epoch"] = table["epoch"].take(parents)
            cols["index"] = pc.list_flatten(indices)
            cols["value"] = pc.list_flatten(values)
            yield pa.table(cols)

    def _committed_segments(self, shard_id: str) -> list[str] | None:
        """The segment files a shard's journal says its group commits wrote to (their ``sync``
        ranges); any other ``*.seg.zst`` in the shard (a stray copy, a file left by hand) is not
        read, so its records are never counted twice. None (read all) for a format-1 shard,
        whose journal does not list them."""
        st = (self._index.state.get("shards") or {}).get(shard_id) or {}
        covered = st.get("covered")
        if st.get("version") != 2 or not isinstance(covered, dict):
            return None
        return sorted(covered)

    def _check_counts(self, shard_id: str, rows: np.ndarray, pos: np.ndarray,
                      sid_col: np.ndarray, expected: np.ndarray) -> None:
        counts = np.bincount(pos, minlength=len(sid_col))[rows]
        want = expected[rows].astype(np.int64)
        short = np.nonzero(counts < want)[0]
        if len(short):
            i = short[0]
            warnings.warn(
                f"shard {shard_id}: stream {int(sid_col[rows[i]])} has {int(counts[i])} readable "
                f"records but its commit lists {int(want[i])} ({len(short)} stream(s) short); "
                f"run `disco-data-logger verify {self.location}`",
                CorruptDataWarning,
                stacklevel=3,
            )

    def _empty(self, selected: pa.Table, format: str) -> pa.Table:
        meta_names = self._meta_columns(selected) if len(selected) else list(_KEY_COLUMNS)
        cols = {n: pa.array([], type=self._streams.schema.field(n).type) for n in meta_names}
        cols["epoch"] = pa.array([], pa.float64())
        if format == "list":
            cols["indices"] = pa.array([], pa.list_(pa.int64()))
            cols["values"] = pa.array([], pa.list_(pa.float64()))
        else:
            cols["index"] = pa.array([], pa.int64())
            cols["value"] = pa.array([], pa.float64())
        return pa.table(cols)

    def to_pandas(self, rule: Rule = None) -> pandas.DataFrame:
        """The long table as a pandas DataFrame (needs pandas)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError(
                'to_pandas() needs pandas: pip install "disco-data-logger[query]"') from None
        return self.select(rule).to_pandas()

    def to_polars(self, rule: Rule = None) -> polars.DataFrame:
        """The long table as a Polars DataFrame (needs polars)."""
        try:
            import polars
        except ImportError:
            raise ImportError(
                'to_polars() needs polars: pip install "disco-data-logger[query]"') from None
        frame = polars.from_arrow(self.select(rule))
        assert isinstance(frame, polars.DataFrame)
        return frame

    # -- export --------------------------------------------------------------------------------

    def export(self, out_dir: str | os.PathLike[str], rule: Rule = None, *,
               partition_by: Sequence[str] | None = None, overwrite: bool = False,
               storage: Any = None) -> Path | str:
        """Write the long table as a Hive-partitioned Parquet dataset.

        Partitioned by ``stream`` and ``point_id`` by default (those present), so DuckDB
        (``read_parquet('OUT/**/*.parquet', hive_partitioning=true)``) and Polars
        (``pl.scan_parquet('OUT/**/*.parquet', hive_partitioning=True)``) prune by them.
        Written shard by shard, so memory stays bounded by the largest shard.

        ``out_dir`` may not be, contain or lie inside an experiment or logger directory (this
        one included), and ``overwrite`` replaces only a previous export (Parquet files in
        ``key=value`` directories): see :mod:`.paths`. Partition column names must be safe as
        directory names (:func:`.names.key_problem`); their values are escaped.

        ``out_dir`` may be an object-store URI (``s3://bucket/prefix``, with ``storage``
        options as for :meth:`open`): the dataset is written there with the same rules (never
        into or around an experiment; ``overwrite`` replaces only a previous export) and the
        URI is returned.
        """
        selected = self.streams(rule)
        names = self._meta_columns(selected) if len(selected) else list(_KEY_COLUMNS)
        if partition_by is None:
            partition_by = [c for c in DEFAULT_PARTITIONS if c in names]
        missing = [c for c in partition_by if c not in names]
        if missing:
            raise ValueError(f"cannot partition by {missing}: columns are {names}")
        for column in partition_by:
            problem = key_problem(column)
            if problem is not None:
                raise UnsafePathError(f"cannot partition by {column!r}: the column name "
                                      f"{problem} (select by it instead)")
        if is_uri(out_dir):
            return self._export_to_store(str(out_dir), selected, partition_by, overwrite,
                                         storage)
        out = Path(out_dir)
        check_export_target(out, self.path, overwrite=overwrite)
        if os.path.lexists(out) and any(out.iterdir()):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        for n, part in enumerate(self._iter_parts(selected, "long")):
            if part.num_rows == 0:
                continue
            ds.write_dataset(
                part,
                out,
                format="parquet",
                partitioning=list(partition_by) or None,
                partitioning_flavor="hive" if partition_by else None,
                basename_template=f"part-{n:05d}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            )
        return out

    def _export_to_store(self, uri: str, selected: pa.Table, partition_by: Sequence[str],
                         overwrite: bool, storage: Any) -> str:
        from .paths import check_store_export_target
        from .storage import ObjectStore, StorageOptions

        options = storage if storage is not None else (
            self._mirror.options if self._mirror is not None else StorageOptions())
        store = ObjectStore(uri, options)
        for name in check_store_export_target(store, self.location, overwrite=overwrite):
            store.delete(name)  # a previous export's Parquet files only
        file_options = ds.ParquetFileFormat().make_write_options(compression="zstd")
        for n, part in enumerate(self._iter_parts(selected, "long")):
            if part.num_rows == 0:
                continue

            def write(part: pa.Table = part, n: int = n) -> None:
                ds.write_dataset(
                    part,
                    store.key(),
                    filesystem=store.fs,
                    format="parquet",
                    partitioning=list(partition_by) or None,
                    partitioning_flavor="hive" if partition_by else None,
                    basename_template=f"part-{n:05d}-{{i}}.parquet",
                    existing_data_behavior="overwrite_or_ignore",
                    file_options=file_options,
                    create_dir=False,
                )

            # A retried part writes the same objects again: nothing is left half-written.
            store._call("writing the export to", "", write)
        return store.uri

    # -- analysis (sharding/metrics.py, summary.py, fan.py) ------------------------------------

    def metrics(self, metrics: MetricsArg = None, *, duration: float | None = None,
                cache: bool = True) -> pa.Table:
        """One row per committed replication: ``task_id, point_id, replication``, the sweep
        parameters, then one column per metric (null where a metric is undefined).

        ``metrics``: None for the config's ``metrics:``, a name or list of names of them, or a
        mapping ``name -> definition`` such as ``{"L": {"stream": "queue", "reduce":
        "time_mean", "window": [100, None]}}``. ``duration`` (the end of ``time_mean`` windows)
        defaults to the config's, or to each replication's last epoch without a config. Results
        are cached in ``index/metrics/`` and recomputed only for replications committed since.
        """
        from .metrics import compute_metrics

        return compute_metrics(self, metrics, duration=duration, cache=cache)

    def summary(self, confidence: float = 0.95, *, metrics: MetricsArg = None,
                duration: float | None = None) -> pa.Table:
        """Per metric and sweep point: ``metric, point_id, <parameters>, n, mean, sd, se,
        half_width, ci_low, ci_high, missing``, with Student-t intervals at ``confidence``."""
        from .statistics import check_confidence
        from .summary import summary_table

        check_confidence(confidence)
        return summary_table(self.metrics(metrics, duration=duration), confidence)

    def compare(self, reference: Any, *, confidence: float = 0.95, metrics: MetricsArg = None,
                paired: bool | None = None, duration: float | None = None) -> pa.Table:
        """Every sweep point minus ``reference`` (a point id such as ``"p0000"``, a point index,
        or parameter values such as ``{"s": 4.0}`` or ``"s=4.0"``), per metric, with its CI.

        ``paired=None`` pairs replications by number when the config says ``seeding: common``
        and uses Welch's interval otherwise (the table's ``disco.note`` metadata says so);
        ``True``/``False`` force either.
        """
        from .metrics import experiment_config
        from .statistics import check_confidence
        from .summary import compare_table, resolve_point

        check_confidence(confidence)
        table = self.metrics(metrics, duration=duration)
        if paired is None:
            cfg = experiment_config(self)
            paired = cfg is not None and cfg.seeding == "common"
        point = resolve_point(reference, table)
        return compare_table(table, point, paired=paired, confidence=confidence)

    def fan(self, stream: str, *, entities: str = "sum", points: Sequence[str] | None = None,
            max_epochs: int = 400) -> pa.Table:
        """Fan-chart data of one stream: per sweep point and epoch, the median and the 50 % and
        90 % bands across replications of its entity-combined value (``sum`` by default);
        columns ``point_id, <parameters>, epoch, n, mean, low90, low50, median, high50, high90``.
        Draw it with :func:`disco_data_logger.sharding.fan.plot_fan`."""
        from .fan import fan_table

        return fan_table(self, stream, entities=entities, points=points, max_epochs=max_epochs)

    def __repr__(self) -> str:
        totals = self.info.get("totals", {})
        return (f"<Experiment {self.location}: {totals.get('committed', '?')} replications, "
                f"{len(self._streams)} streams>")


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table[name]
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _codes(col: pa.Array) -> tuple[np.ndarray, list[Any]]:
    """Per row, the position of its value among the column's distinct values (-1: null)."""
    encoded = pc.dictionary_encode(col)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def _rule_mask(table: pa.Table, rule: Any, names: Sequence[str]) -> np.ndarray:
    """Which rows of a streams table ``rule`` selects, evaluated per distinct value."""
    from ..selector import compile_rule, requirements, values_match

    names = list(dict.fromkeys(n for n in names if n in table.column_names))
    n = table.num_rows
    reqs = requirements(rule)
    if reqs is None:
        # A callable: call it once per distinct combination of labels.
        predicate = compile_rule(rule)
        if not names or n == 0:
            return np.full(n, bool(predicate({})), dtype=bool) if n else np.zeros(0, bool)
        coded = [_codes(_column(table, name)) for name in names]
        matrix = np.stack([c for c, _ in coded], axis=1)
        combos, inverse = np.unique(matrix, axis=0, return_inverse=True)
        results = np.empty(len(combos), dtype=bool)
        for i, combo in enumerate(combos):
            labels = {name: coded[j][1][code] for j, (name, code) in
                      enumerate(zip(names, combo, strict=True)) if code >= 0}
            results[i] = bool(predicate(labels))
        return results[np.asarray(inverse).reshape(-1)]
    mask = np.ones(n, dtype=bool)
    for key, op, values in reqs:
        if key not in names:
            present = np.zeros(n, dtype=bool)
            hit = present
        else:
            codes, distinct = _codes(_column(table, key))
            present = codes >= 0
            if op in ("in", "notin"):
                good = np.array([any(values_match(v, w) for w in values) for v in distinct],
                                dtype=bool)
                hit = np.where(present, good[np.maximum(codes, 0)] if len(good) else False,
                               False)
            else:
                hit = present
        if op in ("in", "exists"):
            mask &= hit
        else:
            mask &= ~hit
    return mask
