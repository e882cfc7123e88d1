"""Ctrl-C at the worst moment of a commit never writes a commit twice, nor half of one.

A real SIGINT (``signal.raise_signal``) is delivered while a real shard appends its group commit to
the journal: after the frame's bytes are written and before the append returns. Python runs the
KeyboardInterrupt handler at the next bytecode, which is exactly where a worker interrupted under
load used to lose track of a group it had already written, and wrote it again at close (the index
then counted fewer commits than the journal held, the extra ones as duplicates).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from disco_data_logger.sharding import ShardManifest, ShardWriter, merge
from disco_data_logger.sharding import manifest as manifest_module
from tests.common import sigint_at

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signals reach the main thread only")


def _replication(shard: ShardWriter, task_id: str, value: float) -> Any:
    rep = shard.begin(task_id, replication=int(task_id[1:]))
    sid = rep.logger.register_stream({"stream": "stock"}, value_scale=1.0)
    rep.logger.record(sid, 1.0, [0, 3], [value, value + 1])
    return rep


def _journal_task_ids(shard_dir: Path) -> list[str]:
    loaded = ShardManifest.load(shard_dir)
    assert loaded is not None
    return [r["task_id"] for r in loaded.replications]


@pytest.mark.parametrize("where", ["os.fsync(self._fd)", "self.bytes += len(data)"])
def test_sigint_while_a_group_commit_is_appended(tmp_path: Path, where: str) -> None:
    shard = ShardWriter(tmp_path, "s", commit_group=2)
    _replication(shard, "t0", 1.0).commit()
    _replication(shard, "t1", 2.0).commit()  # the second fills the group: it syncs here
    _replication(shard, "t2", 3.0).commit()
    with sigint_at(manifest_module.JournalWriter._append, where) as delivered:
        with pytest.raises(KeyboardInterrupt):
            shard.sync()  # t2's group: the interrupt arrives once its frame is written
    assert delivered, "the signal was not delivered"
    shard.close()
    assert _journal_task_ids(tmp_path / "shards" / "s") == ["t0", "t1", "t2"]
    index = merge(tmp_path)
    assert index.totals["committed"] == 3 and index.duplicates == 0
    assert sorted(index.streams["task_id"].to_pylist()) == ["t0", "t1", "t2"]


def test_sigint_inside_a_commit_that_syncs(tmp_path: Path) -> None:
    """commit_group=1: the commit writes its own group; Ctrl-C during that write is taken after
    it, so the replication is committed once and never also aborted."""
    shard = ShardWriter(tmp_path, "s")
    _replication(shard, "t0", 1.0).commit()
    rep = _replication(shard, "t1", 2.0)
    with sigint_at(manifest_module.JournalWriter._append, "os.fsync(self._fd)"):
        with pytest.raises(KeyboardInterrupt):
            rep.commit()
    assert rep.done
    shard.close()
    assert _journal_task_ids(tmp_path / "shards" / "s") == ["t0", "t1"]
    rows = {r["task_id"]: r["status"] for r in merge(tmp_path).replications.to_pylist()}
    assert rows == {"t0": "committed", "t1": "committed"}


def test_sigint_between_writes_of_a_frame_leaves_no_torn_frame(tmp_path: Path) -> None:
    """The signal lands right after a write() of the frame (were the frame written in several,
    a short write, the rest would follow before the interrupt is taken): no torn frame, no
    frame twice."""
    shard = ShardWriter(tmp_path, "s", commit_group=4)
    for i in range(3):
        _replication(shard, f"t{i}", float(i)).commit()
    with sigint_at(manifest_module.JournalWriter._append, "view = view[written:]"):
        with pytest.raises(KeyboardInterrupt):
            shard.sync()
    shard.close()
    loaded = ShardManifest.load(tmp_path / "shards" / "s")
    assert loaded is not None and loaded.closed and not loaded.problems
    assert [r["task_id"] for r in loaded.replications] == ["t0", "t1", "t2"]


def test_sigint_during_close_is_taken_after_a_clean_close(tmp_path: Path) -> None:
    """Close syncs the staged group, closes the logger and writes the close record: a Ctrl-C in
    its sync is raised once, after all of that, and the shard is closed, not failed."""
    shard = ShardWriter(tmp_path, "s", commit_group=4)
    _replication(shard, "t0", 1.0).commit()
    _replication(shard, "t1", 2.0).commit()
    with sigint_at(manifest_module.JournalWriter._append, "os.fsync(self._fd)") as delivered:
        with pytest.raises(KeyboardInterrupt):
            shard.close()
    assert len(delivered) == 1 and shard.closed
    loaded = ShardManifest.load(tmp_path / "shards" / "s")
    assert loaded is not None and loaded.closed and loaded.state == "closed"
    assert [r["task_id"] for r in loaded.replications] == ["t0", "t1"]
    assert (tmp_path / "shards" / "s" / "_DONE").is_file()


def test_sigint_deferred_delivers_once_to_the_handler_that_was_there() -> None:
    from disco_data_logger.sharding.interrupts import sigint_deferred

    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with sigint_deferred():
            with sigint_deferred():  # nested: only the outermost delivers
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
                assert seen == []
            assert seen == []
        assert seen == [signal.SIGINT]  # once, after the block
        with sigint_deferred():
            pass
        assert seen == [signal.SIGINT]  # nothing remembered from before
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with sigint_deferred():
            signal.raise_signal(signal.SIGINT)  # ignored before, ignored after
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_deferred_leaves_other_threads_alone() -> None:
    from disco_data_logger.sharding.interrupts import sigint_deferred

    handler = signal.getsignal(signal.SIGINT)
    seen: list[object] = []

    def body() -> None:
        with sigint_deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [handler]  # a thread cannot change handlers; nothing was tried
