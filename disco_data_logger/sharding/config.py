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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
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
from ..errors import ConfigError, InvalidSettingError

__all__ = [
    "ExperimentName",
    "LoggerSettings",
    "ExecutionSettings",
    "StreamSpec",
    "SweepSpec",
    "ExperimentConfig",
    "load_config",
    "validate_config",
    "config_snapshot",
    "resolve_entry_point",
    "parse_size",
    "RESERVED_LABELS",
]

RESERVED_LABELS = frozenset(
    {"stream", "organisation", "model", "experiment", "replication", "point_id"}
)
"""Labels the service sets on every stream; a config may not set them itself."""

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
        return value
    raise ValueError(
        f"must be a string, number or boolean, because it becomes a label (got {value!r})"
    )


Label = Annotated[LabelValue, PlainValidator(_label_value)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ExperimentName(_Strict):
    """Who and what: becomes the ``organisation``, ``model`` and ``experiment`` labels."""

    organisation: str = Field(min_length=1)
    model: str = Field(min_length=1)
    name: str = Field(min_length=1)


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


class ExecutionSettings(_Strict):
    """How replications are run; never changes their results (not part of the fingerprint)."""

    backend: Literal["serial", "multiprocessing", "ray"] = "multiprocessing"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    retries: int = Field(default=2, ge=0)
    ray_address: str | None = None
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Seconds one replication may run before it is counted as failed (None: no limit)."""


class StreamSpec(_Strict):
    """A stream every replication registers; periodic iff ``periodicity`` is set."""

    name: str = Field(min_length=1)
    labels: dict[str, Label] = Field(default_factory=dict)
    epoch_scale: float = Field(default=_defaults.EPOCH_SCALE, gt=0, allow_inf_nan=False)
    value_scale: float | None = Field(gt=0, allow_inf_nan=False)
    periodicity: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    kind: Literal["state", "accumulator"] | None = None

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, labels: dict[str, LabelValue]) -> dict[str, LabelValue]:
        for key in labels:
            if key in RESERVED_LABELS:
                raise _field_error(
                    f".{key}", "reserved label: the service sets it on every stream itself"
                )
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

    @property
    def periodic(self) -> bool:
        """True when the stream is registered with ``register_periodic_stream``."""
        return self.periodicity is not None


def _check_point_values(where: str, point: Mapping[str, Any]) -> None:
    for key, value in point.items():
        if key in RESERVED_LABELS:
            raise _field_error(
                f"{where}.{key}", "reserved name: sweep parameters become labels of that name"
            )
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
            if key in RESERVED_LABELS:
                raise _field_error(
                    f".{key}", "reserved name: sweep parameters become labels of that name"
                )
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

    @model_validator(mode="after")
    def _distinct_points(self) -> SweepSpec:
        if not self.grid and not self.points:
            raise _field_error("", "declares no points: give a grid, points, or remove sweep")
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


_ENTRY_POINT_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ExperimentConfig(_Strict):
    """A whole experiment; see ``docs/configuration.md``."""

    experiment: ExperimentName
    output: Path
    replications: int = Field(ge=1)
    seed: int = Field(ge=0)
    entry_point: str
    duration: float = Field(gt=0, allow_inf_nan=False)
    parameters: dict[str, Any] = Field(default_factory=dict)
    sweep: SweepSpec | None = None
    execution: ExecutionSettings = Field(default_factory=lambda: ExecutionSettings())
    logger: LoggerSettings = Field(default_factory=lambda: LoggerSettings())
    streams: list[StreamSpec] = Field(default_factory=list)

    @field_validator("entry_point")
    @classmethod
    def _entry_point_syntax(cls, spec: str) -> str:
        if not _ENTRY_POINT_RE.match(spec):
            raise ValueError(f"must look like 'package.module:function' (got {spec!r})")
        return spec

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

    def points(self) -> list[dict[str, Any]]:
        """The sweep points in order (``[{}]`` without a sweep)."""
        return self.sweep.expand() if self.sweep is not None else [{}]

    def fingerprint(self) -> str:
        """SHA-256 of everything that decides the data a given task records.

        Left out: ``execution`` (who runs a task never changes it), ``logger`` (block, ring and
        compression settings change bytes, not decoded data), ``output`` (where it goes) and
        ``replications`` (a task's seed does not depend on the count, so an experiment can be
        extended with more replications on the same output).
        """
        data = self.model_dump(
            mode="json", exclude={"execution", "logger", "output", "replications"}
        )
        return hashlib.sha256(_canonical_json(data).encode()).hexdigest()


def _canonical_json(data: Any) -> str:
    return json.dumps(
        data,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=str,
    )


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
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"value {raw!r} is not valid YAML ({problem})") from None
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
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{source}: cannot read the config: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{source}: invalid YAML: {where}{problem}") from None
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
    """The resolved config as JSON-serialisable data; ``validate_config`` turns it back."""
    return cfg.model_dump(mode="json")


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
