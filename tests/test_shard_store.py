"""ShardWriter into object storage: the commit protocol of sharding/publish.py, proved on a real
S3 server (moto, tests/s3_server.py) with a proxy that records and fails requests.

The protocol (docs/service.md, "Experiments in object storage"): data pieces before the commit
object that names them; unique, immutable names; an interrupted upload is no commit; a commit
published late is kept once (the index keeps a task's first commit); pieces merged so that their
number stays small, never leaving a reader without a cover; scratch cleaned as data is published.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from disco_data_logger.errors import StorageError
from disco_data_logger.sharding import Experiment, ShardWriter, merge
from disco_data_logger.sharding.layout import piece_name
from disco_data_logger.sharding.manifest import _decompress, _Frames, _iter_frames
from disco_data_logger.sharding.mirror import StoreMirror
from disco_data_logger.sharding.publish import FANOUT
from tests.s3_server import S3Proxy

pytestmark = pytest.mark.s3


def _values(task: int, epoch: int) -> np.ndarray:
    return np.array([task + epoch * 0.5, 2.0, -1.25 * epoch])


def _write(shard: ShardWriter, tasks: range, epochs: int = 20) -> None:
    for t in tasks:
        with shard.replication(f"task-{t:04d}", replication=t) as rep:
            sid = rep.logger.register_stream({"measure": "level", "replication": t},
                                             value_scale=None)
            for e in range(epochs):
                rep.logger.record(sid, float(e), [1, 4, 9], _values(t, e))


def _check_records(uri: str, tasks: range, epochs: int = 20) -> None:
    """Every committed task's records, exactly once, equal what was recorded (the oracle)."""
    exp = Experiment.open(uri)
    table = exp.select("measure=level", format="list").to_pydict()
    got: dict[str, list[tuple[float, list[float]]]] = {}
    for tid, epoch, values in zip(table["task_id"], table["epoch"], table["values"],
                                  strict=True):
        got.setdefault(tid, []).append((epoch, values))
    assert sorted(got) == [f"task-{t:04d}" for t in tasks]
    for t in tasks:
        rows = sorted(got[f"task-{t:04d}"])
        assert [e for e, _v in rows] == [float(e) for e in range(epochs)]
        for e, values in rows:
            assert values == _values(t, int(e)).tolist()


def _journal_frames(data: bytes) -> list[tuple[int, list[dict[str, Any]]]]:
    import json

    out = []
    for offset, body in _iter_frames(data, _Frames(0), "journal", []):
        assert body is not None
        lines = [json.loads(x) for x in _decompress(body).split(b"\n") if x]
        out.append((offset, lines))
    return out


def test_commit_objects_are_written_after_their_data(s3: Any, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    with S3Proxy(s3.server.port) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        uri = s3.uri("order")
        shard = ShardWriter(uri, commit_group=1)
        _write(shard, range(6))
        shard.close()
        puts = [path for method, path in proxy.stats.log if method == "PUT"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.server.endpoint)
    prefix = f"/{s3.bucket}/order/shards/{shard.shard_id}"
    journal = Experiment.open(uri).path / "shards" / shard.shard_id / "journal.jsonl.zst"
    frames = _journal_frames(journal.read_bytes())
    commits = [(offset, line) for offset, lines in frames for line in lines
               if line["type"] == "commits"]
    assert sum(line["n"] for _o, line in commits) == 6
    for offset, line in commits:
        # The first object that carried this frame: a journal piece written as the group's
        # commit (later, merged pieces carry it again).
        carrier = next(i for i, p in enumerate(puts) if p.startswith(f"{prefix}/journal/")
                       and int(p.rsplit("/", 1)[1][:15]) <= offset < int(p[-15:]))
        for number, start, end, _crc in line["sync"]:
            data = puts.index(f"{prefix}/segments/{number:05d}/{piece_name(start, end)}")
            assert data < carrier, "a commit object was written before the data it names"


def test_an_interrupted_publish_is_no_commit_and_a_late_one_counts_once(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = {"on": False}

    def fault(n: int, method: str, path: str) -> str | None:
        return "503" if failing["on"] and method == "PUT" and "/journal/" in path else None

    uri = s3.uri("interrupted")
    with S3Proxy(s3.server.port, fault=fault) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        shard = ShardWriter(uri, commit_group=1, storage={"retries": 2})
        _write(shard, range(2))
        failing["on"] = True
        with pytest.raises(StorageError, match="failed 2 times in a row"):
            _write(shard, range(2, 3))  # its data went out, its commit object did not
        names = s3.objects("interrupted")
        assert any("/segments/" in n for n in names)
        index = merge(uri)
        assert index.totals["committed"] == 2  # data without a commit object is no commit
        assert sorted(index.committed_task_ids) == ["task-0000", "task-0001"]
        failing["on"] = False
        # The next group publishes what was left: task 2's commit becomes durable late (its
        # attempt was reported failed), and the coordinator ran it again elsewhere.
        _write(shard, range(3, 4))
        shard.close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.server.endpoint)
    again = ShardWriter(uri)
    _write(again, range(2, 3))
    again.close()
    index = merge(uri)
    assert index.totals["committed"] == 4 and index.totals["duplicates_dropped"] == 1
    _check_records(uri, range(4))


def test_pieces_stay_few_scratch_stays_small_and_goes_at_close(s3: Any,
                                                               tmp_path: Path) -> None:
    uri = s3.uri("many")
    shard = ShardWriter(uri, commit_group=1, storage={"scratch": str(tmp_path / "scratch")},
                        logger_kwargs={"rotate_bytes": 4096, "block_bytes": 1024,
                                       "ring_bytes": 1 << 16})
    staged_segments = []
    n = 3 * FANOUT + 5
    for t in range(n):
        _write(shard, range(t, t + 1), epochs=30)
        staged_segments.append(len(list(shard.path.glob("*.seg.zst"))))
    objects = s3.objects("many")
    shard.close()
    assert max(staged_segments) <= 2  # published, sealed segments leave scratch at once
    assert not shard.path.exists() and not list((tmp_path / "scratch").rglob("*"))
    journal = [n for n in objects if "/journal/" in n]
    segments = {n.rsplit("/", 2)[1] for n in objects if "/segments/" in n}
    assert len(segments) > 3  # the small rotation made several segments
    # n groups, yet the journal is a few pieces (merged FANOUT at a time), never n.
    assert len(journal) < FANOUT + 4
    final = s3.objects("many")
    assert len([n for n in final if "/journal/" in n]) == 1  # one piece once closed
    assert f"shards/{shard.shard_id}/_DONE" in "\n".join(final)
    _check_records(uri, range(n), epochs=30)


def test_a_reader_survives_pieces_merged_under_it(s3: Any) -> None:
    uri = s3.uri("race")
    shard = ShardWriter(uri, commit_group=1)
    _write(shard, range(3))
    mirror = StoreMirror(uri)
    mirror.refresh()  # lists the three small journal pieces...
    shard.close()  # ...which the close merges into one and deletes
    mirror.sync_shard(shard.shard_id)  # a piece is gone: it lists again and goes on
    assert (mirror.shard_dir(shard.shard_id) / "journal.jsonl.zst").stat().st_size == \
        sum(size for name, size in s3.objects("race").items() if "/journal/" in name)
    _check_records(uri, range(3))


_DYING_WORKER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from disco_data_logger.sharding import ShardWriter
    shard = ShardWriter(sys.argv[1], commit_group=1)
    print(shard.path, flush=True)
    for t in range(3):
        rep = shard.begin(f"task-{t:04d}", replication=t)
        sid = rep.logger.register_stream({"measure": "level", "replication": t},
                                         value_scale=None)
        for e in range(20):
            v = np.array([t + e * 0.5, 2.0, -1.25 * e]) if t < 2 else np.full(3, 666.0)
            rep.logger.record(sid, float(e), [1, 4, 9], v)
        if t == 2:
            shard.logger.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # mid-replication, its records on disk
        rep.commit()
""")


def test_a_killed_worker_costs_only_its_open_replication(s3: Any, tmp_path: Path) -> None:
    uri = s3.uri("killed")
    proc = subprocess.run([sys.executable, "-c", _DYING_WORKER, uri], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    scratch = Path(proc.stdout.strip())
    assert scratch.is_dir()  # a dead worker's scratch stays until the next worker sweeps it
    index = merge(uri)
    assert sorted(index.committed_task_ids) == ["task-0000", "task-0001"]
    shard = ShardWriter(uri)  # the next worker of the experiment on this node
    assert not scratch.exists() and not Path(f"{scratch}.lock").exists()
    _write(shard, range(2, 3))
    shard.close()
    _check_records(uri, range(3))  # task 2 once, the dead attempt's 666s nowhere
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
