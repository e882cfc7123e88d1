"""The exceptions of disco-data-logger.

Every error the package raises on purpose derives from :class:`DataLoggerError`, and also from
the built-in type a caller would naturally catch (``ValueError`` for bad input, ``KeyError`` for an
unknown stream, ``OSError`` for a failed writer), so both ``except DataLoggerError`` and the
usual built-in handlers work. Messages name the stream, file or field and say what to do.
"""

from __future__ import annotations


class DataLoggerError(Exception):
    """Base class of every error raised by disco-data-logger."""


class InvalidRecordError(DataLoggerError, ValueError):
    """A record was refused before anything was written (bad shape, dtype, NaN, overflow, ...)."""


class InvalidStreamError(DataLoggerError, ValueError):
    """A stream registration was refused (bad scale, periodicity, kind or labels)."""


class UnknownStreamError(DataLoggerError, KeyError):
    """A stream id that was never registered with this logger."""

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0]) if self.args else ""


class LoggerClosedError(DataLoggerError, RuntimeError):
    """The logger (or periodic stream) was used after ``close()``."""


class WriterError(DataLoggerError, OSError):
    """The background writer failed (disk full, permission denied, file too large, ...).

    Raised from the next ``record()``, ``flush()`` or ``close()`` after the failure; ``_DONE`` is
    not written, and everything flushed before the failure stays readable.
    """


class FormatError(DataLoggerError, ValueError):
    """A segment or sidecar is not in a format this version can read."""


class ConfigError(DataLoggerError, ValueError):
    """An experiment configuration is invalid; the message names the file and the field."""


class NotAnExperimentError(DataLoggerError, FileNotFoundError):
    """A command was given a directory that is not an experiment (nothing is written to it)."""


class CorruptDataWarning(UserWarning):
    """A reader skipped a torn or corrupt part of a segment; the intact data was returned."""
