"""Property-based fuzzing of both readers with damaged copies of REAL segment files and sidecars.

The corpus is written by the real logger (closed, killed with SIGKILL, a shard-like directory
without sidecars and with many streams, several segments, quantised, exact and periodic streams), a
format-2 directory built byte by byte (tests/format_v2.py: registrations over several frames with
interned strings, compressed and raw bodies, blocks of many streams), plus the committed golden
(formats 2 and 1) and 0.1.x fixtures. Hypothesis draws a directory and up to four mutations (bit
flips, byte overwrites, truncation, splices of two segments, huge size fields with or without a
recomputed checksum, wrong format versions, zero runs, and edits of a block payload or a
registrations body *under* recomputed checksums, which reach the directory, section and registration
checks that random flips stop short of; garbage, truncated or mistyped JSON sidecars, lost
sidecars). Every case is read in a separate worker process (``fuzz_worker.py``) by
``disco_data_logger.read`` (native), by ``_core.decode_directory`` and by
``pyreader.read_directory``, with a timeout and a per-case peak-RSS measurement. A case passes when
no reader crashes, hangs, raises anything but a project error, or grows the worker's peak RSS beyond
``RSS_BUDGET``, and both readers return the same records and report the same skipped parts: the same
file, offset, kind, length and stream (docs/FORMAT.md section 4.1 says what each must be).

Short mode (the normal suite): ``DDL_FUZZ_CASES`` cases, default 300, derandomized. Long mode::

    DDL_FUZZ_CASES=100000 python -m pytest tests/reliability/test_fuzz_readers.py --runslow

(add ``DDL_FUZZ_SEED=<n>`` for another random sequence, ``DDL_FUZZ_CORPUS=closed,killed`` to
mutate only some corpus directories). A failing case is kept under
``DDL_FUZZ_KEEP`` (default: the test's tmp dir) and its path printed.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disco_data_logger import DataLogger
from tests import format_v2 as v2
from tests.common import frame_units
from tests.test_crash import kill_once

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CASE_TIMEOUT = 60.0  # seconds for one case, both readers; a hang is a failure, not a slow case
RSS_BUDGET_KB = 1_200_000  # peak RSS growth per case: sizes are bounded (raw <= 2^28, JSON <= 2^24)
SHORT_CASES = 300


@dataclass
class Corpus:
    name: str
    files: dict[str, bytes]  # relative path -> bytes, as the real writer left them

    @property
    def segments(self) -> list[str]:
        return sorted(n for n in self.files if n.endswith(".seg.zst"))

    @property
    def sidecars(self) -> list[str]:
        return sorted(n for n in self.files if n.startswith("streams/"))


def _load(name: str, path: Path) -> Corpus:
    files = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
             if p.is_file()}
    return Corpus(name, files)


def _write_corpus(root: Path) -> list[Corpus]:
    corpus = [_load(name, FIXTURES / name) for name in ("golden_v2", "golden_v1", "legacy_0_1")]
    rng = np.random.default_rng(11)
    closed = root / "closed"
    with DataLogger(closed, rotate_bytes=5000, block_bytes=900) as dl:
        q = dl.register_stream({"entity": "q", "unit": "kg"}, epoch_scale=1e-3, value_scale=1e-2)
        x = dl.register_stream({"entity": "x"}, value_scale=None)
        acc = dl.register_periodic_stream({"entity": "acc"}, value_scale=1.0, periodicity=1.0,
                                          kind="accumulator")
        for k in range(300):
            n = int(rng.integers(0, 9))
            idx = np.arange(n) if k % 3 else np.sort(rng.choice(500, n, replace=False))
            dl.record(q if k % 2 else x, k * 0.05, idx, rng.normal(size=n))
            acc.record(k * 0.05, [int(k % 4)], [1.0])
        acc.close(15.0)
    corpus.append(_load("closed", closed))
    killed = root / "killed"
    kill_once(killed, random.Random(3))
    corpus.append(_load("killed", killed))
    shard = root / "shard"
    with DataLogger(shard, rotate_bytes=6000, block_bytes=1500, sidecars=False) as dl:
        sids = [dl.register_stream({"model": "M", "replication": k % 3, "measure": f"m{k % 7}"},
                                   epoch_scale=1e-3, value_scale=None if k % 4 == 0 else 0.5)
                for k in range(40)]
        for k in range(400):
            n = int(rng.integers(0, 4))
            dl.record(sids[(k * 7) % 40], k * 0.1, np.arange(n) * 3, rng.normal(size=n))
    corpus.append(_load("shard", shard))
    corpus.append(_built_v2(root / "built_v2", rng))
    return corpus


def _built_v2(path: Path, rng: np.random.Generator) -> Corpus:
    """Two format-2 segments with what the writer makes rarely: registrations spread over
    frames that share strings, compressed and raw bodies, blocks of up to 30 streams; sidecars
    for a few streams only."""
    streams = {sid: v2.Stream(sid, 0.01, None if sid % 5 == 0 else 0.25,
                              {"model": "M", "k": sid % 4, "name": f"s{sid}"},
                              periodicity=1.0 if sid % 3 == 0 else None)
               for sid in range(0, 90, 3)}
    path.mkdir(parents=True)
    for number in (0, 1):
        strings = v2.Strings()
        data = bytearray(v2.segment_header(number))
        ids = sorted(streams)
        data += v2.registrations([streams[s] for s in ids[:10]], strings, compress=True)
        data += v2.registrations([streams[s] for s in ids[10:12]], strings, compress=False)
        blocks = []
        for b in range(4):
            records = []
            for k in range(40):
                sid = ids[int(rng.integers(0, 12 if b < 2 else len(ids)))]
                n = int(rng.integers(0, 5))
                records.append((sid, b + k * 0.01, sorted(rng.choice(50, n, replace=False)
                                                          .tolist()), rng.normal(size=n).tolist()))
            blocks.append(records)
            if b == 1:
                data += v2.registrations([streams[s] for s in ids[12:]], strings)
            data += v2.block(v2.block_payload(streams, records), seq=4 * number + b)
        data += v2.footer(4, 160)
        (path / f"{number:05d}.seg.zst").write_bytes(bytes(data))
    (path / "streams").mkdir()
    for sid in list(streams)[:3]:
        (path / "streams" / f"{sid:08d}.json").write_text(json.dumps(streams[sid].metadata()))
    return _load("built_v2", path)


class Worker:
    """One reader process; restarted by the test only after a failure."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.fuzz_worker"], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        hello = self._reply(120.0)
        assert hello and hello.get("ready"), "fuzz worker did not start"
        self.baseline_kb = int(hello["rss_kb"])

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def run(self, case: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{case}\n")
        self.proc.stdin.flush()
        reply = self._reply(CASE_TIMEOUT)
        if reply is None:
            alive = self.proc.poll() is None
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            self.close()
            what = f"hung (no answer in {CASE_TIMEOUT:.0f} s)" if alive else "crashed"
            raise AssertionError(
                f"reader {what} "
                f"on {case}: exit {self.proc.returncode}; stderr: {stderr[-2000:]}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


# ------------------------------------------------------------------------------- mutations

HUGE = st.sampled_from([0xFFFFFFFF, 0x7FFFFFFF, (1 << 28) + 1, 1 << 28, 1 << 24, (1 << 24) + 1,
                        0, 1, 8, 9, 35, 37])
OFFSET = st.integers(0, 1 << 31)


@st.composite
def segment_mutation(draw: Any) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["flip", "bytes", "truncate", "splice", "splice_tail",
                                 "size", "version", "zeros", "dup", "payload", "payload"]))
    if kind == "flip":
        return (kind, draw(OFFSET), draw(st.integers(0, 7)))
    if kind == "bytes":
        return (kind, draw(OFFSET), draw(st.binary(min_size=1, max_size=16)))
    if kind == "truncate":
        return (kind, draw(OFFSET))
    if kind in ("splice", "splice_tail"):  # bytes of another real segment
        return (kind, draw(OFFSET), draw(OFFSET), draw(OFFSET), draw(st.integers(0, 1 << 16)))
    if kind == "size":  # a size field of one frame: the frame's own, a block's raw/compressed
        field = draw(st.sampled_from(["frame", "raw", "compressed", "json"]))
        return (kind, draw(OFFSET), field, draw(HUGE | st.integers(0, 1 << 32 - 1)),
                draw(st.booleans()))
    if kind == "version":
        return (kind, draw(st.integers(0, 255)), draw(st.booleans()))
    if kind == "zeros":
        return (kind, draw(OFFSET), draw(st.integers(1, 600)))
    if kind == "payload":  # an edit inside a block payload or registrations body, crcs redone
        how = draw(st.sampled_from(["xor", "insert", "delete"]))
        return (kind, draw(OFFSET), draw(OFFSET), how, draw(st.integers(1, 255)))
    return (kind, draw(OFFSET), draw(st.integers(1, 400)))


JSON_VALUES = st.sampled_from([None, "x", "", -1, 0, 1e308, -0.0, [], {}, True, 2**70, "1e-3",
                               float("inf")])


@st.composite
def sidecar_mutation(draw: Any) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["garbage", "cut", "field", "delete", "drop_dir", "extra",
                                 "not_object"]))
    if kind == "garbage":
        return (kind, draw(OFFSET), draw(st.binary(max_size=64)))
    if kind == "cut":
        return (kind, draw(OFFSET), draw(OFFSET))
    if kind == "field":
        key = draw(st.sampled_from(["stream_id", "epoch_scale", "value_scale", "periodicity",
                                    "kind", "entity"]))
        return (kind, draw(OFFSET), key, draw(JSON_VALUES))
    if kind == "extra":
        return (kind, draw(st.binary(max_size=40)))
    return (kind, draw(OFFSET))


CASES = st.tuples(st.integers(0, 1 << 16),
                  st.lists(segment_mutation(), min_size=0, max_size=4),
                  st.lists(sidecar_mutation(), min_size=0, max_size=2)).filter(
                      lambda c: bool(c[1] or c[2]))


def _recrc(data: bytearray, frame_at: int, size: int) -> None:
    end = frame_at + 8 + size
    if size >= 9 and end <= len(data):
        struct.pack_into("<I", data, end - 4, zlib.crc32(bytes(data[frame_at + 8:end - 4])))


def mutate_segment(data: bytes, op: tuple[Any, ...], others: list[bytes]) -> bytes:
    buf = bytearray(data)
    n = len(buf)
    kind = op[0]
    if kind == "flip" and n:
        buf[op[1] % n] ^= 1 << op[2]
    elif kind == "bytes" and n:
        at = op[1] % n
        buf[at:at + len(op[2])] = op[2]
    elif kind == "truncate":
        del buf[op[1] % (n + 1):]
    elif kind in ("splice", "splice_tail"):
        other = others[op[4] % len(others)]
        a = op[2] % (len(other) + 1)
        b = a + op[3] % (len(other) - a + 1)
        at = op[1] % (n + 1)
        piece = other[a:b]
        buf = buf[:at] + piece + (buf[at:] if kind == "splice" else b"")
    elif kind == "size":
        _, pick, field, value, fix_crc = op
        try:
            units = frame_units(bytes(buf))
        except (AssertionError, struct.error, IndexError):
            return bytes(buf)  # an already damaged or 0.1.x segment: no frame table to aim at
        candidates = [u for u in units if field == "frame" or (field == "json" and u.kind == 2)
                      or (field in ("raw", "compressed") and u.kind == 3)]
        if candidates:
            u = candidates[pick % len(candidates)]
            size = struct.unpack_from("<I", buf, u.offset + 4)[0]
            ddl2 = buf[u.offset + 8:u.offset + 12] == b"DDL2"
            at = {"frame": u.offset + 4, "raw": u.offset + 8 + 16,
                  "compressed": u.offset + 8 + 20,
                  "json": u.offset + 8 + (16 if ddl2 else 28)}[field]
            if at + 4 > len(buf):  # the unit was cut by an earlier truncation
                return bytes(buf)
            struct.pack_into("<I", buf, at, value & 0xFFFFFFFF)
            if fix_crc and field != "frame":
                _recrc(buf, u.offset, size)
    elif kind == "version" and n >= 36:
        buf[8 + 5] = op[1]
        if op[2]:
            _recrc(buf, 0, 28)
    elif kind == "zeros" and n:
        at = op[1] % n
        buf[at:at + op[2]] = bytes(len(buf[at:at + op[2]]))
    elif kind == "dup" and n:
        at = op[1] % n
        buf[at:at] = buf[at:at + op[2]]
    elif kind == "payload":
        return edit_under_crcs(bytes(buf), op)
    return bytes(buf)


def _edit(raw: bytes, at: int, how: str, byte: int) -> bytes:
    if not raw:
        return bytes([byte]) if how == "insert" else raw
    at %= len(raw)
    if how == "xor":
        return raw[:at] + bytes([raw[at] ^ byte]) + raw[at + 1:]
    if how == "insert":
        return raw[:at] + bytes([byte]) + raw[at:]
    return raw[:at] + raw[at + 1:]


def edit_under_crcs(data: bytes, op: tuple[Any, ...]) -> bytes:
    """Edit one byte of a block's raw payload or of a registrations body (a DDL1 registration's
    JSON), then recompress and recompute every size and crc that covers it: the frames stay
    valid, the content is wrong."""
    _, pick, at, how, byte = op
    try:
        units = [u for u in frame_units(data) if u.kind in (2, 3)]
    except (AssertionError, struct.error, IndexError):
        return data
    if not units:
        return data
    u = units[pick % len(units)]
    payload = bytearray(data[u.offset + 8:u.offset + 8 + struct.unpack_from("<I", data,
                                                                            u.offset + 4)[0]])
    ddl2 = payload[:4] == b"DDL2"
    tail = b""
    if len(payload) < {3: 56 if ddl2 else 36, 2: 28 if ddl2 else 36}[u.kind]:
        return data  # a frame an earlier mutation cut short: nothing to edit under
    try:
        if u.kind == 3:
            hdr = 56 if ddl2 else 36
            comp = data[u.offset + 8 + hdr:u.end]
            raw = _edit(zstandard.ZstdDecompressor().decompress(comp), at, how, byte)
            comp = zstandard.ZstdCompressor(level=3).compress(raw)
            struct.pack_into("<IIII", payload, 16, len(raw), len(comp), zlib.crc32(comp),
                             zlib.crc32(raw))
            tail = comp
        elif ddl2:
            flags = payload[5]
            body = bytes(payload[24:-4])
            raw = zstandard.ZstdDecompressor().decompress(body) if flags & 1 else body
            raw = _edit(raw, at, how, byte)
            body = zstandard.ZstdCompressor(level=3).compress(raw) if flags & 1 else raw
            struct.pack_into("<II", payload, 16, len(raw), zlib.crc32(raw))
            payload = payload[:24] + body + payload[-4:]
        else:
            text = _edit(bytes(payload[32:-4]), at, how, byte)
            struct.pack_into("<I", payload, 28, len(text))
            payload = payload[:32] + text + payload[-4:]
    except (zstandard.ZstdError, struct.error):
        return data
    struct.pack_into("<I", payload, len(payload) - 4, zlib.crc32(bytes(payload[:-4])))
    frame = struct.pack("<II", 0x184D2A5D, len(payload)) + bytes(payload) + tail
    return data[:u.offset] + frame + data[u.end:]


def mutate_sidecars(files: dict[str, bytes], op: tuple[Any, ...]) -> None:
    names = sorted(n for n in files if n.startswith("streams/"))
    kind = op[0]
    if kind == "drop_dir":
        for name in names:
            del files[name]
        return
    if kind == "extra":
        files["streams/99999999.json"] = op[1]
        return
    if not names:
        return
    name = names[op[1] % len(names)]
    text = files[name]
    if kind == "garbage":
        files[name] = op[2]
    elif kind == "cut":
        files[name] = text[: op[2] % (len(text) + 1)]
    elif kind == "delete":
        del files[name]
    elif kind == "not_object":
        files[name] = b"[1, 2, 3]"
    elif kind == "field":
        try:
            meta = json.loads(text)
        except ValueError:
            return
        if isinstance(meta, dict):
            meta[op[2]] = op[3]
            files[name] = json.dumps(meta).encode()  # inf becomes Infinity: not strict JSON


def build_case(corpus: list[Corpus], case: tuple[Any, ...], out: Path) -> None:
    pick, seg_ops, side_ops = case
    base = corpus[pick % len(corpus)]
    files = dict(base.files)
    segments = base.segments
    others = [c.files[s] for c in corpus for s in c.segments]
    for op in seg_ops:
        target = segments[(op[1] if len(op) > 1 and isinstance(op[1], int) else 0)
                          % len(segments)] if op[0] != "version" else segments[0]
        files[target] = mutate_segment(files[target], op, others)
    for op in side_ops:
        mutate_sidecars(files, op)
    if out.exists():
        shutil.rmtree(out)
    for name, data in files.items():
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def check_outcome(reply: dict[str, Any], baseline_kb: int, case_dir: Path) -> None:
    native, python, core = reply["native"], reply["python"], reply["core"]
    for name, r in (("native read", native), ("pyreader", python), ("_core", core)):
        assert "error" not in r or r["clean"], (
            f"{name} raised {r['error']} on {case_dir}: {r['message']}\n{r['traceback']}")
    growth = reply["peak_kb"] - reply["rss_before_kb"]
    assert growth < RSS_BUDGET_KB, f"peak RSS grew by {growth} kB on {case_dir}"
    if "error" in native or "error" in python:
        # A clear error (a project exception) must be the readers' common verdict.
        assert ("error" in native) == ("error" in python), (native, python, str(case_dir))
        return
    assert native["other_warnings"] == [], native["other_warnings"]
    assert native["records"] == python["records"], (native, python, str(case_dir))
    assert native["digest"] == python["digest"], (native, python, str(case_dir))
    assert native["skipped_at"] == python["skipped_at"], (native, python, str(case_dir))
    assert native["warned_skips"] == bool(native["skipped_at"]), (native, str(case_dir))
    # The native reader only opens sidecars when it needs them (0.1.x streams); what it reports
    # unreadable, the Python reader (which always reads them) reports too.
    assert set(native["sidecar_problems"]) <= set(python["sidecar_problems"]), (native, python)


def _first_per_segment(skipped_at: list[list[Any]]) -> dict[str, int]:
    first: dict[str, int] = {}
    for name, offset in skipped_at:
        first[name] = min(offset, first.get(name, offset))
    return first


def fuzz_cases() -> int:
    return int(os.environ.get("DDL_FUZZ_CASES", str(SHORT_CASES)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Corpus]:
    """Every corpus directory, or those named in ``DDL_FUZZ_CORPUS`` (comma-separated:
    golden_v1, golden_v2, legacy_0_1, closed, killed, shard, built_v2)."""
    everything = _write_corpus(tmp_path_factory.mktemp("corpus"))
    names = [n.strip() for n in os.environ.get("DDL_FUZZ_CORPUS", "").split(",") if n.strip()]
    chosen = [c for c in everything if not names or c.name in names]
    assert chosen, f"DDL_FUZZ_CORPUS={names} names none of {[c.name for c in everything]}"
    return chosen


@pytest.fixture(scope="module")
def worker() -> Any:
    w = Worker()
    yield w
    w.close()


def test_fuzz_both_readers(corpus: list[Corpus], worker: Worker,
                           tmp_path_factory: pytest.TempPathFactory) -> None:
    cases = fuzz_cases()
    long = cases > SHORT_CASES
    keep = Path(os.environ.get("DDL_FUZZ_KEEP", str(tmp_path_factory.mktemp("fuzz-failures"))))
    work = tmp_path_factory.mktemp("fuzz")
    counter = {"cases": 0, "skips": 0, "errors": 0, "max_peak_growth_kb": 0, "max_vm_peak_kb": 0}
    seed = os.environ.get("DDL_FUZZ_SEED")

    @settings(max_examples=cases, deadline=None, database=None,
              derandomize=not long and seed is None,
              suppress_health_check=list(HealthCheck))
    @given(case=CASES)
    def one(case: tuple[Any, ...]) -> None:
        case_dir = work / "case"
        build_case(corpus, case, case_dir)
        reply = worker.run(case_dir)
        try:
            check_outcome(reply, worker.baseline_kb, case_dir)
        except AssertionError:
            failed = keep / f"case-{counter['cases']:07d}"
            shutil.copytree(case_dir, failed, dirs_exist_ok=True)
            (failed / "CASE.json").write_text(json.dumps(case, default=repr))
            raise
        counter["cases"] += 1
        counter["skips"] += bool(reply["native"].get("skipped_at"))
        counter["errors"] += "error" in reply["native"]
        counter["max_peak_growth_kb"] = max(counter["max_peak_growth_kb"],
                                            reply["peak_kb"] - reply["rss_before_kb"])
        counter["max_vm_peak_kb"] = max(counter["max_vm_peak_kb"], reply["vm_peak_kb"])

    if seed is not None:
        one = __import__("hypothesis").seed(int(seed))(one)
    one()
    report = Path(os.environ.get("DDL_FUZZ_REPORT", str(work / "report.json")))
    report.write_text(json.dumps(counter))
    print(f"fuzz: {counter}")
    assert counter["cases"] >= min(cases, 100)


@pytest.mark.slow
def test_fuzz_long_mode_is_documented() -> None:
    """The long mode is the same test with more cases; this marker keeps ``--runslow`` honest."""
    doc = (REPO / "docs" / "reliability.md").read_text()
    assert "DDL_FUZZ_CASES=100000" in doc


@pytest.mark.parametrize("stream_id", [-1, 1 << 32, 2**70, "1", 1.0, True, None])
def test_sidecar_with_an_impossible_stream_id_is_ignored_by_both(tmp_path: Path,
                                                                 stream_id: Any) -> None:
    """Found by the fuzzer: ``stream_id: -1`` in a sidecar made the native read fail with a
    pybind11 cast error (RuntimeError) instead of ignoring the sidecar with a warning."""
    from disco_data_logger import pyreader, read
    from disco_data_logger.errors import CorruptDataWarning

    path = tmp_path / "d"
    shutil.copytree(FIXTURES / "legacy_0_1", path)
    side = path / "streams" / "00000002.json"
    meta = json.loads(side.read_text())
    meta["stream_id"] = stream_id
    side.write_text(json.dumps(meta))
    with pytest.warns(CorruptDataWarning, match="00000002.json"):
        table = read(path)
    result = pyreader.read_directory(path)
    assert [Path(s["segment"]).name for s in result.skipped][:1] == ["00000002.json"]
    assert table.num_rows == len(result.stream_id)


def test_legacy_sidecar_with_a_negative_scale_is_not_used(tmp_path: Path) -> None:
    """Found by the fuzzer: the native reader decoded a 0.1.x stream with ``epoch_scale: -1``
    from its sidecar (negative epochs) where the Python reader skipped it."""
    from tests.common import assert_same_records, decode_native, decode_python

    path = tmp_path / "d"
    shutil.copytree(FIXTURES / "legacy_0_1", path)
    side = path / "streams" / "00000001.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "epoch_scale": -1}))
    native, python = decode_native(path), decode_python(path)
    assert_same_records(native, python)
    assert native.skipped_at() == python.skipped_at() != []
    assert set(native.stream_id.tolist()) == {2}


def test_legacy_frame_without_content_size_is_damaged_for_both(tmp_path: Path) -> None:
    """Found by the fuzzer: a 0.1.x frame whose header lost its content size was decoded by the
    Python reader and refused by the native one; 0.1.x always wrote it (FORMAT.md section 6)."""
    from tests.common import assert_same_records, decode_native, decode_python

    path = tmp_path / "d"
    shutil.copytree(FIXTURES / "legacy_0_1", path)
    seg = path / "00002.seg.zst"
    data = bytearray(seg.read_bytes())
    assert data[4] == 0x20  # single segment, 1-byte content size
    data[4] = 0x00  # no content size; the old size byte now reads as the window descriptor
    seg.write_bytes(bytes(data))
    native, python = decode_native(path), decode_python(path)
    assert_same_records(native, python)
    assert native.skipped_at() == python.skipped_at() == [("00002.seg.zst", 0),
                                                          ("00003.seg.zst", 0)]


def test_legacy_segments_after_an_unidentifiable_first_segment_are_not_invented(
        tmp_path: Path) -> None:
    """Found by the fuzzer: with the first segment of a 0.1.x directory damaged at byte 0, the
    Python reader decoded the later segments with tick deltas starting from 0: invented epochs.
    0.1.x deltas run across segments, so none of the later records can be trusted."""
    from tests.common import assert_same_records, decode_native, decode_python

    path = tmp_path / "d"
    shutil.copytree(FIXTURES / "legacy_0_1", path)
    seg = path / "00000.seg.zst"
    data = bytearray(seg.read_bytes())
    data[0] ^= 1
    seg.write_bytes(bytes(data))
    native, python = decode_native(path), decode_python(path)
    assert len(python) == 0
    assert_same_records(native, python)
    assert _first_per_segment(native.skipped_at()) == _first_per_segment(python.skipped_at()) \
        == {f"0000{k}.seg.zst": 0 for k in range(4)}


def test_legacy_segment_lost_in_the_middle_stops_the_tick_chain(tmp_path: Path) -> None:
    from tests.common import assert_same_records, decode_native, decode_python

    path = tmp_path / "d"
    shutil.copytree(FIXTURES / "legacy_0_1", path)
    seg = path / "00001.seg.zst"
    data = bytearray(seg.read_bytes())
    data[1] ^= 1  # the zstd magic: now neither a 0.1.x nor a format-1 segment
    seg.write_bytes(bytes(data))
    python = decode_python(path)
    assert {Path(s["segment"]).name for s in python.skipped} == {
        "00001.seg.zst", "00002.seg.zst", "00003.seg.zst"}
    assert_same_records(decode_native(path), python)


def test_a_block_after_the_footer_is_treated_alike(tmp_path: Path) -> None:
    from tests.common import assert_same_records, decode_native, decode_python

    path = tmp_path / "d"
    shutil.copytree(FIXTURES / "golden_v1", path)
    seg = path / "00001.seg.zst"
    data = seg.read_bytes()
    block = next(u for u in frame_units(data) if u.kind == 3)
    seg.write_bytes(data + data[block.offset:block.end])
    native, python = decode_native(path), decode_python(path)
    assert_same_records(native, python)
    assert native.skipped_at() == python.skipped_at() == [("00001.seg.zst", len(data))]


@pytest.mark.parametrize("where", ["middle", "start"])
def test_format_1_bytes_inside_a_legacy_directory_end_the_tick_chain(tmp_path: Path,
                                                                    where: str) -> None:
    """Found by the long fuzz run: 8 bytes of a format-1 frame head spliced into a 0.1.x segment
    (zstd itself would skip them as a skippable frame; 0.1.x never wrote one), or a 0.1.x segment
    whose first bytes became a format-1 head. Both are damage, and both readers stop the 0.1.x
    tick chain there instead of decoding later segments with unknown starting ticks."""
    from disco_data_logger import pyreader
    from tests.common import assert_same_records, decode_native, decode_python

    path = tmp_path / "d"
    shutil.copytree(FIXTURES / "legacy_0_1", path)
    head = (FIXTURES / "golden_v1" / "00000.seg.zst").read_bytes()[:8]
    seg = path / "00000.seg.zst"
    data = seg.read_bytes()
    at = pyreader.zstd_frame_size(data, 0, len(data)) if where == "middle" else 0
    seg.write_bytes(data[:at] + head + data[at:])
    native, python = decode_native(path), decode_python(path)
    assert_same_records(native, python)
    assert native.skipped_at() == python.skipped_at()
    later = {name for name, _ in native.skipped_at() if name != "00000.seg.zst"}
    assert later == {p.name for p in path.glob("*.seg.zst")} - {"00000.seg.zst"}
