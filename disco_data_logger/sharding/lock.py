"""The experiment lock: one run of an experiment at a time, and no ``--force`` under a live run.

``run`` takes ``<output>/run.lock`` before it touches anything else in the output and holds it
until it ends. The file holds who took it (host, pid, start time, run id) so that a refused
second run can say who holds the experiment; the lock itself is an exclusive ``flock`` on that
file, which the kernel drops when the holding process dies however it dies (``kill -9``, out of
memory, power loss of an NFS client after its lease), so a lock left behind by a dead process
is never mistaken for a live one: the next run takes it over and says whose it was.

Taking it is atomic (an exclusive ``flock``, and the file checked to still be the one at the
path after the lock was granted, because the holder unlinks it on release). A lock file that is
a symbolic link is refused, not followed.

Parts: an experiment run as independent parts (``--part I/N``) gives each part its own lock
file beside the others, ``run.part-I-of-N.lock`` (:func:`lock_name`). The whole-experiment lock
and the part locks exclude each other: a whole run refuses while any part runs, and a part
refuses while a whole run runs, so ``--force`` (which only a whole run may use) never deletes a
part's live shards. Parts of different splits (``1/4`` and ``1/3`` share tasks) exclude each
other too. A lock with a ``name`` of its own (the ``slurm`` backend's ``run.slurm.lock``)
excludes only another holder of that name. Merges take turns on ``index/merge.lock``
(:func:`merge_turn`).

On a filesystem without ``flock`` (a few FUSE and parallel filesystems refuse it) the lock falls
back to the content of the file: a lock naming a live process on this host, or any process on
another host, is respected; one naming a dead process on this host is taken over. That fallback
is not atomic, and a note says so.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExperimentLockedError, UnsafePathError
from .layout import INDEX_DIR, LOCK_NAME, MERGE_LOCK_NAME

__all__ = ["ExperimentLock", "LockHolder", "LOCK_NAME", "StoreLock", "live_holders", "lock_name",
           "merge_turn", "process_gone"]

"""The whole-experiment lock file, at the top of the output directory."""

_PART_RE = re.compile(r"^([0-9]+)/([0-9]+)$")
_LOCK_FILE_RE = re.compile(r"^run(\.part-[0-9]+-of-[0-9]+)?\.lock$")
_MAX_LOCK_BYTES = 64 << 10
_RETRIES = 20


def lock_name(part: str | None = None) -> str:
    """``run.lock`` for the whole experiment, ``run.part-I-of-N.lock`` for part ``"I/N"``."""
    if part is None:
        return LOCK_NAME
    match = _PART_RE.match(part)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"part must look like I/N with 1 <= I <= N (got {part!r})")
    return f"run.part-{int(match.group(1))}-of-{int(match.group(2))}.lock"


def _part_count(part: str | None) -> int | None:
    match = _PART_RE.match(part or "")
    return int(match.group(2)) if match is not None else None


def _part_count_of_name(name: str) -> int | None:
    match = re.match(r"^run\.part-[0-9]+-of-([0-9]+)\.lock$", name)
    return int(match.group(1)) if match is not None else None


@dataclass
class LockHolder:
    """Who holds (or held) a lock file, as far as its content says."""

    path: Path
    host: str = "?"
    pid: int = 0
    started: str = "?"
    run_id: str = ""
    part: str | None = None

    @classmethod
    def from_bytes(cls, path: Path, data: bytes) -> LockHolder | None:
        """The holder a lock file names; None when it is empty or not a lock record."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(doc, dict):
            return None
        pid = doc.get("pid")
        return cls(path=path, host=str(doc.get("host", "?")),
                   pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
                   started=str(doc.get("started", "?")), run_id=str(doc.get("run_id", "")),
                   part=doc.get("part") if isinstance(doc.get("part"), str) else None)

    def describe(self, verb: str = "holds") -> str:
        what = f"part {self.part} of it" if self.part else "it"
        return f"pid {self.pid} on host {self.host} {verb} {what} since {self.started}"

    def process_gone(self) -> bool:
        """True when the holder was a process of this host that no longer exists."""
        return process_gone(self.host, self.pid)


def process_gone(host: object, pid: object) -> bool:
    """True when ``pid`` on ``host`` was a process of this host that no longer exists (False
    for another host, where nothing can be known, and for a pid that is not a positive int)."""
    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) \
            or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False


def _read_small(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, _MAX_LOCK_BYTES)


def _open_nofollow(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{path} is a symbolic link; the experiment's lock file must be "
                                  "a regular file (remove the link)") from None
        raise


def _probe(path: Path) -> LockHolder | None:
    """The holder of the lock file ``path`` if a live process holds it, else None."""
    try:
        fd = _open_nofollow(path, os.O_RDONLY)
    except (FileNotFoundError, UnsafePathError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return LockHolder.from_bytes(path, _read_small(fd)) or LockHolder(path=path)
        except OSError:  # no flock here: trust the content
            holder = LockHolder.from_bytes(path, _read_small(fd))
            return holder if holder is not None and not holder.process_gone() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def live_holders(output: str | os.PathLike[str]) -> list[LockHolder]:
    """Every run (or part of a run) that holds a lock on ``output`` now."""
    root = Path(output)
    try:
        names = sorted(e.name for e in os.scandir(root) if _LOCK_FILE_RE.match(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []
    holders = []
    for name in names:
        holder = _probe(root / name)
        if holder is not None:
            holders.append(holder)
    return holders


class ExperimentLock:
    """An exclusive, advisory lock on one experiment (or one part of it) for one process.

    ::

        with ExperimentLock(output) as lock:
            for note in lock.notes:      # e.g. a stale lock that was taken over
                print(note)
            ...                          # run

    Raises :class:`~disco_data_logger.errors.ExperimentLockedError` naming the holder's host
    and pid when another live process holds it (or, for the whole experiment, any part of it).
    """

    def __init__(self, output: str | os.PathLike[str], part: str | None = None, *,
                 run_id: str | None = None, name: str | None = None) -> None:
        self.output = Path(output)
        self.part = part
        self.name = name
        """A lock file of its own (e.g. the ``slurm`` backend's launcher lock, which excludes
        only another launcher), neither the whole-experiment lock nor a part lock."""
        self.path = self.output / (name if name is not None else lock_name(part))
        self.run_id = run_id or uuid.uuid4().hex
        self.notes: list[str] = []
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def _record(self) -> bytes:
        doc: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "run_id": self.run_id,
            "part": self.part,
        }
        return (json.dumps(doc) + "\n").encode()

    def _refuse(self, holder: LockHolder | None, path: Path) -> ExperimentLockedError:
        who = holder.describe() if holder is not None else "another process holds it"
        return ExperimentLockedError(
            f"{self.output} is in use by another run: {who} (lock file {path}); wait for that "
            "run to finish or stop it, then run again")

    def acquire(self) -> ExperimentLock:
        """Take the lock or raise; returns ``self``. ``notes`` says what was taken over."""
        if self.held:
            return self
        for _ in range(_RETRIES):
            fd = _open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = LockHolder.from_bytes(self.path, _read_small(fd))
                os.close(fd)
                raise self._refuse(holder, self.path) from None
            except OSError as exc:
                # No flock on this filesystem: fall back to the content of the file.
                self._fd = fd
                try:
                    self._acquire_by_content(exc)
                except BaseException:
                    self._fd = -1
                    os.close(fd)
                    raise
                return self
            # Granted; but a releasing holder unlinks the file before it unlocks, so the lock
            # may be on a file that is no longer at the path: then try again on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            try:
                self._take_over(LockHolder.from_bytes(self.path, _read_small(fd)))
                self._check_other_locks()
            except BaseException:
                self.release()
                raise
            return self
        raise ExperimentLockedError(f"{self.path}: could not take the lock (it was replaced "
                                    f"{_RETRIES} times while trying); try again")

    def _take_over(self, previous: LockHolder | None) -> None:
        if previous is not None:
            self.notes.append(
                f"took over the lock of a run that is no longer running "
                f"({previous.describe('held')}; lock file {self.path})")
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, self._record())
        os.fsync(self._fd)

    def _acquire_by_content(self, why: OSError) -> None:
        previous = LockHolder.from_bytes(self.path, _read_small(self._fd))
        if previous is not None and previous.run_id != self.run_id and not previous.process_gone():
            raise self._refuse(previous, self.path)
        self.notes.append(f"{self.path}: this filesystem does not support file locks "
                          f"({why.strerror}); the lock relies on its content and is not atomic")
        self._take_over(previous)
        self._check_other_locks()

    def _check_other_locks(self) -> None:
        # The whole-experiment lock and part locks exclude each other; parts exclude their own
        # part, the whole, and every part of another split (part 1/4 and part 1/3 share tasks).
        if self.name is not None:
            return
        for holder in live_holders(self.output):
            if holder.path == self.path:
                continue
            if self.part is None or holder.path.name == LOCK_NAME:
                raise self._refuse(holder, holder.path)
            theirs = _LOCK_FILE_RE.match(holder.path.name)
            count = _part_count(self.part)
            if theirs is not None and count is not None and \
                    _part_count_of_name(holder.path.name) != count:
                raise ExperimentLockedError(
                    f"{self.output} is being run in parts of another split: "
                    f"{holder.describe()} (lock file {holder.path}); every part of one "
                    f"experiment must use the same N, here {count}: wait for those parts to "
                    "finish, or run with their N")

    def release(self) -> None:
        """Give the lock up (unlink the file first, so nobody locks a file that is going away)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.lstat(self.path)):
                    os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<ExperimentLock {self.path} {'held' if self.held else 'free'}>"


class StoreLock:
    """The experiment lock of an output in object storage (``s3://...``).

    Object stores have no ``flock`` and pyarrow no conditional write, so the lock is two
    things: the :class:`ExperimentLock` of the experiment's local mirror folder (two runs of
    this machine exclude each other atomically), and a lock object beside the experiment
    (``run.lock``, or ``run.part-I-of-N.lock``) holding the holder's host, pid, start time and
    run id, rewritten every :attr:`HEARTBEAT` seconds while the run lives. A run that finds a
    lock object refreshed less than :attr:`STALE` seconds ago by another run stops at once with
    one line naming it; an older one (or one of a process of this host that is gone) is a run
    that died, and is taken over with a note. Two
    runs started within the same second on two machines are not excluded (say so in the docs).
    """

    HEARTBEAT = 30.0
    STALE = 300.0

    def __init__(self, store: Any, mirror_dir: str | os.PathLike[str],
                 part: str | None = None) -> None:
        self.store = store
        self.part = part
        self.name = lock_name(part)
        self.local = ExperimentLock(mirror_dir, part)
        self.run_id = self.local.run_id
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = ""

    def _holder(self, name: str) -> tuple[LockHolder | None, float]:
        data = self.store.get_or_none(name)
        if data is None:
            return None, 0.0
        holder = LockHolder.from_bytes(Path(self.store.display(name)), data)
        try:
            refreshed = float(json.loads(data).get("refreshed", 0.0))
        except (ValueError, AttributeError, TypeError):
            refreshed = 0.0
        return holder, refreshed

    def _live(self, refreshed: float) -> bool:
        return time.time() - refreshed < self.STALE

    def _write(self) -> None:
        doc = {"host": socket.gethostname(), "pid": os.getpid(), "started": self._started,
               "run_id": self.run_id, "part": self.part, "refreshed": time.time()}
        self.store.put(self.name, (json.dumps(doc) + "\n").encode())

    def _refuse(self, holder: LockHolder | None, name: str) -> ExperimentLockedError:
        who = holder.describe() if holder is not None else "another run holds it"
        return ExperimentLockedError(
            f"{self.store.uri} is in use by another run: {who} (lock object "
            f"{self.store.display(name)}, refreshed within the last {self.STALE:g} s); wait "
            "for that run to finish or stop it, then run again")

    def acquire(self) -> StoreLock:
        self.local.acquire()
        try:
            self.notes.extend(self.local.notes)
            self._started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            others = [n for n in self.store.list("") if "/" not in n and _LOCK_FILE_RE.match(n)]
            for name in sorted(set(others) | {self.name}):
                holder, refreshed = self._holder(name)
                if holder is None or holder.run_id == self.run_id:
                    continue
                mine = name == self.name
                # A holder on this host whose process is gone died without releasing it (the
                # local lock it held is free too): no need to wait for it to go stale.
                if not self._live(refreshed) or holder.process_gone():
                    if mine:
                        self.notes.append(
                            f"took over the lock of a run that stopped refreshing it "
                            f"({holder.describe('held')}; lock object "
                            f"{self.store.display(name)})")
                    continue
                # The whole-experiment lock and the part locks exclude each other.
                if mine or self.part is None or name == LOCK_NAME:
                    raise self._refuse(holder, name)
            self._write()
            holder, _refreshed = self._holder(self.name)
            if holder is not None and holder.run_id != self.run_id:
                raise self._refuse(holder, self.name)  # another machine wrote it just now
            self._thread = threading.Thread(target=self._beat, name="disco-store-lock",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self.local.release()
            raise
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            holder, _refreshed = self._holder(self.name)
            if holder is not None and holder.run_id == self.run_id:
                self.store.delete(self.name)
        except OSError:
            pass  # left behind: it goes stale, and the next run takes it over
        finally:
            self.local.release()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
@contextlib.contextmanager
def merge_turn(output: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``<output>/index/merge.lock`` (an exclusive ``flock``) for one merge.

    Parts of one experiment run at the same time and each merges the index when it starts and
    when it ends; merges write the same files (the replications table, ``state.json``,
    ``experiment.json``) and remove the parts files no state lists, so they take turns. A merge
    is short (it reads only what is new), so a turn is waited for, not refused. The file exists
    only while a merge holds it (the holder unlinks it before unlocking; a waiter that was
    granted a lock on a file no longer at the path tries again), so it is never left in the
    index. It is never followed if it is a symbolic link; on a filesystem without ``flock``
    merges go unserialised, as before parts existed.
    """
    index = Path(output) / INDEX_DIR
    index.mkdir(exist_ok=True)
    path = index / MERGE_LOCK_NAME
    while True:
        fd = _open_nofollow(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            yield
            return
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            with contextlib.suppress(OSError):
                os.unlink(path)
        finally:
            os.close(fd)
