"""Committed golden directories must decode, with both readers, to the committed JSON.

The files under tests/fixtures/ were written by tests/fixtures/make_golden.py; they are never
regenerated for a format change that keeps the version (FORMAT.md section 7): if this test fails,
the format changed by accident.
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
GOLDEN = ["golden_v1", "legacy_0_1"]


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
def test_golden_v1_is_self_describing(tmp_path, decode):
    """Without its sidecars a format-1 directory still decodes: registrations are in-band."""
    shutil.copytree(FIXTURES / "golden_v1", tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "streams")
    got = decode(tmp_path / "copy")
    assert got.skipped == []
    check_against_json(got, expected("golden_v1"))


def test_golden_v1_in_band_registrations_equal_the_sidecars(tmp_path):
    shutil.copytree(FIXTURES / "golden_v1", tmp_path / "copy")
    shutil.rmtree(tmp_path / "copy" / "streams")
    regs = pyreader.read_directory(tmp_path / "copy").registrations
    sidecars = expected("golden_v1")["sidecars"]
    assert {f"{sid:08d}": meta for sid, meta in regs.items()} == sidecars


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
