"""sharding/storage.py: URIs, credentials, and an ObjectStore against a real S3 server.

The server is moto's (tests/s3_server.py), on 127.0.0.1; the proxy in front of it counts
requests and fails some of them (dropped connections, 503 SlowDown) to exercise the retries.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from disco_data_logger.errors import StorageError
from disco_data_logger.sharding.mirror import Piece, cover
from disco_data_logger.sharding.storage import (
    BACKOFF_START,
    ObjectStore,
    StorageOptions,
    aws_credentials_problem,
    is_uri,
    normalise_uri,
    output_location,
    split_uri,
)
from tests.s3_server import S3Proxy

pytestmark = pytest.mark.s3


# -- URIs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("uri, parts", [
    ("s3://bucket/a/b", ("s3", "bucket", "a/b")),
    ("s3://bucket/a/b/", ("s3", "bucket", "a/b")),
    ("s3://bucket", ("s3", "bucket", "")),
    ("gs://my.bucket-1/x", ("gs", "my.bucket-1", "x")),
])
def test_split_uri(uri: str, parts: tuple[str, str, str]) -> None:
    assert split_uri(uri) == parts


@pytest.mark.parametrize("uri, words", [
    ("s3://", "no bucket"),
    ("s3:///prefix", "no bucket"),
    ("s3://Upper/x", "not a valid bucket name"),
    ("s3://b/x", "not a valid bucket name"),
    ("s3://bucket/a//b", "empty, '.' or '..'"),
    ("s3://bucket/a/../b", "empty, '.' or '..'"),
    ("s3://bucket/x?endpoint_override=evil", "query strings"),
    ("s3://key:secret@bucket/x", "credentials in a URI"),
    ("s3://bucket/a\x1b[31m", "control character"),
    ("bucket/x", "not a URI"),
])
def test_bad_uris_are_one_line_errors(uri: str, words: str) -> None:
    with pytest.raises(StorageError, match=words) as info:
        split_uri(uri)
    assert "\n" not in str(info.value)


def test_uri_spellings() -> None:
    assert is_uri("s3://b/x") and is_uri("gs://bkt/x") and not is_uri("runs/x")
    assert not is_uri("file:///tmp/x") and not is_uri(Path("s3:/x"))
    assert normalise_uri("gcs://bucket/p/") == "gs://bucket/p"
    assert output_location("file:///tmp/run") == Path("/tmp/run")
    assert output_location("s3://bucket/p/") == "s3://bucket/p"


def test_credentials_problem_is_found_without_a_request(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    problem = aws_credentials_problem(StorageOptions())
    assert problem is not None and "no AWS credentials" in problem
    with pytest.raises(StorageError, match="no AWS credentials") as info:
        ObjectStore("s3://bucket/x")  # refused before a request is made
    assert "s3://bucket/x" in str(info.value)
    assert aws_credentials_problem(StorageOptions(anonymous=True)) is None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    assert "AWS_SECRET_ACCESS_KEY is not" in str(aws_credentials_problem(StorageOptions()))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert aws_credentials_problem(StorageOptions()) is None
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_PROFILE", "work")
    assert aws_credentials_problem(StorageOptions()) is None


def test_bad_endpoint_is_refused(s3: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://somewhere")
    with pytest.raises(StorageError, match="AWS_ENDPOINT_URL 'ftp://somewhere' must look like"):
        ObjectStore("s3://bucket/x")


# -- objects -----------------------------------------------------------------------------------


def test_put_get_list_ranges_delete(s3: object, tmp_path: Path) -> None:
    store = ObjectStore(s3.uri("exp"))  # type: ignore[attr-defined]
    store.put("a/b/one", b"hello world")
    local = tmp_path / "f"
    local.write_bytes(bytes(range(256)) * 10)
    store.put_file_range("a/two", local, 100, 1100)
    assert store.list("") == {"a/b/one": 11, "a/two": 1000}
    assert store.list("a/b") == {"a/b/one": 11}
    assert store.get("a/b/one") == b"hello world"
    assert store.get_range("a/two", 5, 10) == local.read_bytes()[105:110]
    with open(tmp_path / "copy", "wb") as fh:
        assert store.copy_range_to("a/two", 0, 1000, fh) == 1000
    assert (tmp_path / "copy").read_bytes() == local.read_bytes()[100:1100]
    assert store.get_or_none("missing") is None
    with pytest.raises(FileNotFoundError):
        store.get("missing")
    store.delete("a/b/one")
    store.delete("a/b/one")  # a missing object is not an error
    assert store.list("") == {"a/two": 1000}
    assert store.delete_prefix("a") == 1
    assert store.list("") == {}


def test_missing_bucket_is_one_permanent_error(s3: object) -> None:
    sleeps: list[float] = []
    store = ObjectStore("s3://no-such-bucket-here/x", sleep=sleeps.append)
    with pytest.raises(StorageError, match="bucket .no-such-bucket-here. does not exist") as info:
        store.check()
    assert "\n" not in str(info.value) and "Request ID" not in str(info.value)
    assert sleeps == []  # permanent: not retried


@pytest.mark.parametrize("fault", ["drop", "503"])
def test_transient_errors_are_retried(s3: object, monkeypatch: pytest.MonkeyPatch,
                                      fault: str) -> None:
    server = s3.server  # type: ignore[attr-defined]
    every = 4

    def fail(n: int, method: str, path: str) -> str | None:
        return fault if n % every == 0 else None

    with S3Proxy(server.port, fault=fail) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        sleeps: list[float] = []
        store = ObjectStore(s3.uri("retry"), sleep=sleeps.append)  # type: ignore[attr-defined]
        payloads = {f"obj/{i}": os.urandom(1000 + i) for i in range(6)}
        for name, data in payloads.items():
            store.put(name, data)
        for name, data in payloads.items():
            assert store.get(name) == data
        assert store.list("obj") == {k: len(v) for k, v in payloads.items()}
        assert proxy.stats.faults >= 3
    # Every request got through in the end; the faults were absorbed by the retries (the
    # client's own first, then ours with backoff).
    assert store.stats.requests >= len(payloads) * 2 + 1


def test_retries_run_out_with_one_line(s3: object, monkeypatch: pytest.MonkeyPatch) -> None:
    with S3Proxy(s3.server.port, fault=lambda n, m, p: "503") as proxy:  # type: ignore[attr-defined]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        sleeps: list[float] = []
        store = ObjectStore(s3.uri("never"), {"retries": 3},  # type: ignore[attr-defined]
                            sleep=sleeps.append)
        with pytest.raises(StorageError, match="failed 3 times in a row") as info:
            store.put("x", b"data")
    assert "\n" not in str(info.value)
    # Exponential backoff with jitter: the k-th wait lies in [0.5, 1.5] x 0.1 s x 2**k. (Comparing
    # two jittered waits with each other failed in CI: 0.136 s, then 0.120 s.)
    assert len(sleeps) == 2, sleeps
    for k, waited in enumerate(sleeps):
        base = BACKOFF_START * 2**k
        assert 0.5 * base <= waited <= 1.5 * base, (k, waited)


# -- covers ------------------------------------------------------------------------------------


def test_cover_prefers_merged_pieces_and_finds_gaps() -> None:
    small = [Piece(i * 10, i * 10 + 10, f"p{i}") for i in range(4)]
    merged = Piece(0, 30, "m")
    chosen, end, furthest = cover([*small, merged])
    assert [p.rel for p in chosen] == ["m", "p3"] and end == 40 == furthest
    chosen, end, furthest = cover([small[0], small[2], small[3]])
    assert [p.rel for p in chosen] == ["p0"] and end == 10 and furthest == 40
    assert cover([]) == ([], 0, 0)
