"""Logger settings have one source of truth (disco_data_logger/_defaults.py): its check is what
DataLogger applies and what the YAML config applies, so a config passes exactly when its workers'
loggers start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from disco_data_logger import DataLogger, _defaults
from disco_data_logger.errors import ConfigError, InvalidSettingError
from disco_data_logger.sharding.config import load_config
from tests.common import decode_native

CASES: list[tuple[dict[str, Any], str | None]] = [
    ({}, None),
    ({"ring_bytes": 1 << 20}, None),  # block_bytes follows: a quarter of the ring
    ({"ring_bytes": 1 << 20, "block_bytes": 256 << 10}, None),
    ({"ring_bytes": 1 << 20, "block_bytes": (256 << 10) + 1}, "block_bytes"),
    ({"block_bytes": 17 << 20}, "block_bytes"),
    ({"ring_bytes": 1 << 30, "block_bytes": (1 << 28) + 1}, "block_bytes"),
    ({"rotate_bytes": 4096}, None),  # smaller than a block: blocks are cut at 4096
    ({"rotate_bytes": 0}, "rotate_bytes"),
    ({"ring_bytes": 0}, "ring_bytes"),
    ({"zstd_level": -7}, None),
    ({"zstd_level": 22}, None),
    ({"zstd_level": -8}, "zstd_level"),
    ({"zstd_level": -50}, "zstd_level"),
    ({"zstd_level": 23}, "zstd_level"),
    ({"flush_interval": 0.001}, None),
    ({"flush_interval": 0}, "flush_interval"),
    ({"flush_interval": float("inf")}, "flush_interval"),
]


def config_text(logger: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "experiment": {"organisation": "o", "model": "m", "name": "e"},
        "output": "out",
        "replications": 1,
        "seed": 1,
        "entry_point": "disco_data_logger.models.inventory:run",
        "duration": 10,
        "logger": logger,
    })


@pytest.mark.parametrize(("settings", "refused"), CASES)
def test_logger_and_config_accept_the_same_settings(tmp_path: Path, settings, refused) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(config_text(settings))
    if refused is None:
        with DataLogger(tmp_path / "l", **settings) as dl:
            dl.register_stream({"m": "x"}, value_scale=None)
        cfg = load_config(path)
        # the config hands the logger exactly the settings the logger resolves by itself
        expected = {**_defaults.check_logger_settings(**{
            "ring_bytes": _defaults.RING_BYTES, "rotate_bytes": _defaults.ROTATE_BYTES,
            "zstd_level": _defaults.ZSTD_LEVEL, "flush_interval": _defaults.FLUSH_INTERVAL,
            "block_bytes": _defaults.default_block_bytes(
                settings.get("ring_bytes", _defaults.RING_BYTES)), **settings})}
        assert cfg.logger.logger_kwargs() == expected
        return
    with pytest.raises(InvalidSettingError) as info:
        DataLogger(tmp_path / "l", **settings)
    assert info.value.setting == refused and str(info.value).startswith(refused)
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "l").exists() or not any((tmp_path / "l").iterdir())
    with pytest.raises(ConfigError, match=f"logger.{refused}: must"):
        load_config(path)


def test_numpy_integers_are_settings_too(tmp_path: Path) -> None:
    with DataLogger(tmp_path / "l", ring_bytes=np.int64(1 << 20), zstd_level=np.int32(1)) as dl:
        dl.register_stream({"m": "x"}, value_scale=None)


def test_rotate_bytes_smaller_than_a_block_is_honoured(tmp_path: Path) -> None:
    """Issue 10 item 2: segments end near rotate_bytes whatever the block size."""
    rng = np.random.default_rng(3)
    rotate = 64 << 10
    with DataLogger(tmp_path / "l", rotate_bytes=rotate) as dl:  # blocks of 4 MiB by default
        sid = dl.register_stream({"m": "x"}, value_scale=None)
        for k in range(2000):  # 4 MB of incompressible values
            dl.record(sid, float(k), np.arange(256), rng.random(256))
    segments = sorted((tmp_path / "l").glob("*.seg.zst"))
    assert len(segments) > 30
    # FORMAT.md section 6: a block holds at most rotate_bytes raw, and a segment is cut before a
    # block that would take it past rotate_bytes (a block may be slightly larger compressed)
    sizes = [s.stat().st_size for s in segments]
    assert max(sizes) <= rotate + rotate // 8, sizes
    assert len(decode_native(tmp_path / "l")) == 2000
