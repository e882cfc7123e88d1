# Type stub of the private native extension (cpp/bindings.cpp). Kept in step by
# tests/test_core_stub.py (mypy.stubtest). Users import disco_data_logger, never _core.
from typing import Any, TypedDict

import numpy as np

__version__: str
FORMAT_VERSION: int

class StreamRegistration(TypedDict):
    stream_id: int
    epoch_scale: float
    value_scale: float | None
    periodicity: float | None
    kind: str | None
    version: int
    labels: list[tuple[str, str]] | None  # format 2: (name, value as JSON text)
    json: bytes | None  # format 1: the sidecar JSON text
    unresolved: int

class SkipReport(TypedDict):
    segment: str
    offset: int
    length: int
    kind: str  # a disco_data_logger.errors.SkipKind value
    reason: str

class SegmentSummary(TypedDict):
    path: str
    version: int
    has_footer: bool
    torn: bool
    bytes: int
    blocks: int
    bad_blocks: int
    records: int

class DecodeResult(TypedDict):
    stream_id: np.ndarray
    epoch: np.ndarray
    offsets: np.ndarray  # int32, or int64 when the non-zeros do not fit
    indices: np.ndarray
    values: np.ndarray
    registrations: dict[int, StreamRegistration]
    skipped: list[SkipReport]
    segments: list[SegmentSummary]
    unregistered: list[int]

class RegistrationsResult(TypedDict):
    registrations: dict[int, StreamRegistration]
    skipped: list[SkipReport]

class LoggerCore:
    def __init__(
        self,
        dir: str,
        ring_bytes: int,
        block_bytes: int,
        rotate_bytes: int,
        zstd_level: int,
        flush_interval: float,
    ) -> None: ...
    def register_stream(
        self,
        name: str,
        epoch_scale: float,
        value_scale: float | None,
        periodicity: float | None,
        kind: str | None,
        label_names: list[str],
        label_values: list[str],
    ) -> int: ...
    def retire_streams(self, ids: list[int]) -> None: ...
    def record(self, stream_id: int, epoch: float, indices: Any, values: Any) -> None: ...
    def record_many(
        self, stream_ids: Any, epochs: Any, offsets: Any, indices: Any, values: Any
    ) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def stats(self) -> dict[str, Any]: ...
    def stream_counters(self, ids: Any = None) -> list[tuple[int, int, float, float]]: ...

class PeriodicCore:
    def __init__(self, core: LoggerCore, stream_id: int, periodicity: float, kind: str) -> None: ...
    def record(self, core: LoggerCore, epoch: float, indices: Any, values: Any) -> None: ...
    def close(self, final_epoch: float) -> None: ...
    @property
    def closed(self) -> bool: ...

def decode_directory(
    dir: str,
    fallback: dict[int, tuple[float, float | None]] = ...,
    stream_ids: list[int] | None = ...,
    threads: int = ...,
    segments: list[str] | None = ...,
    registrations: bool = ...,
) -> DecodeResult: ...
def read_registrations(dir: str, segments: list[str] | None = ...) -> RegistrationsResult: ...
def list_segments(dir: str) -> list[str]: ...
