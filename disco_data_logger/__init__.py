"""disco-data-logger: fast, compressed, crash-safe recording of sparse simulation state.

Record with :class:`DataLogger` (and :class:`PeriodicStream`), read back with :func:`read` or
:class:`Collector`. See README.md and docs/ for the API, the on-disk format and the service.
"""

from . import errors
from ._version import __version__
from .errors import (
    ConfigError,
    CorruptDataWarning,
    DataLoggerError,
    FormatError,
    InvalidRecordError,
    InvalidStreamError,
    LoggerClosedError,
    UnknownStreamError,
    WriterError,
)
from .logger import DataLogger
from .periodic import PeriodicStream
from .reader import read

__all__ = [
    "ConfigError",
    "CorruptDataWarning",
    "DataLogger",
    "DataLoggerError",
    "FormatError",
    "InvalidRecordError",
    "InvalidStreamError",
    "LoggerClosedError",
    "PeriodicStream",
    "UnknownStreamError",
    "WriterError",
    "__version__",
    "errors",
    "read",
]

try:  # Collector is optional until its module lands; it has no native parts of its own
    from .collector import Collector  # noqa: F401

    __all__.append("Collector")
except ImportError:  # pragma: no cover
    pass
