"""disco-engine's pattern: ``from data_logger import DataLogger`` in worker processes.

A disco-engine worker creates one ``DataLogger(segments_dir=<root>/<expid>/<repid>/<partition>,
ring_bytes=..., rotate_bytes=..., zstd_level=...)`` per run, its nodes register streams and
record ``graphblas.Vector``s (plain and periodic), and the logger is closed. The result must read
back identically through ``data_logger`` (0.1.x's Collector with a disco-tools rule) and through
``disco_data_logger`` (its Collector and ``read``), and agree with the pure-Python reader.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pyarrow as pa

EXPID = "exp-7"
NODES = 3
STEPS = 120


def run_partition(args: tuple[str, str, int]) -> str:
    """One run of one partition, as a disco-engine worker does it."""
    import graphblas as gb

    from data_logger import DataLogger

    root, repid, partition = args
    segments_dir = Path(root) / EXPID / repid / str(partition)
    logger = DataLogger(segments_dir=segments_dir, ring_bytes=1 << 22, rotate_bytes=1 << 16,
                        zstd_level=3)
    rng = np.random.default_rng([int(repid[-1]), partition])
    nodes = []
    for n in range(NODES):
        labels = {"expid": EXPID, "repid": repid, "partition": partition, "node": f"n{n}"}
        stock = logger.register_stream({**labels, "measure": "stock"}, epoch_scale=1e-3,
                                       value_scale=1e-2)
        demand = logger.register_periodic_stream({**labels, "measure": "demand"},
                                                 epoch_scale=1e-3, value_scale=1e-2,
                                                 periodicity=1.0, kind="accumulator")
        nodes.append((stock, demand))
    for step in range(STEPS):
        epoch = step * 0.1
        for stock, demand in nodes:
            idx = np.flatnonzero(rng.random(40) < 0.2)
            vec = gb.Vector.from_coo(idx, rng.normal(10, 3, size=len(idx)), size=40)
            logger.record_vector(stock, epoch, vec)
            demand.record_vector(epoch, vec)
    for _, demand in nodes:
        demand.close(STEPS * 0.1)
    logger.close()
    return str(segments_dir)


def test_disco_engine_workers_read_back_identically_through_both_names(tmp_path: Path) -> None:
    from tools.label_selector import Label

    import data_logger
    import disco_data_logger
    from tests.common import decode_python

    tasks = [(str(tmp_path), repid, p) for repid in ("rep-0", "rep-1") for p in (0, 1)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        dirs = [Path(d) for d in pool.map(run_partition, tasks)]
    assert all((d / "_DONE").exists() for d in dirs)

    def collect(collector_cls, rule) -> pa.Table:
        batches: list[pa.RecordBatch] = []

        class Writer:
            def write_batch(self, batch: pa.RecordBatch) -> None:
                batches.append(batch)

        assert collector_cls(dirs).collect(Writer(), rule=rule, columns=["repid", "node"])
        return pa.Table.from_batches(batches).combine_chunks()

    old = collect(data_logger.Collector,
                  (Label("expid") == EXPID) & (Label("measure") == "stock"))
    new = collect(disco_data_logger.Collector, f"expid={EXPID},measure=stock")
    assert old.num_rows == len(dirs) * NODES * STEPS
    assert old.equals(new)

    for d in dirs:
        native = disco_data_logger.read(d)
        python = decode_python(d).records()
        assert native.num_rows == NODES * (STEPS + STEPS // 10)
        assert native["stream_id"].to_pylist() == [r[0] for r in python]
        assert native["epoch"].to_pylist() == [r[1] for r in python]
        assert native["indices"].to_pylist() == [r[2].tolist() for r in python]
        assert native["values"].to_pylist() == [r[3].tolist() for r in python]
    # The collectors wrote directory by directory: the same rows read() selects in each.
    per_dir = pa.concat_tables(disco_data_logger.read(d, "measure=stock") for d in dirs)
    assert old.select(per_dir.column_names).equals(per_dir.combine_chunks())
