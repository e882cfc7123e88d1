"""Experiment configuration: the YAML file that describes a Monte Carlo experiment, validated.

A config names the experiment, the output root, the replications and master seed, the model entry
point and its parameters, an optional parameter sweep, the execution backend, the logger settings
and the streams every replication records. :func:`load_config` turns a YAML file (plus
``key.sub=value`` overrides) into an :class:`ExperimentConfig`; every problem becomes one
:class:`~disco_data_logger.errors.ConfigError` naming the file and the dotted field path, because
a modeller fixing a config needs to know *where*, not a pydantic traceback.

Planning the tasks of a config (one per sweep point and replication) lives in :mod:`.planning`.

The model classes are deliberately strict (``extra="forbid"``): a misspelt key is an error, not a
silently ignored setting. See ``docs/configuration.md`` for every key and its default.
"""

from __future__ import annotations

import base64
import datetime
import difflib
import hashlib
import importlib
import itertools
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .. import _defaults
from ..errors import ConfigError, InvalidSettingError, InvalidStreamError
from ..layout import RESERVED_LABELS, SERVICE_LABELS
from ..periodic import check_periodicity
from .expression import Expression, ExpressionError, check_name
from .names import key_problem, name_problem, value_problem

__all__ = [
    "ExperimentName",
    "LoggerSettings",
    "ExecutionSettings",
    "StorageSettings",
    "SlurmSettings",
    "parse_slurm_time",
    "StreamSpec",
    "SweepSpec",
    "MetricSpec",
    "StopSpec",
    "REDUCTIONS",
    "METRIC_KEY_COLUMNS",
    "metric_problem",
    "ExperimentConfig",
    "load_config",
    "validate_config",
    "config_snapshot",
    "resolve_entry_point",
    "parse_size",
    "canonical",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_NODES",
    "MAX_CONFIG_DEPTH",
    "MAX_SWEEP_POINTS",
    "MAX_TASKS",
    "MAX_WORKERS",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_COMMIT_GROUP",
    "DEFAULT_COMMIT_DELAY",
    "MAX_COMMIT_GROUP",
    "MAX_COMMIT_DELAY",
]

MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB); a config is a page of settings, not a data set."""

MAX_CONFIG_NODES = 1_000_000
"""Most values (scalars, lists, mappings) in a loaded config, every alias counted as a full copy
of what it refers to: a YAML "billion laughs" expands to 10^9 and is refused before anything
walks it."""

MAX_CONFIG_DEPTH = 64
"""Deepest nesting of lists and mappings in a config."""

MAX_SWEEP_POINTS = 100_000
"""Most sweep points (grid product plus explicit points)."""

MAX_TASKS = 1_000_000
"""Most tasks (sweep points x replications) one experiment plans."""

MAX_WORKERS = 10_000
"""Largest ``execution.workers`` accepted; the coordinator caps it further at run time (at the
number of tasks and at what the machine allows)."""

DEFAULT_MAX_FAILURES = 10
"""Default ``execution.max_failures``: tasks failing every attempt before a run stops early."""

DEFAULT_COMMIT_GROUP = 256
"""Default ``execution.commit_group``: most replications one group commit makes durable."""

MAX_COMMIT_GROUP = 65_536
"""Largest ``execution.commit_group``: a worker keeps every staged commit's outcome in memory."""

DEFAULT_COMMIT_DELAY = 0.5
"""Default ``execution.commit_delay``: seconds a staged commit may wait for its group."""

MAX_COMMIT_DELAY = 60.0
"""Largest ``execution.commit_delay``: a killed worker loses (and reruns) at most this much work
per group, and a replication is reported committed at most this late."""


def _reserved_key_problem(key: str, what: str) -> str | None:
    """Why a label key or sweep parameter name is unusable, or None."""
    if key in SERVICE_LABELS:
        return f"reserved {what}: the service sets the label {key!r} on every stream itself"
    if key in RESERVED_LABELS:
        return (f"reserved {what}: {key!r} is a metadata key or a column of the project's "
                "tables, so a label of that name would be lost or mistaken for it")
    problem = key_problem(key)
    return f"unsafe {what} {key!r}: {problem}" if problem is not None else None

LabelValue = str | int | float | bool


def _field_error(subpath: str, message: str) -> PydanticCustomError:
    """An error located *below* the validated field (``subpath`` like ``"[2].name"``).

    Pydantic reports validator errors at the validated field; cross-item checks (a stream declared
    twice) know the exact item, and the formatter appends ``subpath`` to the location.
    """
    return PydanticCustomError(
        "config_field", "{message}", {"subpath": subpath, "message": message}
    )


_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    # single letters and IEC names are binary, as for buffer sizes in dd, ulimit and most tools
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    # SI names with a B are decimal
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}


def parse_size(value: Any) -> int:
    """Bytes from an int or a string such as ``"64MiB"``, ``"1GB"``, ``"512k"``.

    ``k``/``M``/``G``/``T`` and ``KiB``/``MiB``/``GiB``/``TiB`` are powers of 1024; ``kB``/``MB``/
    ``GB``/``TB`` are powers of 1000. Units are case-insensitive. The result must be whole bytes.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a size in bytes such as 1048576 or '64MiB' (got {value!r})")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number of bytes (got {value!r})")
        return int(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is not None:
            number, unit = match.groups()
            factor = _SIZE_UNITS.get(unit.lower())
            if factor is not None:
                size = float(number) * factor if "." in number else int(number) * factor
                if isinstance(size, float):
                    if not size.is_integer():
                        raise ValueError(f"must be a whole number of bytes (got {value!r})")
                    size = int(size)
                return size
    raise ValueError(
        f"must be a size in bytes such as 1048576, '64MiB', '1GB' or '512k' (got {value!r})"
    )


Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]


def _label_value(value: Any) -> LabelValue:
    # A plain validator, not a union, so a bad value gives one error, not one per union member.
    if isinstance(value, str | int | float | bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"label values must be finite (got {value!r})")
        if isinstance(value, int) and not isinstance(value, bool) and not (
                -(1 << 63) <= value < 1 << 63):
            raise ValueError("label values must fit in 64 bits, because they become index "
                             f"columns (got an integer of {len(str(abs(value)))} digits)")
        if isinstance(value, str):
            problem = value_problem(value)
            if problem is not None:
                raise ValueError(f"label value {value[:40]!r}: {problem}")
        return value
    raise ValueError(
        f"must be a string, number or boolean, because it becomes a label (got {value!r})"
    )


Label = Annotated[LabelValue, PlainValidator(_label_value)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _safe_name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"{value[:40]!r} {problem}")
    return value


SafeName = Annotated[str, Field(min_length=1), AfterValidator(_safe_name)]
"""A name that is safe as a path component, a partition value and terminal text."""


class ExperimentName(_Strict):
    """Who and what: becomes the ``organisation``, ``model`` and ``experiment`` labels."""

    organisation: SafeName
    model: SafeName
    name: SafeName


class LoggerSettings(_Strict):
    """Settings of each worker's :class:`~disco_data_logger.DataLogger`."""

    ring_bytes: Size = _defaults.RING_BYTES
    rotate_bytes: Size = _defaults.ROTATE_BYTES
    # None: the logger's own default for this ring (_defaults.default_block_bytes).
    block_bytes: Size | None = None
    zstd_level: int = Field(
        default=_defaults.ZSTD_LEVEL, ge=_defaults.ZSTD_LEVEL_MIN, le=_defaults.ZSTD_LEVEL_MAX
    )
    flush_interval: float = Field(default=_defaults.FLUSH_INTERVAL, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _what_the_logger_accepts(self) -> LoggerSettings:
        # The logger's own check, so a config passes exactly when its workers' loggers start.
        if self.block_bytes is None:
            self.block_bytes = _defaults.default_block_bytes(self.ring_bytes)
        try:
            _defaults.check_logger_settings(**self.logger_kwargs())
        except InvalidSettingError as exc:
            raise _field_error("." + exc.setting, exc.problem) from None
        return self

    def logger_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``DataLogger(path, **kwargs)``."""
        return {
            "ring_bytes": self.ring_bytes,
            "rotate_bytes": self.rotate_bytes,
            "block_bytes": self.block_bytes,
            "zstd_level": self.zstd_level,
            "flush_interval": self.flush_interval,
        }


_SLURM_TIME_RE = re.compile(
    r"^(?:(?P<days>[0-9]+)-)?(?P<a>[0-9]+)(?::(?P<b>[0-9]+))?(?::(?P<c>[0-9]+))?$")


def parse_slurm_time(value: Any) -> int:
    """Minutes from an int (minutes) or SLURM's time text: ``MM``, ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS`` (seconds round up to a whole minute)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be minutes (an integer) or a time such as '2:00:00' or "
                         f"'1-12:00:00' (got {value!r})")
    if isinstance(value, int):
        minutes = value
    else:
        match = _SLURM_TIME_RE.match(value.strip())
        if match is None:
            raise ValueError(f"must be minutes (an integer) or a time such as '2:00:00' or "
                             f"'1-12:00:00' (got {value!r})")
        days = int(match["days"] or 0)
        parts = [int(x) for x in (match["a"], match["b"], match["c"]) if x is not None]
        if match["days"] is not None:  # D-HH[:MM[:SS]]
            h, m, sec = (parts + [0, 0])[:3]
        elif len(parts) == 3:
            h, m, sec = parts
        else:  # MM[:SS]
            h, (m, sec) = 0, (parts + [0])[:2]
        seconds = ((days * 24 + h) * 60 + m) * 60 + sec
        minutes = -(-seconds // 60)
    if minutes < 1:
        raise ValueError(f"must be at least one minute (got {value!r})")
    return minutes


def _sbatch_value(value: str) -> str:
    # Values land in `#SBATCH --key=value` lines of a script: one word, nothing a shell or
    # sbatch's own parser would read as a quote, an expansion or the end of the line.
    if not value or len(value) > 256 or not value.isascii() or not value.isprintable() or \
            any(c in value for c in " \t'\"\\$`;#<>"):
        raise ValueError(f"must be one word of plain characters, as SLURM names are (got "
                         f"{value[:60]!r})")
    return value


def _shell_line(value: str) -> str:
    if "\n" in value or "\r" in value or not value.isprintable():
        raise ValueError(f"must be one line of shell without control characters (got "
                         f"{value[:60]!r})")
    return value


SbatchValue = Annotated[str, AfterValidator(_sbatch_value)]
SlurmTime = Annotated[int, BeforeValidator(parse_slurm_time)]
_SBATCH_OPTION_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_SBATCH_OWN = frozenset({"array", "job-name", "partition", "account", "qos", "time",
                         "cpus-per-task", "mem", "output", "error", "ntasks", "nodes",
                         "wrap", "chdir"})


class SlurmSettings(_Strict):
    """The job array of the ``slurm`` backend (``execution.slurm``), and what ``sbatch``
    writes: one array task per part, each running its part with local workers."""

    parts: int | None = Field(default=None, ge=1, le=100_000)
    """Array tasks, i.e. parts of the experiment (None: ``execution.workers``)."""
    partition: SbatchValue | None = None
    account: SbatchValue | None = None
    qos: SbatchValue | None = None
    constraint: SbatchValue | None = None
    time: SlurmTime = 60
    """Time limit of one array task, in minutes (SLURM's ``2:00:00`` forms accepted)."""
    cpus_per_task: int = Field(default=1, ge=1, le=4096)
    mem: Size | None = None
    """Memory of one array task (``--mem``), e.g. ``4GiB``; None: the cluster's default."""
    array_parallelism: int | None = Field(default=None, ge=1, le=100_000)
    """Most array tasks running at once (``--array=0-N-1%P``); None: no limit."""
    workers: int | None = Field(default=None, ge=1, le=MAX_WORKERS)
    """Worker processes in one array task (None: ``cpus_per_task``)."""
    job_name: SbatchValue | None = None
    """None: ``ddl-<experiment name>``."""
    setup: list[Annotated[str, AfterValidator(_shell_line)]] = Field(default_factory=list,
                                                                        max_length=100)
    """Shell lines run before the part (``module load python``, ``source venv/bin/activate``)."""
    python: Annotated[str, AfterValidator(_shell_line)] | None = None
    """The command that runs Python with disco-data-logger installed (None: this one)."""
    options: dict[str, SbatchValue | int | bool] = Field(default_factory=dict, max_length=100)
    """Further ``#SBATCH --key=value`` options, e.g. ``{gres: "gpu:1"}`` (``true``: a flag)."""
    resubmit: int = Field(default=2, ge=0, le=100)
    """How often the ``slurm`` backend resubmits an array task that ended without finishing
    its part (cancelled, timed out, failed, node lost); the part resumes where it stopped."""
    poll_seconds: float = Field(default=2.0, ge=0.1, le=600, allow_inf_nan=False)
    """How often the ``slurm`` backend asks the scheduler and reads progress."""

    @field_validator("options")
    @classmethod
    def _option_names(cls, options: dict[str, Any]) -> dict[str, Any]:
        for key in options:
            if not _SBATCH_OPTION_RE.match(key):
                raise _field_error(f".{key[:40]}", "must be an sbatch long option name such "
                                   "as gres or mail-type (lower case, no leading dashes)")
            if key in _SBATCH_OWN:
                raise _field_error(f".{key}", "is set by disco-data-logger itself (or by its "
                                   "own key in execution.slurm); remove it from options")
        return options

    @property
    def mem_text(self) -> str | None:
        """``--mem`` as SLURM reads it: whole MiB."""
        return None if self.mem is None else f"{-(-self.mem // (1 << 20))}M"

    @property
    def time_text(self) -> str:
        """``--time`` as ``D-HH:MM:00`` or ``HH:MM:00``."""
        days, rest = divmod(self.time, 24 * 60)
        text = f"{rest // 60:02d}:{rest % 60:02d}:00"
        return f"{days}-{text}" if days else text

    def part_count(self, execution: ExecutionSettings) -> int:
        return self.parts if self.parts is not None else execution.workers

    def part_workers(self) -> int:
        return self.workers if self.workers is not None else self.cpus_per_task


class ExecutionSettings(_Strict):
    """How replications are run; never changes their results (not part of the fingerprint)."""

    backend: Literal["serial", "multiprocessing", "ray", "slurm"] = "multiprocessing"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=MAX_WORKERS)
    retries: int = Field(default=2, ge=0, le=1000)
    max_failures: int | None = Field(default=DEFAULT_MAX_FAILURES, ge=1)
    """Tasks failing every attempt before the run stops early (None: never stop early)."""
    ray_address: str | None = None
    ray_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources every actor asks for (``{"disco_node": 1}`` places actors on the
    nodes started with that resource); while no live node offers them, replacement actors are
    placed without them (a note says so)."""
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds one replication may run before it is counted as failed (None: no limit)."""
    commit_group: int = Field(default=DEFAULT_COMMIT_GROUP, ge=1, le=MAX_COMMIT_GROUP)
    """Most replications a worker makes durable with one flush and fsync (1: one by one)."""
    commit_delay: float = Field(default=DEFAULT_COMMIT_DELAY, ge=0, le=MAX_COMMIT_DELAY,
                                allow_inf_nan=False)
    """Seconds a staged commit may wait for its group before the worker makes it durable."""
    slurm: SlurmSettings = Field(default_factory=lambda: SlurmSettings())
    """The job array of the ``slurm`` backend and of ``disco-data-logger sbatch``."""

    @field_validator("ray_resources")
    @classmethod
    def _resource_names(cls, resources: dict[str, float]) -> dict[str, float]:
        for name, amount in resources.items():
            if not _RESOURCE_RE.match(name) or name in ("CPU", "GPU", "memory",
                                                          "object_store_memory"):
                raise _field_error(f".{name}", "must be a custom resource name (letters, digits, "
                                   "'_', '-', ':' or '.'; not CPU, GPU or memory, which the "
                                   "backend sets itself)")
            if not (isinstance(amount, (int, float)) and math.isfinite(amount) and amount > 0):
                raise _field_error(f".{name}", f"must be a positive amount (got {amount!r})")
        return resources


_RESOURCE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$")
_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SECRET_WORDS = ("secret", "password", "token", "credential", "access_key", "key_id",
                 "session")


class StorageSettings(_Strict):
    """How an output in object storage (``s3://``, ``gs://``) is reached, and the local
    directories of its workers and readers. Never a secret: the config is saved with the
    experiment, so credentials come from the environment (``AWS_*``, a profile, a role)."""

    endpoint: str | None = None
    """``http(s)://host[:port]`` of an S3-compatible server (default: ``AWS_ENDPOINT_URL``)."""
    region: str | None = None
    anonymous: bool = False
    """Unsigned requests, for a public bucket."""
    scratch: Path | None = None
    """Where workers stage their shards (default: the system temp dir)."""
    cache: Path | None = None
    """Where readers keep fetched objects (default: ``~/.cache/disco-data-logger``)."""
    cache_bytes: Size = 8 << 30
    retries: int = Field(default=8, ge=1, le=100)
    """Attempts per request while its errors are transient (with exponential backoff)."""
    request_timeout: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str) and any(w in key.lower() for w in _SECRET_WORDS):
                    raise _field_error(
                        f".{key}", "secrets never go in a config (it is saved with the "
                        "experiment): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                        "AWS_PROFILE, or a role) in the environment of every node")
        return data

    @field_validator("endpoint")
    @classmethod
    def _endpoint_address(cls, endpoint: str | None) -> str | None:
        from .storage import endpoint_problem

        if endpoint is not None:
            problem = endpoint_problem(endpoint)
            if problem is not None:
                raise ValueError(problem)
        return endpoint

    @field_validator("region")
    @classmethod
    def _region_name(cls, region: str | None) -> str | None:
        if region is not None and not _REGION_RE.match(region):
            raise ValueError(f"must be a region name such as 'eu-west-1' (got {region!r})")
        return region


def _output_value(value: Any) -> Any:
    """An output URI stays a (normalised) string; anything else is a path."""
    from ..errors import StorageError
    from .storage import is_uri, normalise_uri

    if isinstance(value, str) and is_uri(value):
        try:
            return normalise_uri(value)
        except StorageError as exc:
            raise ValueError(str(exc)) from None
    if isinstance(value, str):
        return Path(value[len("file://"):] if value.lower().startswith("file://") else value)
    return value


class StreamSpec(_Strict):
    """A stream every replication registers; periodic iff ``periodicity`` is set."""

    name: SafeName
    labels: dict[str, Label] = Field(default_factory=dict)
    epoch_scale: float = Field(default=_defaults.EPOCH_SCALE, gt=0, allow_inf_nan=False)
    value_scale: float | None = Field(gt=0, allow_inf_nan=False)
    periodicity: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    kind: Literal["state", "accumulator"] | None = None

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, labels: dict[str, LabelValue]) -> dict[str, LabelValue]:
        for key in labels:
            problem = _reserved_key_problem(key, "label")
            if problem is not None:
                raise _field_error(f".{key}", problem)
        return labels

    @model_validator(mode="after")
    def _kind_needs_periodicity(self) -> StreamSpec:
        if self.periodicity is None:
            if self.kind is not None:
                raise _field_error(
                    ".kind",
                    f"kind {self.kind!r} needs a periodicity (the period of the emitted vectors);"
                    " remove kind for a plain event stream",
                )
        elif self.kind is None:
            self.kind = "state"
        return self

    @model_validator(mode="after")
    def _periodicity_in_whole_ticks(self) -> StreamSpec:
        # The logger's own check (it refuses the registration), so a bad period is refused
        # once at load time rather than in every replication.
        if self.periodicity is not None:
            try:
                check_periodicity(self.name, self.periodicity, self.epoch_scale)
            except InvalidStreamError as exc:
                raise _field_error(".periodicity", str(exc)) from None
        return self

    @property
    def periodic(self) -> bool:
        """True when the stream is registered with ``register_periodic_stream``."""
        return self.periodicity is not None


def _check_point_values(where: str, point: Mapping[str, Any]) -> None:
    for key, value in point.items():
        problem = _reserved_key_problem(key, "name")
        if problem is not None:
            raise _field_error(f"{where}.{key}", problem)
        try:
            _label_value(value)
        except ValueError as exc:
            raise _field_error(f"{where}.{key}", str(exc)) from None


class SweepSpec(_Strict):
    """Parameter points: the cartesian product of ``grid`` followed by the explicit ``points``."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    points: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise _field_error(f".{key}", "needs at least one value")
            problem = _reserved_key_problem(key, "name")
            if problem is not None:
                raise _field_error(f".{key}", problem)
            for i, value in enumerate(values):
                try:
                    _label_value(value)
                except ValueError as exc:
                    raise _field_error(f".{key}[{i}]", str(exc)) from None
        return grid

    @field_validator("points")
    @classmethod
    def _point_values(cls, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, point in enumerate(points):
            _check_point_values(f"[{i}]", point)
        return points

    def size(self) -> int:
        """The number of points, computed without expanding the grid."""
        grid = math.prod(len(v) for v in self.grid.values()) if self.grid else 0
        return grid + len(self.points)

    @model_validator(mode="after")
    def _distinct_points(self) -> SweepSpec:
        if not self.grid and not self.points:
            raise _field_error("", "declares no points: give a grid, points, or remove sweep")
        if self.size() > MAX_SWEEP_POINTS:
            sizes = " x ".join(str(len(self.grid[k])) for k in sorted(self.grid))
            parts = [f"a grid of {sizes}"] if self.grid else []
            if self.points:
                parts.append(f"{len(self.points)} explicit point(s)")
            raise _field_error(
                ".grid" if self.grid else ".points",
                f"too large to plan: {' plus '.join(parts)} = {self.size()} points; at most "
                f"{MAX_SWEEP_POINTS} sweep points are allowed",
            )
        seen: dict[str, int] = {}
        expanded = self.expand()
        n_grid = len(expanded) - len(self.points)
        for i, point in enumerate(expanded):
            key = _canonical_json(point)
            if key in seen:
                where = f".points[{i - n_grid}]" if i >= n_grid else ""
                raise _field_error(
                    where, f"point {point} appears twice (points {seen[key]} and {i} of the sweep)"
                )
            seen[key] = i
        return self

    def expand(self) -> list[dict[str, Any]]:
        """Every point in order: grid product over sorted keys (last key fastest), then points."""
        points: list[dict[str, Any]] = []
        if self.grid:
            keys = sorted(self.grid)
            for combo in itertools.product(*(self.grid[k] for k in keys)):
                points.append(dict(zip(keys, combo, strict=True)))
        points.extend(dict(p) for p in self.points)
        return points


REDUCTIONS = ("time_mean", "mean", "sum", "min", "max", "last", "count")
"""How a metric reduces the records of one replication (after ``entities``) to one number."""

Reduction = Literal["time_mean", "mean", "sum", "min", "max", "last", "count"]

METRIC_KEY_COLUMNS = frozenset({"task_id", "point_id", "point_index", "replication", "metric"})
"""Columns of the metric tables that a metric (or sweep parameter) name may not take."""

def _open_window() -> list[float | None]:
    return [None, None]


_ENTITIES_RE = re.compile(r"^(sum|mean|max|index:([0-9]+))$")


class MetricSpec(_Strict):
    """One number per replication: a reduction of a stream, or arithmetic on other metrics.

    A stream metric first combines the indices of every record (``entities``: ``sum``, ``mean``
    or ``max`` over the replication's entities, absent indices counting as zeros, or the value at
    ``index:<i>``), then reduces the records in ``window`` = [from, to) (``null``: open) with
    ``reduce``. An ``expr`` metric computes ``"1 - shortage / demand"`` from other metrics of the
    same replication. See ``docs/statistics.md`` for the exact definitions.
    """

    stream: str | None = Field(default=None, min_length=1)
    reduce: Reduction | None = None
    entities: str = "sum"
    window: list[float | None] = Field(default_factory=lambda: _open_window())
    expr: str | None = None

    @field_validator("entities")
    @classmethod
    def _entities_syntax(cls, value: str) -> str:
        match = _ENTITIES_RE.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"must be sum, mean, max or index:<i> such as index:0 (got {value!r})")
        if match.group(2) is not None and int(match.group(2)) >= 1 << 32:
            raise ValueError(f"index must be below 2**32 (got {value!r})")
        return value.strip()

    @field_validator("window", mode="before")
    @classmethod
    def _window_pair(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ValueError(
                f"must be a list [from, to] of two epochs, null for an open end (got {value!r})")
        for end in value:
            if end is not None and (isinstance(end, bool) or not isinstance(end, int | float)
                                    or not math.isfinite(end)):
                raise ValueError(f"ends must be finite numbers or null (got {value!r})")
        return list(value)

    @field_validator("expr")
    @classmethod
    def _expr_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Expression(value)
            except ExpressionError as exc:
                raise ValueError(f"{exc} (got {value!r})") from None
        return value

    @model_validator(mode="after")
    def _stream_or_expr(self) -> MetricSpec:
        lo, hi = self.window
        if lo is not None and hi is not None and not lo < hi:
            raise _field_error(".window", f"from must be below to (got [{lo}, {hi}])")
        if self.expr is not None:
            # compared with the defaults, not model_fields_set: a config snapshot (model_dump)
            # spells every default out and must validate again
            given = {"stream": self.stream is not None, "reduce": self.reduce is not None,
                     "entities": self.entities != "sum", "window": self.window != [None, None]}
            extra = [k for k, set_ in given.items() if set_]
            if extra:
                raise _field_error(
                    f".{extra[0]}",
                    "an expr metric takes only expr (it works on other metrics, not a stream)")
            return self
        if self.stream is None:
            raise _field_error(
                "", "needs a stream and a reduce (a stream metric) or an expr (a derived metric)")
        if self.reduce is None:
            raise _field_error(".reduce", f"required with stream; one of {', '.join(REDUCTIONS)}")
        return self

    @property
    def derived(self) -> bool:
        """True for an ``expr`` metric."""
        return self.expr is not None

    @property
    def bounds(self) -> tuple[float, float]:
        """The window as ``(from, to)`` with ``-inf``/``inf`` for open ends."""
        lo, hi = self.window
        return (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))

    @property
    def entity_rule(self) -> tuple[str, int | None]:
        """``("sum" | "mean" | "max", None)`` or ``("index", i)``."""
        if self.entities.startswith("index:"):
            return "index", int(self.entities[len("index:"):])
        return self.entities, None


class StopSpec(_Strict):
    """Run replications until the confidence interval of the listed metrics is narrow enough.

    Per sweep point: at least ``min_replications`` (by default 10, or ``max_replications`` when
    that is smaller), then ``batch`` more at a time until the
    half-width of every listed metric is at most ``half_width`` (relative to the absolute mean
    when ``relative``), for ``look_ahead`` checks in a row (Hoad, Robinson and Davies), or until
    ``max_replications`` (default: ``replications``). See ``docs/statistics.md``.
    """

    metric: str | list[str]
    half_width: float = Field(gt=0, allow_inf_nan=False)
    relative: bool = False
    confidence: float = Field(default=0.95, gt=0, lt=1)
    min_replications: int = Field(default=10, ge=2)
    max_replications: int | None = Field(default=None, ge=2)
    batch: int = Field(default=10, ge=1)
    look_ahead: int = Field(default=5, ge=0)

    @field_validator("metric")
    @classmethod
    def _some_metric(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("names no metric: give one name or a list of names")
        for i, name in enumerate(names):
            if not name:
                raise _field_error("" if isinstance(value, str) else f"[{i}]",
                                   "must be a metric name")
        return value

    @property
    def metrics(self) -> list[str]:
        """The metric names, as a list."""
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)


_ENTRY_POINT_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ExperimentConfig(_Strict):
    """A whole experiment; see ``docs/configuration.md``."""

    experiment: ExperimentName
    output: Annotated[Path | str, BeforeValidator(_output_value)]
    """A local directory, or an object-store URI (``s3://bucket/prefix``, ``gs://...``)."""
    replications: int = Field(ge=1)
    seed: int = Field(ge=0)
    entry_point: str
    duration: float = Field(gt=0, allow_inf_nan=False)
    parameters: dict[str, Any] = Field(default_factory=dict)
    sweep: SweepSpec | None = None
    execution: ExecutionSettings = Field(default_factory=lambda: ExecutionSettings())
    logger: LoggerSettings = Field(default_factory=lambda: LoggerSettings())
    streams: list[StreamSpec] = Field(default_factory=list)
    seeding: Literal["independent", "common"] = "independent"
    """``common``: replication r of every sweep point gets the same random streams (CRN)."""
    metrics: dict[str, MetricSpec] = Field(default_factory=dict)
    stop: StopSpec | None = None
    storage: StorageSettings = Field(default_factory=lambda: StorageSettings())

    @field_validator("entry_point")
    @classmethod
    def _entry_point_syntax(cls, spec: str) -> str:
        if not _ENTRY_POINT_RE.match(spec):
            raise ValueError(f"must look like 'package.module:function' (got {spec!r})")
        return spec

    @field_validator("output")
    @classmethod
    def _printable_output(cls, output: Path | str) -> Path | str:
        # The output path is printed and pasted into shell lines: nothing a terminal interprets.
        problem = value_problem(str(output))
        if problem is not None:
            raise ValueError(problem)
        return output

    @field_validator("streams")
    @classmethod
    def _unique_stream_names(cls, streams: list[StreamSpec]) -> list[StreamSpec]:
        first: dict[str, int] = {}
        for i, spec in enumerate(streams):
            if spec.name in first:
                raise _field_error(
                    f"[{i}].name",
                    f"stream {spec.name!r} declared twice (streams[{first[spec.name]}] and"
                    f" streams[{i}])",
                )
            first[spec.name] = i
        return streams

    @model_validator(mode="after")
    def _labels_do_not_clash_with_sweep(self) -> ExperimentConfig:
        if self.sweep is None:
            return self
        swept = set(self.sweep.grid).union(*(p.keys() for p in self.sweep.points))
        for i, spec in enumerate(self.streams):
            for key in spec.labels:
                if key in swept:
                    raise _field_error(
                        f".streams[{i}].labels.{key}",
                        f"clashes with the sweep parameter {key!r}, which is a label already",
                    )
        return self

    @model_validator(mode="after")
    def _metrics_refer_to_known_names(self) -> ExperimentConfig:
        declared = [spec.name for spec in self.streams]
        swept = set(self.sweep.grid).union(*(p.keys() for p in self.sweep.points)) \
            if self.sweep is not None else set()
        problem = metric_problem(self.metrics, declared, swept)
        if problem is not None:
            where, message = problem
            raise _field_error(f".metrics{where}", message)
        if self.stop is not None:
            for i, used in enumerate(self.stop.metrics):
                if used not in self.metrics:
                    where = ".stop.metric" + ("" if isinstance(self.stop.metric, str) else f"[{i}]")
                    known = ", ".join(self.metrics) or "none; declare them under metrics:"
                    raise _field_error(
                        where, f"unknown metric {used!r}{_suggest(used, list(self.metrics))}"
                        f" (metrics: {known})")
            most = self.stop_max_replications
            # the default minimum adapts to a small maximum; an explicit one must fit under it
            if "min_replications" in self.stop.model_fields_set and \
                    self.stop.min_replications > most:
                raise _field_error(
                    ".stop.min_replications",
                    f"must not exceed max_replications ({most}) (got {self.stop.min_replications})")
        return self

    @property
    def stop_max_replications(self) -> int:
        """``stop.max_replications``, or ``replications`` when the stop rule leaves it out."""
        if self.stop is not None and self.stop.max_replications is not None:
            return self.stop.max_replications
        return self.replications

    @model_validator(mode="after")
    def _small_enough_to_plan(self) -> ExperimentConfig:
        points = self.sweep.size() if self.sweep is not None else 1
        # A stop: run may use every replication number up to its maximum.
        most = self.stop_max_replications if self.stop is not None else self.replications
        if points * most > MAX_TASKS:
            where = ".stop.max_replications" if self.stop is not None and \
                self.stop.max_replications is not None else ".replications"
            raise _field_error(
                where,
                f"too large to plan: {most} replications x {points} sweep point(s)"
                f" = {points * most} tasks; at most {MAX_TASKS} tasks per"
                " experiment (split it into several experiments)",
            )
        return self

    @model_validator(mode="after")
    def _fingerprintable(self) -> ExperimentConfig:
        # Refused here, at load time, rather than when a run computes the fingerprint.
        try:
            canonical(self.parameters, "parameters")
        except CanonicalError as exc:
            raise _field_error(f".{exc.path}", exc.reason) from None
        return self

    def points(self) -> list[dict[str, Any]]:
        """The sweep points in order (``[{}]`` without a sweep)."""
        return self.sweep.expand() if self.sweep is not None else [{}]

    def fingerprint(self) -> str:
        """SHA-256 of everything that decides the data a given task records.

        Left out: ``execution`` (who runs a task never changes it), ``logger`` (block, ring and
        compression settings change bytes, not decoded data), ``output`` (where it goes) and
        ``replications`` (a task's seed does not depend on the count, so an experiment can be
        extended with more replications on the same output), ``metrics`` and ``stop`` (they read
        results, or decide how many there are, without changing any). ``seeding`` counts only
        when it is ``common``, so configs from before it existed keep their fingerprints. The
        values are put in canonical form first (:func:`canonical`), so the fingerprint is the same
        in every process, run and Python version for every value a YAML file can hold.
        ``storage`` (how the output is reached) is left out too.
        """
        data = self.model_dump(
            mode="python",
            exclude={"execution", "logger", "output", "replications", "metrics", "stop",
                     "seeding", "storage"},
        )
        if self.seeding != "independent":
            data["seeding"] = self.seeding
        return hashlib.sha256(_canonical_json(canonical(data)).encode()).hexdigest()


class CanonicalError(ValueError):
    """A value that has no canonical form; ``path`` names where it is."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


_CANONICAL_MAX_DEPTH = 200
_MAX_INT_BITS = 10_000  # ~3,000 decimal digits: below Python's int-to-text conversion limit


def canonical(value: Any, path: str = "value") -> Any:
    """``value`` as plain JSON data that is the same in every process, run and Python version.

    Strings, finite floats, ints, booleans and None stay as they are; lists and tuples become
    lists (tuples tagged); mappings with string keys stay mappings (a key that starts with ``!``
    gets a second ``!``, so no key can pass for a tag). Every other value a YAML file can hold
    becomes a one-key mapping whose key is a tag: ``{"!float": "inf"}``, ``{"!bytes": <base64>}``,
    ``{"!date": "2024-05-01"}``, ``{"!datetime": <ISO 8601 with offset>}``, ``{"!set": [sorted
    canonical items]}``, ``{"!tuple": [...]}``, ``{"!map": [[key, value], ...]}`` (mappings with
    keys that are not all strings, sorted by the canonical key). Anything else (an object, a
    cycle, text that is not valid Unicode, an integer of thousands of digits) raises
    :class:`CanonicalError` naming ``path``.
    """
    return _canonical(value, path, set(), 0)


def _canonical(value: Any, path: str, active: set[int], depth: int) -> Any:
    if depth > _CANONICAL_MAX_DEPTH:
        raise CanonicalError(path, f"nested deeper than {_CANONICAL_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if re.search("[\ud800-\udfff]", value):
            raise CanonicalError(path, "text that is not valid Unicode (a lone surrogate)")
        return str(value)
    if isinstance(value, int):
        if abs(value).bit_length() > _MAX_INT_BITS:
            raise CanonicalError(path, f"an integer of more than {_MAX_INT_BITS} bits")
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return {"!float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, bytes | bytearray):
        return {"!bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime.datetime):  # before date: a datetime is a date too
        return {"!datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"!date": value.isoformat()}
    if isinstance(value, list | tuple | set | frozenset | Mapping):
        if id(value) in active:
            raise CanonicalError(path, "refers to itself (a recursive structure)")
        active.add(id(value))
        try:
            return _canonical_container(value, path, active, depth)
        finally:
            active.discard(id(value))
    # numpy scalars (from Python callers): their plain equivalent, else refuse
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        plain = item()
        if isinstance(plain, bool | int | float):
            return _canonical(plain, path, active, depth)
    raise CanonicalError(
        path, f"a {type(value).__name__} has no canonical form; use a string, number, boolean,"
              " date, list or mapping")


def _canonical_container(value: Any, path: str, active: set[int], depth: int) -> Any:
    if isinstance(value, list):
        return [_canonical(v, f"{path}[{i}]", active, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"!tuple": [_canonical(v, f"{path}[{i}]", active, depth + 1)
                           for i, v in enumerate(value)]}
    if isinstance(value, set | frozenset):
        items = [_canonical(v, f"{path}{{}}", active, depth + 1) for v in value]
        return {"!set": sorted(items, key=_canonical_json)}
    if all(isinstance(k, str) for k in value):
        return {("!" + k if k.startswith("!") else k):
                _canonical(v, f"{path}.{k}", active, depth + 1) for k, v in value.items()}
    pairs = [[_canonical(k, f"{path}.{k!r}(key)", active, depth + 1),
              _canonical(v, f"{path}.{k!r}", active, depth + 1)] for k, v in value.items()]
    return {"!map": sorted(pairs, key=lambda kv: _canonical_json(kv[0]))}


def metric_problem(metrics: Mapping[str, MetricSpec], streams: Sequence[str],
                   parameters: Collection[str] = ()) -> tuple[str, str] | None:
    """The first problem of a set of metrics as ``(".name.field", message)``, or None.

    Checks what one metric cannot check alone: names (identifiers, not a key column or a sweep
    parameter), that every ``stream`` is one of ``streams``, that every name an ``expr`` uses is
    another metric, and that no metrics refer to each other in a cycle. Used for configs and for
    metrics given to the API or the command line.
    """
    for name, metric in metrics.items():
        problem = check_name(name)
        if problem is None and name in METRIC_KEY_COLUMNS:
            problem = "is a column of every metric table already; choose another name"
        if problem is None and name in parameters:
            problem = "is also a sweep parameter"
        if problem is not None:
            return f".{name}", f"metric name {name!r} {problem}"
        if metric.stream is not None and metric.stream not in streams:
            return (f".{name}.stream",
                    f"unknown stream {metric.stream!r}{_suggest(metric.stream, streams)}"
                    f" (streams: {', '.join(streams) or 'none'})")
        if metric.expr is not None:
            for used in Expression(metric.expr).names:
                if used == name:
                    return f".{name}.expr", f"metric {name!r} uses itself"
                if used not in metrics:
                    return (f".{name}.expr",
                            f"unknown metric {used!r}{_suggest(used, list(metrics))}"
                            f" (metrics: {', '.join(metrics)})")
    cycle = _expression_cycle(metrics)
    if cycle:
        return (f".{cycle[0]}.expr",
                f"metrics refer to each other in a cycle: {' -> '.join(cycle)}")
    return None


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _expression_cycle(metrics: Mapping[str, MetricSpec]) -> list[str]:
    """A cycle of expr metrics as ``[a, b, ..., a]``, or ``[]`` when there is none."""
    uses = {name: [u for u in Expression(m.expr).names if u in metrics]
            for name, m in metrics.items() if m.expr is not None}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in uses:
        if root in state:
            continue
        # depth-first, iteratively: a long chain of metrics must not hit the recursion limit
        path = [root]
        todo = [iter(uses[root])]
        state[root] = 1
        while todo:
            used = next(todo[-1], None)
            if used is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(used) == 1:
                return path[path.index(used):] + [used]
            elif used not in state:
                state[used] = 1
                path.append(used)
                todo.append(iter(uses.get(used, [])))
    return []


def _canonical_json(data: Any) -> str:
    """Canonical JSON of canonical data (:func:`canonical`): sorted keys, no whitespace."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _format_loc(loc: Sequence[str | int]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _unwrap(annotation: Any) -> Any:
    """The model class or container inside ``X | None`` / ``Annotated[X, ...]``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The config model class that owns the last key of ``loc``, for "allowed keys" hints."""
    current: Any = ExperimentConfig
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str) or part not in current.model_fields:
                return None
            current = current.model_fields[part].annotation
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict and isinstance(part, str):
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    """(dotted path, message) for one pydantic error."""
    loc = list(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    path = _format_loc(loc)
    if kind == "config_field":
        return (path + ctx["subpath"]).lstrip("."), ctx["message"]
    if kind == "missing":
        message = "required key missing"
        if loc and loc[-1] == "value_scale":
            message += " (a positive quantum such as 0.01, or null to store values exactly)"
        return path, message
    if kind == "extra_forbidden":
        owner = _model_at(loc)
        message = "unknown key"
        if owner is not None:
            allowed = list(owner.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            message += f"; allowed: {', '.join(allowed)}"
        return path, message
    for op, name in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if op in ctx and kind.startswith(("greater", "less")):
            bound = ctx[op]
            if isinstance(bound, float) and bound.is_integer():
                bound = int(bound)
            return path, f"must be {name} {bound} (got {got!r})"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith("Input should be"):
        message = "must be" + message[len("Input should be") :] + f" (got {got!r})"
    return path, message


def _config_error(source: str, exc: ValidationError) -> ConfigError:
    errors = exc.errors(include_url=False)
    path, message = _describe(errors[0])
    text = f"{source}: {path}: {message}" if path else f"{source}: {message}"
    if len(errors) > 1:
        others = sorted({_describe(e)[0] or "(top level)" for e in errors[1:]} - {path})
        text += f" (and {len(errors) - 1} more error(s)"
        text += f": {', '.join(others)})" if others else ")"
    return ConfigError(text)


def validate_config(data: Mapping[str, Any], source: str = "<config>") -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a mapping; errors name ``source`` and the field path."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: must be a mapping of keys (experiment, output, ...) at the top level"
            f" (got {type(data).__name__})"
        )
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(source, exc) from None


_OVERRIDE_PART_RE = re.compile(r"^([^.\[\]]+)((?:\[[0-9]+\])*)$")


def _split_override_key(key: str) -> list[str | int]:
    """``"streams[1].value_scale"`` -> ``["streams", 1, "value_scale"]``; ``a.0.b`` also works."""
    parts: list[str | int] = []
    for piece in key.split("."):
        match = _OVERRIDE_PART_RE.match(piece.strip())
        if match is None:
            raise ValueError(f"bad key {key!r}")
        name, indexes = match.groups()
        parts.append(int(name) if name.isdigit() else name)
        parts.extend(int(i) for i in re.findall(r"\[([0-9]+)\]", indexes))
    return parts


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ValueError("expected key.sub=value, e.g. replications=50 or logger.zstd_level=3")
    parts = _split_override_key(key.strip())
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"value {raw!r} is not valid YAML ({problem})") from None
    except _YamlRefused as exc:
        raise ValueError(f"value {raw[:40]!r}: {exc}") from None
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = _format_loc(parts[: depth + 1])
        if isinstance(node, list):
            if isinstance(part, str):
                # streams.stock.value_scale: select a list item by its name
                named = [
                    i
                    for i, item in enumerate(node)
                    if isinstance(item, dict) and item.get("name") == part
                ]
                if not named:
                    raise ValueError(f"{where}: no item named {part!r}")
                part = named[0]
            if not 0 <= part < len(node):
                raise ValueError(f"{where}: index out of range (the list has {len(node)} items)")
        elif isinstance(node, dict):
            if isinstance(part, int):
                part = str(part)
            if not last and node.get(part) is None:
                node[part] = [] if isinstance(parts[depth + 1], int) else {}
        else:
            raise ValueError(f"{_format_loc(parts[:depth])} is not a mapping or list")
        if last:
            node[part] = value
        else:
            node = node[part]


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load, override, validate and check a YAML experiment config.

    ``overrides`` are ``key.sub=value`` strings whose value is parsed as YAML (``replications=50``,
    ``execution.backend=ray``, ``streams[1].value_scale=0.5`` or ``streams.stock.value_scale=0.5``).
    A relative ``output`` is resolved against the **current working directory** (as for any
    command-line path), so the returned config holds an absolute path that every worker agrees on.
    The entry point is imported to check it exists. Every problem raises one ConfigError whose
    message names the file and the dotted field path.
    """
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source}: the config is larger than {MAX_CONFIG_BYTES} bytes "
                              "(1 MiB); a config holds settings, not data")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{source}: cannot read the config: {reason}") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{source}: invalid YAML: {where}{problem}") from None
    except _YamlRefused as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if data is None:
        raise ConfigError(f"{source}: the config is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: must be a mapping of keys (experiment, output, ...) at the top level"
            f" (got {type(data).__name__})"
        )
    for override in overrides:
        try:
            _apply_override(data, override)
        except ValueError as exc:
            raise ConfigError(f"{source}: override {override!r}: {exc}") from None
    cfg = validate_config(data, source)
    if isinstance(cfg.output, Path):  # a URI is absolute as it is
        output = cfg.output.expanduser()
        if not output.is_absolute():
            output = Path.cwd() / output
        cfg = cfg.model_copy(update={"output": output})
    try:
        _import_entry_point(cfg.entry_point)
    except _EntryPointError as exc:
        raise ConfigError(f"{source}: entry_point: {exc}") from exc.__cause__
    return cfg


def config_snapshot(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as JSON-serialisable data; ``validate_config`` turns it back.

    ``parameters`` are stored in canonical form (:func:`canonical`): plain values as they are,
    values JSON has no type for (dates, binary, sets, infinities) as tagged mappings.
    """
    data = cfg.model_dump(mode="json", exclude={"parameters"})
    params = canonical(cfg.parameters, "parameters")
    return {name: params if name == "parameters" else data[name]
            for name in type(cfg).model_fields if name == "parameters" or name in data}


# -- YAML with bounds -----------------------------------------------------------------------------


class _YamlRefused(Exception):
    """A config that parses but is refused (too big, too deep, recursive, duplicate keys)."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (the pure-Python one: libyaml's composer recurses on the C stack
    and crashes the process on deeply nested input, where Python raises RecursionError).

    Numbers with colons (YAML 1.1's base 60: ``2:00:00`` is 7200) stay text, as in YAML 1.2:
    ``execution.slurm.time: 2:00:00`` means two hours, not 7200 minutes."""

    def construct_yaml_int(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode) and ":" in str(node.value):
            return str(node.value)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode) and ":" in str(node.value):
            return str(node.value)
        return super().construct_yaml_float(node)


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)
_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _ConfigLoader.construct_yaml_float)


def _load_yaml(text: str) -> Any:
    """Parse YAML safely and within bounds: the node graph is checked before any value is built.

    Refused: more than MAX_CONFIG_NODES values once aliases are expanded, nesting deeper than
    MAX_CONFIG_DEPTH, a recursive alias, and a key that appears twice in one mapping (naming
    both lines; ``<<`` merge keys may still be overridden, which is what they are for).
    """
    loader = _ConfigLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise _YamlRefused(f"nested deeper than {MAX_CONFIG_DEPTH} levels") from None
        if node is None:
            return None
        _check_nodes(loader, node)
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError) as exc:  # an invalid date, an int of 5,000 digits
            raise _YamlRefused(f"invalid value: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_nodes(loader: _ConfigLoader, root: yaml.Node) -> None:
    # Iterative post-order walk over the composed graph. An alias is the same node object as
    # its anchor, so the expanded size and height are computed once per node and summed per
    # use: linear in the file, however many times the aliases multiply.
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        children = _children(node)
        if finished:
            on_path.discard(nid)
            size[nid] = 1 + sum(size[id(c)] for c in children)
            height[nid] = 1 + max((height[id(c)] for c in children), default=0)
            if size[nid] > MAX_CONFIG_NODES:
                raise _YamlRefused(
                    f"line {node.start_mark.line + 1}: expands to more than {MAX_CONFIG_NODES:,}"
                    " values (aliases counted as copies of what they refer to); refusing to"
                    " load it")
            if height[nid] > MAX_CONFIG_DEPTH:
                raise _YamlRefused(f"line {node.start_mark.line + 1}: nested deeper than "
                                   f"{MAX_CONFIG_DEPTH} levels")
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise _YamlRefused(f"line {node.start_mark.line + 1}: an alias refers to a value "
                               "that contains it (a recursive structure)")
        on_path.add(nid)
        if isinstance(node, yaml.MappingNode):
            _check_duplicate_keys(loader, node)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _check_duplicate_keys(loader: _ConfigLoader, node: yaml.MappingNode) -> None:
    first: dict[Any, int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        try:
            key = loader.construct_object(key_node)
            hash(key)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            continue  # reported when the document is built
        line = key_node.start_mark.line + 1
        if key in first:
            raise _YamlRefused(f"duplicate key {key!r} at line {line} (first at line "
                               f"{first[key]}); a mapping may give each key once")
        first[key] = line


class _EntryPointError(Exception):
    pass


def _import_entry_point(spec: str) -> Callable[..., Any]:
    if not _ENTRY_POINT_RE.match(spec):
        raise _EntryPointError(f"must look like 'package.module:function' (got {spec!r})")
    module_name, _, attr_path = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise _EntryPointError(
                f"no module named {exc.name!r} (is it installed, or on PYTHONPATH?)"
            ) from exc
        raise _EntryPointError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: report it, chained
        raise _EntryPointError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            raise _EntryPointError(f"module {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, attr)
    if not callable(target):
        raise _EntryPointError(f"{spec!r} is a {type(target).__name__}, not a callable")
    return typing.cast(Callable[..., Any], target)


def resolve_entry_point(spec: str) -> Callable[..., Any]:
    """The model function named by ``package.module:function``; ConfigError if it is missing."""
    try:
        return _import_entry_point(spec)
    except _EntryPointError as exc:
        raise ConfigError(f"entry_point {spec!r}: {exc}") from exc.__cause__
