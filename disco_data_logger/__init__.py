"""disco-data-logger: fast, compressed, crash-safe recording of sparse simulation state.

Record with :class:`DataLogger` (and :class:`PeriodicStream`), read back with :func:`read` or
:class:`Collector`. See README.md and docs/ for the API, the on-disk format and the service.
"""

from typing import TYPE_CHECKING, Any

from . import errors
from ._version import __version__
from .errors import (
    ConfigError,
    CorruptDataWarning,
    DataLoggerError,
    FormatError,
    InvalidRecordError,
    InvalidSettingError,
    InvalidStreamError,
    LoggerClosedError,
    LoggerForkedError,
    SkipKind,
    UnknownStreamError,
    WriterError,
)
from .logger import DataLogger
from .periodic import PeriodicStream
from .reader import read

__all__ = [
    "Collector",
    "ConfigError",
    "CorruptDataWarning",
    "DataLogger",
    "DataLoggerError",
    "Experiment",
    "FormatError",
    "InvalidRecordError",
    "InvalidSettingError",
    "InvalidStreamError",
    "LoggerClosedError",
    "LoggerForkedError",
    "PeriodicStream",
    "ShardWriter",
    "SkipKind",
    "UnknownStreamError",
    "WriterError",
    "__version__",
    "errors",
    "merge",
    "merge_into",
    "read",
]

from .collector import Collector  # noqa: E402

if TYPE_CHECKING:
    from .sharding import Experiment, ShardWriter, merge, merge_into

# The service is imported on first use, so recording code does not pay for it at import time.
_SERVICE_NAMES = {"Experiment", "ShardWriter", "merge", "merge_into"}


def __getattr__(name: str) -> Any:
    if name in _SERVICE_NAMES:
        from . import sharding

        return getattr(sharding, name)
    raise AttributeError(f"module 'disco_data_logger' has no attribute {name!r}")
