"""Committed golden directories must decode, with both readers, to the committed JSON.

Each format version has its golden directory under tests/fixtures/, written once by the writer of
that version (tests/fixtures/make_golden.py writes the current one) and never regenerated
(FORMAT.md, compatibility): if this test fails, the format changed by accident or a reader lost
the ability to read an older version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from disco_data_logger import pyreader, read
from tests.common import Decoded, both_readers, text_to_float

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = ["golden_v2", "golden_v1", "legacy_0_1"]
SELF_DESCRIBING = ["golden_v2", "golden_v1"]  # registrations in-band


def expected(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def check_against_json(got: Decoded, content: dict) -> None:
    records = content["records"]
    assert len(got) == len(records)
    for k, ((sid, epoch, idx, vals), (gsid, gepoch, gidx, gvals)) in enumerate(
            zip(records, got.records(), strict=True)):
        assert gsid == sid, f"record {k}"
        assert np.float64(gepoch).view(np.uint64) == np.float64(text_to_float(epoch)).view(
            np.uint64), f"record {k}: epoch {gepoch!r} != {epoch}"
        assert gidx.tolist() == idx, f"record {k}"
        want = np.array([text_to_float(v) for v in vals], dtype=np.float64)
        np.testing.assert_array_equal(gvals.view(np.uint64), want.view(np.uint64),
                                      err_msg=f"record {k}")


@both_readers
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_directory_decodes_to_the_committed_records(name, decode):
    content = expected(name)
    assert sorted(p.name for p in (FIXTURES / name).glob("*.seg.zst")) == content["segments"]
    got = decode(FIXTURES / name)
    assert got.skipped == []
    check_against_json(got, content)


@both_readers
@pytest.mark.parametrize("name", SELF_DESCRIBING)
def test_golden_is_self_describing(tmp_path, decode, name):
    """Without its sidecars a format-2 or format-1 directory still decodes: registrations are
    in-band."""
    shutil.copytree(FIXTURES / name, tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "streams")
    got = decode(tmp_path / "copy")
    assert got.skipped == []
    check_against_json(got, expected(name))


@pytest.mark.parametrize("name", SELF_DESCRIBING)
def test_golden_in_band_registrations_equal_the_sidecars(tmp_path, name):
    shutil.copytree(FIXTURES / name, tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "streams")
    regs = pyreader.read_directory(tmp_path / "copy").registrations
    content = expected(name)
    assert {f"{sid:08d}": meta for sid, meta in regs.items()} == content["sidecars"]
    if "registrations" in content:
        assert {f"{sid:08d}": meta for sid, meta in regs.items()} == content["registrations"]


def test_golden_v2_is_format_2_with_what_it_promises():
    """The directory covers what make_golden.py says: several segments of several blocks, blocks
    of many streams, registrations written again after rotation, and it is format 2."""
    segments = sorted((FIXTURES / "golden_v2").glob("*.seg.zst"))
    assert len(segments) >= 3
    blocks_with_many_streams = 0
    registered_again = 0
    for seg in segments:
        data = seg.read_bytes()
        assert data[8:12] == b"DDL2" and data[13] == pyreader.FORMAT_VERSION
        walk = pyreader.walk_frames(seg)
        assert walk.footer and walk.skipped == []
        assert walk.blocks >= 2 or seg == segments[-1]
        pos = 0
        while pos < len(data):
            size = int.from_bytes(data[pos + 4:pos + 8], "little")
            kind = data[pos + 12]
            if kind == 3:
                blocks_with_many_streams += data[pos + 8 + 40] >= 6
                size += int.from_bytes(data[pos + 8 + 20:pos + 8 + 24], "little")
            registered_again += kind == 2 and seg != segments[0]
            pos += 8 + size
    assert blocks_with_many_streams >= 2 and registered_again >= 2


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_labels_through_read(name):
    sidecars = expected(name)["sidecars"]
    table = read(FIXTURES / name, label_columns=True)
    assert "measure" in table.column_names
    for sid, measure in zip(table.column("stream_id").to_pylist(),
                            table.column("measure").to_pylist(), strict=True):
        assert measure == sidecars[f"{sid:08d}"]["measure"]


@both_readers
def test_golden_legacy_needs_its_sidecars(tmp_path, decode):
    shutil.copytree(FIXTURES / "legacy_0_1", tmp_path / "copy")
    (tmp_path / "copy" / "streams" / "00000002.json").unlink()
    got = decode(tmp_path / "copy")
    content = expected("legacy_0_1")
    content["records"] = [r for r in content["records"] if r[0] != 2]
    check_against_json(got, content)
    assert got.skipped
