"""Test configuration: hypothesis profiles and the opt-in long modes."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow",
        action="store_true",
        default=False,
        help="also run the long tests marked 'slow'",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# -- object storage: a real S3-compatible server on the loopback address (tests/s3_server.py) --


@pytest.fixture(scope="session")
def s3_server():  # type: ignore[no-untyped-def]
    """moto's S3 server, started once for the session and stopped at its end."""
    from tests.s3_server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A fresh bucket on the session's S3 server, with the environment every client (and every
    worker process started by the test) uses: test credentials, ``AWS_ENDPOINT_URL``, no
    instance metadata; readers' cache and workers' scratch in the test's own directory."""
    from tests.s3_server import S3Server

    bucket = f"disco-test-{next(_BUCKETS):04d}"
    s3_server.create_bucket(bucket)
    for key, value in S3Server.environment(s3_server.endpoint).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    return _S3Bucket(s3_server, bucket)


_BUCKETS = itertools.count()


class _S3Bucket:
    def __init__(self, server, bucket):  # type: ignore[no-untyped-def]
        self.server = server
        self.bucket = bucket

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}" + (f"/{prefix}" if prefix else "")

    def objects(self, prefix: str = "") -> dict[str, int]:
        """``{name under bucket/prefix: size}`` of the objects there."""
        root = f"{self.bucket}/{prefix}".rstrip("/")
        found = self.server.objects(root)
        return {k[len(root) + 1:]: v for k, v in found.items()}
