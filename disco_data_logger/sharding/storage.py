"""Where an experiment lives: a local directory, or a prefix in object storage.

``output`` (and the directory argument of every command) is either a local path or a URI:
``s3://bucket/prefix``, ``gs://bucket/prefix`` (``gcs://`` is the same), resolved through
:mod:`pyarrow.fs`; other schemes (``az://``, ``abfs://``, ...) through :mod:`fsspec` where it and
the scheme's implementation are installed. Local paths never come here: they keep the service's
own code path (fsync, rename, ``flock``).

:class:`ObjectStore` is the one object every part of the service uses to list, read (whole or a
byte range) and write objects under an experiment's prefix, with names relative to it
(``shards/<id>/journal/...``). Every request is retried with exponential backoff while its error
is transient (a dropped connection, a timeout, a 5xx, throttling) up to ``retries`` attempts; a
permanent error (access denied, no such bucket, bad credentials) or one that outlasts the retries
raises :class:`~disco_data_logger.errors.StorageError` with one line naming the URI.

Credentials and endpoints are configured the way the ecosystems do: the AWS default chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and the shared files, web
identity on Kubernetes, the instance profile), ``AWS_REGION``/``AWS_DEFAULT_REGION``, and the
endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``; Google's application default
credentials for ``gs://``. The config's optional ``storage:`` section
(:class:`StorageOptions`) sets the endpoint, region and local directories; it never holds a
secret, and nothing here prints or stores one.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from ..errors import StorageError

__all__ = [
    "ObjectStore",
    "StorageOptions",
    "StoreStats",
    "is_uri",
    "normalise_uri",
    "split_uri",
    "output_location",
    "default_cache_dir",
    "default_scratch_dir",
]

T = TypeVar("T")

_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
PYARROW_SCHEMES = {"s3": "s3", "gs": "gs", "gcs": "gs"}
"""Schemes pyarrow has a filesystem for, and the name each is written with."""

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

DEFAULT_RETRIES = 8
"""Attempts per request while its error is transient (backoff 0.1 s doubling, at most 5 s)."""
BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
CHUNK_BYTES = 8 << 20
"""Bytes read or written at a time when a piece is streamed (memory stays bounded)."""

# Words in pyarrow's (the AWS SDK's, Google's) error text that make an error permanent.
_PERMANENT = (
    "ACCESS_DENIED", "AccessDenied", "Access Denied", "NO_SUCH_BUCKET", "NoSuchBucket",
    "bucket does not exist", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch", "UNRECOGNIZED_CLIENT",
    "MISSING_AUTHENTICATION_TOKEN", "InvalidToken", "ExpiredToken", "EXPIRED_TOKEN",
    "HTTP response code: 401", "HTTP response code: 403", "PermissionDenied",
    "Permission denied", "UNAUTHENTICATED", "Could not resolve hostname",
    "INVALID_BUCKET_NAME", "InvalidBucketName", "Invalid bucket name",
)


def is_uri(value: Any) -> bool:
    """True for ``scheme://...`` (an object-store location); ``file://`` is a local path."""
    if isinstance(value, os.PathLike):
        return False
    if not isinstance(value, str):
        return False
    match = _URI_RE.match(value)
    return match is not None and match.group(1).lower() != "file"


def split_uri(uri: str) -> tuple[str, str, str]:
    """``(scheme, bucket, prefix)`` of a checked URI; :class:`StorageError` says what is wrong.

    The prefix has no leading or trailing ``/``, no empty, ``.`` or ``..`` component, and
    nothing a terminal interprets; query strings and fragments are refused (options go in the
    config's ``storage:`` section).
    """
    if not isinstance(uri, str) or not _URI_RE.match(uri):
        raise StorageError(f"{uri!r} is not a URI (expected scheme://bucket/prefix)")
    if _CONTROL_RE.search(uri):
        raise StorageError(f"{uri!r}: the URI contains a control character")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise StorageError(f"{uri}: query strings and fragments are not accepted in an output "
                           "URI; put endpoint and region in the config's storage: section")
    if "@" in parts.netloc:
        raise StorageError(f"{scheme}://...: credentials in a URI are refused (they would be "
                           "saved with the experiment); use the environment's credentials")
    bucket = parts.netloc
    if not bucket:
        raise StorageError(f"{uri}: no bucket (expected {scheme}://bucket/prefix)")
    if scheme in PYARROW_SCHEMES and not _BUCKET_RE.match(bucket):
        raise StorageError(f"{uri}: {bucket!r} is not a valid bucket name (3-222 lower-case "
                           "letters, digits, '.', '-' or '_')")
    path = parts.path.strip("/")
    components = [c for c in path.split("/")] if path else []
    for c in components:
        if c in ("", ".", ".."):
            raise StorageError(f"{uri}: the prefix has an empty, '.' or '..' component")
    return scheme, bucket, "/".join(components)


def normalise_uri(uri: str) -> str:
    """The canonical spelling of an output URI: ``gcs://`` as ``gs://``, no trailing ``/``."""
    scheme, bucket, prefix = split_uri(uri)
    scheme = PYARROW_SCHEMES.get(scheme, scheme)
    return f"{scheme}://{bucket}" + (f"/{prefix}" if prefix else "")


def output_location(value: str | os.PathLike[str]) -> str | Path:
    """A command's or config's output: the normalised URI, or a local :class:`Path`
    (``file://`` URIs and ``~`` resolved)."""
    if isinstance(value, str) and is_uri(value):
        return normalise_uri(value)
    text = os.fspath(value)
    if isinstance(text, str) and text.lower().startswith("file://"):
        text = urlsplit(text).path
    return Path(text).expanduser()


def default_cache_dir() -> Path:
    """Where readers keep the objects they fetched: ``$XDG_CACHE_HOME/disco-data-logger``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "disco-data-logger"


def default_scratch_dir() -> Path:
    """Where workers stage their shards before publishing: ``<system temp dir>/disco-scratch``."""
    return Path(tempfile.gettempdir()) / "disco-scratch"


@dataclass(frozen=True)
class StorageOptions:
    """What a config's ``storage:`` section may set (never a secret).

    ``endpoint``: ``http(s)://host[:port]`` of an S3-compatible (or GCS emulator) server;
    default ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. ``region``: default
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. ``anonymous``: unsigned requests (a public bucket).
    ``scratch``: the workers' local staging directory (default :func:`default_scratch_dir`).
    ``cache``: the readers' local cache (default :func:`default_cache_dir`). ``cache_bytes``:
    segment bytes the cache keeps per experiment before it drops the least recently used shards.
    ``retries``: attempts per request while errors are transient. ``request_timeout``: seconds.
    """

    endpoint: str | None = None
    region: str | None = None
    anonymous: bool = False
    scratch: str | None = None
    cache: str | None = None
    cache_bytes: int = 8 << 30
    retries: int = DEFAULT_RETRIES
    request_timeout: float = 60.0

    @classmethod
    def of(cls, value: Any) -> StorageOptions:
        """Options from a config's settings model, a mapping, None or options."""
        if value is None:
            return cls()
        if isinstance(value, StorageOptions):
            return value
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        if not isinstance(value, Mapping):
            raise TypeError(f"storage options must be a mapping (got {type(value).__name__})")
        known = {k: value[k] for k in cls.__dataclass_fields__ if value.get(k) is not None}
        for key in ("scratch", "cache"):
            if key in known:
                known[key] = os.fspath(known[key])
        return cls(**known)

    def scratch_dir(self) -> Path:
        return Path(self.scratch).expanduser() if self.scratch else default_scratch_dir()

    def cache_dir(self) -> Path:
        return Path(self.cache).expanduser() if self.cache else default_cache_dir()


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` is not ``http(s)://host[:port]``, or None."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must look like http(s)://host[:port]"
    if parts.username or parts.password or "@" in parts.netloc:
        return "must not hold credentials (set them in the environment)"
    if parts.path.strip("/") or parts.query or parts.fragment:
        return "must be a server address only (no path, query or fragment)"
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        return "has an invalid port"
    return None


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def aws_credentials_problem(options: StorageOptions) -> str | None:
    """Why requests to S3 would go out without credentials, found without any request.

    Any source the AWS default chain reads (keys, a profile or shared files, web identity, the
    container endpoint) counts; so does the instance profile unless
    ``AWS_EC2_METADATA_DISABLED`` rules it out (then nothing is left).
    """
    if options.anonymous:
        return None
    env = os.environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and not secret:
        return "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
    if secret and not key:
        return "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
    if key and secret:
        return None
    home = Path(os.path.expanduser("~"))
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials",
             env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"]
    if env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") \
            or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") \
            or env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") \
            or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") \
            or any(os.path.isfile(f) for f in files):
        return None
    if _env_true("AWS_EC2_METADATA_DISABLED"):
        return ("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                "AWS_PROFILE, or a web identity), or storage.anonymous: true for a public "
                "bucket")
    return None  # the instance profile may provide them; the first request tells


def _endpoint_from_env(scheme: str) -> str | None:
    if scheme == "s3":
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return None


def _make_filesystem(scheme: str, options: StorageOptions, display: str) -> Any:
    """The pyarrow filesystem of ``scheme`` configured from ``options`` and the environment."""
    import pyarrow.fs as pafs

    endpoint = options.endpoint or _endpoint_from_env(scheme)
    kwargs: dict[str, Any] = {}
    if endpoint:
        problem = endpoint_problem(endpoint)
        if problem is not None:
            source = "storage.endpoint" if options.endpoint else "AWS_ENDPOINT_URL"
            raise StorageError(f"{display}: {source} {endpoint!r} {problem}")
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme
    if scheme == "s3":
        problem = aws_credentials_problem(options)
        if problem is not None:
            raise StorageError(f"{display}: {problem}")
        region = options.region or os.environ.get("AWS_REGION") \
            or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(
            anonymous=options.anonymous,
            request_timeout=options.request_timeout,
            connect_timeout=min(10.0, options.request_timeout),
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
            # One PUT per small object (not a three-request multipart upload).
            allow_delayed_open=True,
            **kwargs)
    if scheme == "gs":
        if options.anonymous:
            kwargs["anonymous"] = True
        return pafs.GcsFileSystem(retry_time_limit=_timedelta(options.request_timeout),
                                  **kwargs)
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"{display}: pyarrow has no filesystem for {scheme}:// and fsspec "
                           f"is not installed (pip install fsspec and the {scheme} "
                           "implementation)") from None
    try:
        fs = fsspec.filesystem(scheme)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"{display}: no filesystem for {scheme}:// ({exc})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _timedelta(seconds: float) -> Any:
    import datetime

    return datetime.timedelta(seconds=seconds)


def _short(exc: BaseException) -> str:
    """The useful part of a storage error, on one line (request ids dropped)."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\s*\(Request ID: [^)]*\)", "", text)
    text = re.sub(r"Detail: \[errno \d+\] ", "", text)
    return text[:300] or type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the request that raised ``exc`` may succeed."""
    if isinstance(exc, (FileNotFoundError, StorageError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if not isinstance(exc, OSError):
        return False
    text = str(exc)
    return not any(word in text for word in _PERMANENT)


def _hint(text: str) -> str:
    if any(w in text for w in ("ACCESS_DENIED", "AccessDenied", "Access Denied", "401", "403",
                               "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                               "InvalidAccessKeyId", "UNAUTHENTICATED", "PermissionDenied")):
        return "; check the credentials in the environment and the bucket's permissions"
    if any(w in text for w in ("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist")):
        return "; create the bucket first (the service never creates buckets)"
    if "resolve" in text:
        return "; check the endpoint (storage.endpoint or AWS_ENDPOINT_URL)"
    return ""


@dataclass
class StoreStats:
    """Requests and bytes one :class:`ObjectStore` moved (for measurements and tests)."""

    requests: int = 0
    retries: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, requests: int = 0, retries: int = 0, up: int = 0, down: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.bytes_up += up
            self.bytes_down += down


class ObjectStore:
    """An experiment's prefix in object storage; every name is relative to it.

    Thread-safe (pyarrow filesystems are). Creating one sends no request; :meth:`check` does
    one listing to find bad credentials or a missing bucket before any work starts.
    """

    def __init__(self, uri: str, options: StorageOptions | Mapping[str, Any] | None = None, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = StorageOptions.of(options)
        self.uri = normalise_uri(uri)
        self.scheme, self.bucket, self.prefix = split_uri(self.uri)
        self.base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        self.fs = _make_filesystem(self.scheme, self.options, self.uri)
        self.stats = StoreStats()
        self._sleep = sleep

    # -- names ---------------------------------------------------------------------------------

    def key(self, rel: str = "") -> str:
        """The filesystem path of ``rel`` (``bucket/prefix/rel``)."""
        rel = rel.strip("/")
        return f"{self.base}/{rel}" if rel else self.base

    def display(self, rel: str = "") -> str:
        """The URI of ``rel``, for messages."""
        rel = rel.strip("/")
        return f"{self.uri}/{rel}" if rel else self.uri

    def child(self, rel: str) -> ObjectStore:
        """The store of a sub-prefix, sharing this one's filesystem and statistics."""
        other = object.__new__(ObjectStore)
        other.__dict__.update(self.__dict__)
        other.uri = self.display(rel)
        other.prefix = "/".join(p for p in (self.prefix, rel.strip("/")) if p)
        other.base = self.key(rel)
        return other

    @property
    def cache_key(self) -> str:
        """A short, stable name for this location (the local cache's folder name)."""
        endpoint = self.options.endpoint or _endpoint_from_env(self.scheme) or ""
        digest = hashlib.sha256(f"{endpoint}\n{self.uri}".encode()).hexdigest()[:16]
        tail = re.sub(r"[^A-Za-z0-9._-]", "-", self.uri.split("://", 1)[1])[-40:].strip("-.")
        return f"{tail or 'store'}-{digest}"

    # -- the retry loop ------------------------------------------------------------------------

    def _call(self, what: str, rel: str, fn: Callable[[], T]) -> T:
        attempts = max(1, int(self.options.retries))
        delay = BACKOFF_START
        for attempt in range(1, attempts + 1):
            try:
                self.stats.add(requests=1)
                return fn()
            except FileNotFoundError:
                raise
            except StorageError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if not isinstance(exc, OSError) or not is_transient(exc):
                    text = _short(exc)
                    raise StorageError(f"{self.display(rel)}: {what} failed: {text}"
                                       f"{_hint(text)}") from None
                if attempt == attempts:
                    raise StorageError(
                        f"{self.display(rel)}: {what} failed {attempts} times in a row; last "
                        f"error: {_short(exc)}{_hint(str(exc))}") from None
                self.stats.add(retries=1)
                self._sleep(delay * (0.5 + random.random()))
                delay = min(BACKOFF_MAX, delay * 2)
        raise AssertionError("unreachable")

    # -- reading -------------------------------------------------------------------------------

    def list(self, rel: str = "") -> dict[str, int]:
        """``{name relative to the root: size}`` of every object under ``rel`` (recursive); an
        empty dict when there is none."""
        return {name: size for name, (size, _mtime) in self.list_detailed(rel).items()}

    def list_detailed(self, rel: str = "") -> dict[str, tuple[int, int]]:
        """``{name relative to the root: (size, modification time in ns)}`` under ``rel``."""
        import pyarrow.fs as pafs

        base = self.key(rel)
        root_len = len(self.base) + 1

        def run() -> dict[str, tuple[int, int]]:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True,
                                                            allow_not_found=True))
            return {info.path[root_len:]: (int(info.size or 0), int(info.mtime_ns or 0))
                    for info in infos
                    if info.type == pafs.FileType.File and info.path.startswith(self.base + "/")}

        return self._call("listing", rel, run)

    def stat(self, rel: str) -> tuple[int, int] | None:
        """``(size, modification time in ns)`` of one object, or None when it does not exist."""
        import pyarrow.fs as pafs

        info = self._call("looking up", rel, lambda: self.fs.get_file_info(self.key(rel)))
        if info.type != pafs.FileType.File:
            return None
        return int(info.size or 0), int(info.mtime_ns or 0)

    def size(self, rel: str) -> int | None:
        """The size of one object, or None when it does not exist."""
        st = self.stat(rel)
        return None if st is None else st[0]

    def get(self, rel: str) -> bytes:
        """The whole object (FileNotFoundError when it does not exist)."""

        def run() -> bytes:
            with self.fs.open_input_stream(self.key(rel)) as fh:
                data: bytes = fh.read()
            return data

        data = self._call("reading", rel, run)
        self.stats.add(down=len(data))
        return data

    def get_or_none(self, rel: str) -> bytes | None:
        try:
            return self.get(rel)
        except FileNotFoundError:
            return None

    def get_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` of an object (a ranged read); short if the object is."""
        if end <= start:
            return b""

        def run() -> bytes:
            with self.fs.open_input_file(self.key(rel)) as fh:
                data: bytes = fh.read_at(end - start, start)
            return data

        data = self._call("reading a range of", rel, run)
        self.stats.add(down=len(data))
        return data

    def copy_range_to(self, rel: str, start: int, end: int, out: BinaryIO) -> int:
        """Append bytes ``start..end`` of an object to the open file ``out``, a chunk at a time;
        returns the bytes written. A failed chunk is retried from where it started."""
        pos = start
        while pos < end:
            stop = min(end, pos + CHUNK_BYTES)
            chunk = self.get_range(rel, pos, stop)
            if not chunk:
                break
            out.write(chunk)
            pos += len(chunk)
        return pos - start

    # -- writing -------------------------------------------------------------------------------

    def put(self, rel: str, data: bytes) -> None:
        """Write one whole object (atomic: readers see it whole or not at all)."""

        def run() -> None:
            with self.fs.open_output_stream(self.key(rel), metadata={}) as fh:
                fh.write(data)

        self._call("writing", rel, run)
        self.stats.add(up=len(data))

    def put_file_range(self, rel: str, path: Path, start: int, end: int) -> None:
        """Write bytes ``start..end`` of a local file as one object, streamed in chunks."""

        def run() -> None:
            with open(path, "rb") as src, \
                    self.fs.open_output_stream(self.key(rel), metadata={}) as fh:
                src.seek(start)
                left = end - start
                while left > 0:
                    chunk = src.read(min(CHUNK_BYTES, left))
                    if not chunk:
                        raise StorageError(f"{path}: ends before byte {end}; nothing published")
                    fh.write(chunk)
                    left -= len(chunk)

        self._call("writing", rel, run)
        self.stats.add(up=end - start)

    def delete(self, rel: str) -> None:
        """Delete one object; a missing one is not an error."""

        def run() -> None:
            try:
                self.fs.delete_file(self.key(rel))
            except FileNotFoundError:
                pass

        self._call("deleting", rel, run)

    def delete_prefix(self, rel: str) -> int:
        """Delete every object under ``rel`` (batched); returns how many there were."""
        names = self.list(rel)
        if names:
            def run() -> None:
                try:
                    self.fs.delete_dir(self.key(rel))
                except FileNotFoundError:
                    pass

            self._call("deleting", rel, run)
        return len(names)

    # -- checks --------------------------------------------------------------------------------

    def check(self) -> None:
        """One listing of the root: bad credentials, a missing bucket or an unreachable endpoint
        raise :class:`StorageError` here, before any work starts."""
        import pyarrow.fs as pafs

        def run() -> bool:
            if self.fs.get_file_info(self.bucket).type == pafs.FileType.NotFound:
                return False
            self.fs.get_file_info(pafs.FileSelector(self.base, recursive=False,
                                                    allow_not_found=True))
            return True

        if not self._call("listing", "", run):
            raise StorageError(f"{self.uri}: the bucket {self.bucket!r} does not exist; create "
                               "the bucket first (the service never creates buckets)")

    def __repr__(self) -> str:
        return f"<ObjectStore {self.uri}>"
