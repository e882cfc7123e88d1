"""The ``disco-data-logger`` command: run | merge | inspect | export | verify.

Errors are one line on stderr and a non-zero exit status, never a traceback: 2 for the
package's own errors (bad config, unreadable data), 1 for anything else, 130 after Ctrl-C.
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DataLoggerError

__all__ = ["main"]

PROG = "disco-data-logger"


class CommandError(Exception):
    """A user-facing failure of a command: printed as one line, exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run Monte Carlo experiments from YAML and query their sharded results.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment config (resumes a previous run)")
    run.add_argument("config", help="YAML experiment config")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="override single config keys, e.g. replications=50 logger.zstd_level=3")
    run.add_argument("--force", action="store_true",
                     help="replace results of a different config in the same output")
    run.add_argument("--workers", type=int, metavar="N", help="number of worker processes")
    run.add_argument("--backend", choices=("serial", "multiprocessing", "ray"),
                     help="execution backend")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    merge = sub.add_parser("merge", help="merge shard manifests into the experiment index")
    merge.add_argument("dir", help="experiment output directory")

    inspect = sub.add_parser("inspect", help="summary of an experiment directory")
    inspect.add_argument("dir", help="experiment output directory")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")

    export = sub.add_parser("export", help="export records to a Hive-partitioned Parquet dataset")
    export.add_argument("dir", help="experiment output directory")
    export.add_argument("--parquet", required=True, metavar="OUT", help="output directory")
    export.add_argument("--select", action="append", default=[], metavar="k=v",
                        help="label selector (repeatable; all must match), e.g. stream=stock")
    export.add_argument("--partition-by", metavar="COLS",
                        help="comma-separated partition columns (default: stream,point_id)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    verify = sub.add_parser("verify", help="check segment checksums, torn tails and commits")
    verify.add_argument("dir", help="experiment output directory, or one logger directory")
    verify.add_argument("--repair", action="store_true",
                        help="truncate torn segment tails (what a killed writer leaves), keeping "
                             "each original as NNNNN.seg.zst.torn-<time>; nothing else is changed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from ._version import __version__

        print(f"{PROG} {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler = {"run": _cmd_run, "merge": _cmd_merge, "inspect": _cmd_inspect,
               "export": _cmd_export, "verify": _cmd_verify}[args.command]
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except DataLoggerError as exc:
        _report(exc, args.debug)
        return 2
    except Exception as exc:
        _report(exc, args.debug)
        return 1
    finally:
        warnings.showwarning = previous_showwarning


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning is one line naming what it is about (a damaged file, a skipped shard)."""
    text = " ".join(str(message).split())
    print(f"{PROG}: warning: {text}", file=sys.stderr if file is None else file)


def _report(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, FileExistsError)) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif not isinstance(exc, (DataLoggerError, CommandError, OSError, ValueError)):
        text = f"{type(exc).__name__}: {text}"
    print(f"{PROG}: error: {text}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ run


def _cmd_run(args: argparse.Namespace) -> int:
    from .sharding.config import load_config
    from .sharding.coordinator import Coordinator

    # A shell starts background jobs with SIGINT ignored; `kill -INT` must still stop a run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"execution.backend={args.backend}")
    if args.workers is not None:
        overrides.append(f"execution.workers={args.workers}")
    cfg = load_config(args.config, overrides)
    result = Coordinator(cfg, overrides=overrides, config_path=args.config,
                         overwrite=args.force, progress=not args.no_progress).run()
    out = result.output
    q = shlex.quote
    print(f"results: {out}")
    print(f"  {result.state}: {result.resumed + result.committed}/{result.planned} replications "
          f"committed ({result.committed} this run, {result.resumed} resumed), "
          f"{len(result.failed)} failed, {result.pending} pending; "
          f"{result.wall_seconds:.1f} s, {result.rate:.2f} replications/s")
    print("query:")
    print(f"  python -c \"from disco_data_logger import Experiment; "
          f"print(Experiment.open('{out}').to_polars('stream={_first_stream(cfg)}'))\"")
    print(f"  {PROG} export {q(str(out))} --parquet {q(str(out / 'parquet'))} && "
          f"python -c \"import duckdb; print(duckdb.sql(\\\"SELECT stream, point_id, count(*) "
          f"FROM read_parquet('{out / 'parquet'}/**/*.parquet', hive_partitioning=true) "
          f"GROUP BY ALL\\\"))\"")
    if result.state == "interrupted":
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if result.failed:
        tid, err = next(iter(sorted(result.failed.items())))
        print(f"{PROG}: error: {len(result.failed)} replication(s) failed after every retry "
              f"(first: {tid}: {err}); errors and tracebacks are in "
              f"{out / 'index' / 'replications.parquet'}", file=sys.stderr)
        return 1
    return 0


def _first_stream(cfg: Any) -> str:
    return cfg.streams[0].name if cfg.streams else "NAME"


# ---------------------------------------------------------------------------------------- merge


def _cmd_merge(args: argparse.Namespace) -> int:
    from .sharding.index import merge

    index = merge(args.dir)
    t = index.totals
    print(f"merged {t['shards']} shard(s) into {Path(args.dir) / 'index'}: "
          f"{t['committed']} replications committed, {t['failed']} failed, {t['pending']} pending; "
          f"{t['streams']} streams, {t['records']} records"
          + (f"; {t['duplicates_dropped']} duplicate commit(s) ignored"
             if t["duplicates_dropped"] else "")
          + (f"; {t['lost']} commit(s) lost (their segment bytes are damaged or missing)"
             if t.get("lost") else ""))
    return 0


# -------------------------------------------------------------------------------------- inspect


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def inspect_summary(path: str | Path) -> dict[str, Any]:
    """The numbers ``inspect`` prints, computed without writing anything."""
    from .sharding.index import ExperimentIndex

    root = Path(path)
    index = ExperimentIndex.build(root)
    info = index.info
    t = info["totals"]
    runs = info.get("runs", [])
    return {
        "output": str(root),
        "experiment": info.get("experiment"),
        "state": info.get("state"),
        "replications": {k: t[k] for k in ("replications", "committed", "failed", "pending")},
        "duplicates_dropped": t["duplicates_dropped"],
        "lost": t.get("lost", 0),
        "shards": t["shards"],
        "open_shards": sum(1 for s in info["shards"] if not s["closed"]),
        "streams": t["streams"],
        "records": t["records"],
        "raw_bytes": t["raw_bytes"],
        "compressed_bytes": t["compressed_bytes"],
        "compression_ratio": (t["raw_bytes"] / t["compressed_bytes"]
                              if t["compressed_bytes"] else None),
        "epoch_span": [t["min_epoch"], t["max_epoch"]],
        "wall_time": {"first_run_started": runs[0].get("started") if runs else None,
                      "last_run_finished": runs[-1].get("finished") if runs else None},
        "versions": info.get("versions"),
        "git_commit": info.get("git_commit"),
    }


def _cmd_inspect(args: argparse.Namespace) -> int:
    s = inspect_summary(args.dir)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    exp = s["experiment"] or {}
    name = "/".join(str(exp.get(k)) for k in ("organisation", "model", "name")) if exp else "-"
    r = s["replications"]
    ratio = s["compression_ratio"]
    lo, hi = s["epoch_span"]
    rows = [
        ("experiment", name),
        ("output", s["output"]),
        ("state", s["state"] or "-"),
        ("replications", f"{r['replications']} total: {r['committed']} committed, "
                         f"{r['failed']} failed, {r['pending']} pending"
                         + (f" ({s['duplicates_dropped']} duplicate commits ignored)"
                            if s["duplicates_dropped"] else "")
                         + (f" ({s['lost']} commits lost: their segment bytes are damaged or "
                            "missing)" if s["lost"] else "")),
        ("shards", f"{s['shards']} ({s['open_shards']} not closed)"),
        ("streams", f"{s['streams']:,}"),
        ("records", f"{s['records']:,}"),
        ("raw bytes", _human_bytes(s["raw_bytes"])),
        ("compressed bytes", _human_bytes(s["compressed_bytes"])),
        ("compression ratio", f"{ratio:.1f}x" if ratio else "-"),
        ("epoch span", f"{lo:g} .. {hi:g}" if lo is not None and hi is not None else "-"),
        ("run time", f"{s['wall_time']['first_run_started'] or '-'} .. "
                     f"{s['wall_time']['last_run_finished'] or '-'}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


# --------------------------------------------------------------------------------------- export


def _selector(selects: Sequence[str]) -> str | None:
    parts = [s.strip() for s in selects if s.strip()]
    return ",".join(parts) if parts else None


def _cmd_export(args: argparse.Namespace) -> int:
    from .sharding.experiment import Experiment

    exp = Experiment.open(args.dir)
    partition_by = None
    if args.partition_by is not None:
        partition_by = [c.strip() for c in args.partition_by.split(",") if c.strip()]
    out = exp.export(args.parquet, _selector(args.select), partition_by=partition_by,
                     overwrite=args.overwrite)
    files = sorted(out.rglob("*.parquet"))
    print(f"exported {len(files)} Parquet file(s) to {out}")
    print(f"  python -c \"import duckdb; print(duckdb.sql(\\\"SELECT * FROM "
          f"read_parquet('{out}/**/*.parquet', hive_partitioning=true) LIMIT 10\\\"))\"")
    return 0


# --------------------------------------------------------------------------------------- verify


def _cmd_verify(args: argparse.Namespace) -> int:
    from .sharding.verify import verify_path

    report = verify_path(args.dir, repair=args.repair)
    for line in report.lines():
        print(line)
    if not report.ok:
        print(f"{PROG}: error: {report.problem_summary()}", file=sys.stderr)
        return 1
    return 0
