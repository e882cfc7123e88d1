"""The exceptions of disco-data-logger.

Every error the package raises on purpose derives from :class:`DataLoggerError`, and also from
the built-in type a caller would naturally catch (``ValueError`` for bad input, ``KeyError`` for an
unknown stream, ``OSError`` for a failed writer), so both ``except DataLoggerError`` and the
usual built-in handlers work. Messages name the stream, file or field and say what to do.
"""

from __future__ import annotations

from enum import Enum


class DataLoggerError(Exception):
    """Base class of every error raised by disco-data-logger."""


class InvalidRecordError(DataLoggerError, ValueError):
    """A record was refused before anything was written (bad shape, dtype, NaN, overflow, ...)."""


class InvalidSettingError(DataLoggerError, ValueError):
    """A logger setting (``ring_bytes``, ``block_bytes``, ...) was refused; ``setting`` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem


class InvalidStreamError(DataLoggerError, ValueError):
    """A stream registration was refused (bad scale, periodicity, kind or labels)."""


class UnknownStreamError(DataLoggerError, KeyError):
    """A stream id that was never registered with this logger."""

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0]) if self.args else ""


class LoggerClosedError(DataLoggerError, RuntimeError):
    """The logger (or periodic stream) was used after ``close()``."""


class LoggerForkedError(DataLoggerError, RuntimeError):
    """A DataLogger was used in a process forked from the one that created it.

    Its writer thread exists only in the parent, which keeps writing; the child must create a
    DataLogger of its own (in its own directory).
    """


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


class MetricError(DataLoggerError, ValueError):
    """A metric definition that cannot be computed (unknown stream, reduction or metric name)."""


class MetricsCacheWarning(UserWarning):
    """A cached metrics file was unreadable or stale in a way that needed a warning; recomputed."""


class PrecisionWarning(UserWarning):
    """A sweep point reached ``stop.max_replications`` before its precision target."""


class MissingDependencyError(DataLoggerError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
class ExperimentLockedError(DataLoggerError, RuntimeError):
    """Another run holds the experiment's lock; the message names its host, pid and lock file."""


class UnsafePathError(DataLoggerError, ValueError):
    """A command refused to write to or delete a path: a symbolic link where a directory of the
    experiment should be, an experiment's or logger's directory, or a directory holding files the
    command did not write. Nothing was changed."""


class SlurmSubmitError(DataLoggerError, RuntimeError):
    """SLURM refused to take the ``slurm`` backend's job array (``sbatch`` failed); the message
    has sbatch's own reason."""


class ExperimentMismatchError(DataLoggerError, ValueError):
    """Outputs given to ``merge --into`` hold results of different configs (different config
    fingerprints); the message names the first difference. Nothing was changed."""


class SkipKind(str, Enum):
    """What a reader skipped (docs/FORMAT.md section 4): the ``kind`` of every skip report.

    Decide on the kind, never on the wording of the ``reason`` next to it.
    """

    TORN_TAIL = "torn_tail"
    """The file ends inside a frame: what ``kill -9`` of the writer leaves."""
    CORRUPT_FRAME = "corrupt_frame"
    """Bytes that are not a valid frame, skipped up to the next valid one."""
    BAD_BLOCK = "bad_block"
    """A block whose header is valid but whose data is not (checksum, size, directory)."""
    BAD_SECTION = "bad_section"
    """One stream's section of an otherwise intact block does not parse."""
    UNREGISTERED_STREAM = "unregistered_stream"
    """Records of a stream with neither an in-band registration nor a sidecar."""
    INVALID_REGISTRATION = "invalid_registration"
    """A registration (or a whole registrations frame) that cannot be used."""
    UNRESOLVED_LABEL = "unresolved_label"
    """A registration whose labels refer to strings of a lost frame; kept without them."""
    AFTER_FOOTER = "after_footer"
    """Data after a segment's footer."""
    UNREADABLE_FILE = "unreadable_file"
    """A segment file that could not be read at all."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """A segment in a format version this package does not read."""
    LEGACY_CHAIN_BROKEN = "legacy_chain_broken"
    """0.1.x: a segment after a damaged one (its epochs depend on what was lost)."""

    def __str__(self) -> str:
        return self.value


class StorageError(DataLoggerError, OSError):
    """Object storage refused or failed a request for good (a bad URI, missing credentials, a
    missing bucket, access denied, or a transient error that outlasted every retry); the message
    names the URI and says what to check."""
