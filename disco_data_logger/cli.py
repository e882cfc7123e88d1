"""The ``disco-data-logger`` command: run | merge | inspect | export | verify | summarize | report
| sbatch.

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
from typing import TYPE_CHECKING, Any

from .errors import DataLoggerError
from .sharding.console import print_fields, print_table
from .sharding.names import for_terminal, python_str, shell_word

if TYPE_CHECKING:
    from .sharding.config import ExperimentConfig

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
    run.add_argument("--max-failures", metavar="N",
                     help="stop early once N tasks failed every attempt ('none': never); "
                          "sets execution.max_failures")
    run.add_argument("--backend", choices=("serial", "multiprocessing", "ray", "slurm"),
                     help="execution backend")
    run.add_argument("--part", metavar="I/N",
                     help="run part I of N of the experiment (the other parts run elsewhere, "
                          "into the same output); 'auto' or 'auto/N' takes I (and N) from the "
                          "job array (SLURM_ARRAY_TASK_ID, PBS_ARRAY_INDEX)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    merge = sub.add_parser("merge", help="merge shard journals into the experiment index, or "
                                         "outputs of one experiment into one (--into)")
    merge.add_argument("dir", nargs="+", help="experiment output directory (several with --into)")
    merge.add_argument("--into", metavar="D",
                       help="combine the given outputs of one experiment into D (new, empty, or "
                            "one of them): shards hard-linked or copied, each replication once")

    sbatch = sub.add_parser("sbatch", help="write a SLURM job array script that runs the "
                                           "experiment in parts")
    sbatch.add_argument("config", help="YAML experiment config")
    sbatch.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override single config keys (also passed to every part)")
    sbatch.add_argument("--parts", type=int, metavar="N",
                        help="array tasks, one part each (default: execution.slurm.parts, "
                             "else execution.workers)")
    sbatch.add_argument("--out", metavar="FILE", help="write the script here (default: stdout)")

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

    summarize = sub.add_parser(
        "summarize", help="metrics per sweep point with confidence intervals (and comparisons)")
    summarize.add_argument("dir", help="experiment output directory")
    _metric_options(summarize)
    summarize.add_argument("--compare", metavar="POINT",
                           help="differences of every point against POINT (a point id such as "
                                "p0000, or parameters such as s=4.0): paired under seeding: "
                                "common, Welch otherwise")
    summarize.add_argument("--json", action="store_true", help="print the tables as JSON")

    report = sub.add_parser("report", help="write a self-contained HTML report (needs the "
                                           "report extra: matplotlib)")
    report.add_argument("dir", help="experiment output directory")
    report.add_argument("--out", metavar="FILE",
                        help="where to write it (default: DIR/report.html)")
    _metric_options(report)
    report.add_argument("--compare", metavar="POINT",
                        help="the reference point of the differences (default: the first)")

    verify = sub.add_parser("verify", help="check segment checksums, torn tails and commits")
    verify.add_argument("dir", help="experiment output directory, or one logger directory")
    verify.add_argument("--repair", action="store_true",
                        help="truncate torn segment tails (what a killed writer leaves), keeping "
                             "each original as NNNNN.seg.zst.torn-<time>; nothing else is changed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `run CONFIG --no-progress key=value`: argparse does not take positionals after an
        # option, so overrides given there arrive here.
        if args.command in ("run", "sbatch") and \
                all("=" in e and not e.startswith("-") for e in extra):
            args.overrides.extend(extra)
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        from ._version import __version__

        print(f"{PROG} {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler = {"run": _cmd_run, "merge": _cmd_merge, "inspect": _cmd_inspect,
               "export": _cmd_export, "verify": _cmd_verify, "summarize": _cmd_summarize,
               "report": _cmd_report, "sbatch": _cmd_sbatch}[args.command]
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
    # Paths and names in a message may hold anything: one line, nothing a terminal interprets.
    print(f"{PROG}: error: {for_terminal(text)}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ run


def _cmd_run(args: argparse.Namespace) -> int:
    from .sharding.config import load_config
    from .sharding.coordinator import Coordinator
    from .sharding.records import RunState

    # A shell starts background jobs with SIGINT ignored; `kill -INT` must still stop a run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"execution.backend={args.backend}")
    if args.workers is not None:
        overrides.append(f"execution.workers={args.workers}")
    if args.max_failures is not None:
        value = args.max_failures.strip()
        overrides.append("execution.max_failures=" +
                         ("null" if value.lower() in ("none", "null") else value))
    cfg = load_config(args.config, overrides)
    result = Coordinator(cfg, overrides=overrides, config_path=args.config,
                         overwrite=args.force, progress=not args.no_progress,
                         part=args.part).run()
    out = result.output
    print(f"results: {for_terminal(str(out))}")
    of_part = f" of part {result.part}" if result.part else ""
    print(f"  {result.state}{of_part}: {result.resumed + result.committed}/{result.planned} "
          "replications "
          f"committed ({result.committed} this run, {result.resumed} resumed), "
          f"{len(result.failed)} failed, {result.pending} pending; "
          f"{result.wall_seconds:.1f} s, {result.rate:.2f} replications/s")
    if result.precision is not None:
        from .sharding.stopping import describe_stop

        head, *points = describe_stop(result.precision)
        print(f"  precision: {for_terminal(head)}")
        for line in points:
            print(f"    {for_terminal(line)}")
    if result.part and result.index is not None:
        t = result.index.totals
        print(f"  the whole experiment: {t['committed']}/{t['replications']} replications "
              f"committed, {t['failed']} failed, {t['pending']} pending (every part: "
              f"{PROG} inspect {shlex.quote(str(out))})")
    print("query:")
    if cfg.metrics:
        q = shlex.quote
        print(f"  {PROG} summarize {q(str(out))}"
              + (f" --compare {q(_first_point(cfg))}" if len(cfg.points()) > 1 else ""))
        print(f"  {PROG} report {q(str(out))}")
    for line in query_hint(out, _first_stream(cfg)):
        print(f"  {line}")
    if result.state is RunState.INTERRUPTED:
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if result.failed or result.stopped_early:
        if result.first_traceback:
            print("first failure:", file=sys.stderr)
            for line in result.first_traceback.rstrip("\n").splitlines():
                print(f"  {for_terminal(line)}", file=sys.stderr)
        first = ""
        if result.failed:
            tid, err = next(iter(sorted(result.failed.items())))
            first = f" (first: {tid}: {err})"
        where = f"errors and tracebacks are in {out}/index/replications.parquet"
        if result.stopped_early:
            text = (f"run stopped early: {result.stopped_early}; {len(result.failed)} "
                    f"replication(s) failed{first}, {result.pending} pending; fix the cause and "
                    f"run the same command again to resume; {where}")
        else:
            text = (f"{len(result.failed)} replication(s) failed after every retry{first}; "
                    f"{where}")
        print(f"{PROG}: error: {for_terminal(text)}", file=sys.stderr)
        return 1
    return 0


def _first_point(cfg: ExperimentConfig) -> str:
    from .sharding.planning import point_id

    return point_id(0)


def _first_stream(cfg: ExperimentConfig) -> str:
    return cfg.streams[0].name if cfg.streams else "NAME"


def export_dir_for(output: Path | str) -> Path | str:
    """Where the printed hint exports to: beside the experiment (``OUT-parquet``), never inside,
    since ``export`` refuses to write into an experiment directory."""
    if isinstance(output, str):  # an object-store URI
        return f"{output}-parquet"
    return output.parent / f"{output.name}-parquet"


def query_hint(output: Path | str, stream: str) -> list[str]:
    """Shell lines that query ``output``: every name and path quoted for the shell, and for the
    Python string literals inside, whatever characters they hold."""
    selector = "{" + python_str("stream") + ": " + python_str(stream) + "}"
    polars = (f"from disco_data_logger import Experiment; "
              f"print(Experiment.open({python_str(str(output))}).to_polars({selector}))")
    export = export_dir_for(output)
    if isinstance(export, str):
        scan = (f"import polars as pl; print(pl.scan_parquet({python_str(export + '/**/*.parquet')}"
                ", hive_partitioning=True).group_by(\"stream\", \"point_id\").len().collect())")
        return [
            f"python -c {shell_word(polars)}",
            f"{PROG} export {shell_word(str(output))} --parquet {shell_word(export)} && "
            f"python -c {shell_word(scan)}",
        ]
    duck = (f"import duckdb; print(duckdb.read_parquet({python_str(str(export / '**/*.parquet'))}"
            ", hive_partitioning=True).aggregate(\"stream, point_id, count(*)\"))")
    return [
        f"python -c {shell_word(polars)}",
        f"{PROG} export {shell_word(str(output))} --parquet {shell_word(str(export))} && "
        f"python -c {shell_word(duck)}",
    ]


# ---------------------------------------------------------------------------------------- merge


def _cmd_merge(args: argparse.Namespace) -> int:
    from .sharding.index import merge

    if args.into is not None:
        return _merge_into(args.dir, args.into)
    if len(args.dir) != 1:
        raise CommandError(f"merge takes one experiment directory (got {len(args.dir)}); to "
                           "combine outputs of one experiment give --into D")
    (folder,) = args.dir
    index = merge(folder)
    t = index.totals
    print(f"merged {t['shards']} shard(s) into {for_terminal(_child(folder, 'index'))}: "
          f"{t['committed']} replications committed, {t['failed']} failed, {t['pending']} pending; "
          f"{t['streams']} streams, {t['records']} records"
          + (f"; {t['duplicates_dropped']} duplicate commit(s) ignored"
             if t["duplicates_dropped"] else "")
          + (f"; {t['lost']} commit(s) lost (their segment bytes are damaged or missing)"
             if t.get("lost") else ""))
    return 0


def _merge_into(sources: Sequence[str], into: str) -> int:
    from .sharding.combine import merge_into

    r = merge_into(sources, into)
    assert r.index is not None
    t = r.index.totals
    brought = []
    if r.linked:
        brought.append(f"{len(r.linked)} hard-linked ({_human_bytes(r.linked_bytes)}, same "
                       "filesystem: no data copied)")
    if r.copied:
        brought.append(f"{len(r.copied)} copied ({_human_bytes(r.copied_bytes)})")
    if r.present:
        brought.append(f"{len(r.present)} already there")
    if r.skipped:
        brought.append(f"{len(r.skipped)} skipped (a different shard of the same id is there)")
    print(f"merged {len(r.sources)} output(s) into {for_terminal(str(into))}: shards "
          f"{', '.join(brought) or 'none'}")
    print(f"  {t['committed']} replications committed, {t['failed']} failed, {t['pending']} "
          f"pending; {t['streams']} streams, {t['records']} records"
          + (f"; {t['duplicates_dropped']} duplicate commit(s) ignored (each replication is "
             "kept once)" if t["duplicates_dropped"] else ""))
    return 0


# --------------------------------------------------------------------------------------- sbatch


def _cmd_sbatch(args: argparse.Namespace) -> int:
    from .sharding.config import load_config
    from .sharding.slurm import sbatch_script

    cfg = load_config(args.config, list(args.overrides))
    parts = args.parts if args.parts is not None else \
        cfg.execution.slurm.part_count(cfg.execution)
    text = sbatch_script(cfg, args.config, list(args.overrides), parts,
                         name=Path(args.out).name if args.out else None)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise CommandError(f"{out}: not a regular file; give a new file name for the script")
    out.write_text(text)
    print(f"wrote {for_terminal(str(out))}: {parts} part(s) as one job array; submit it with",
          file=sys.stderr)
    print(f"  sbatch {shell_word(str(out))}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------------- inspect


def _child(location: str, name: str) -> str:
    """``location/name`` for a directory or a URI (never turning ``s3://`` into ``s3:/``)."""
    from .sharding.storage import is_uri

    return f"{location.rstrip('/')}/{name}" if is_uri(location) else str(Path(location) / name)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def inspect_summary(path: str | Path) -> dict[str, Any]:
    """The numbers ``inspect`` prints, computed without writing anything."""
    from .sharding.index import ExperimentIndex
    from .sharding.records import ReplicationStatus
    from .sharding.sources import stop_plan
    from .sharding.storage import output_location

    root = output_location(path)
    index = ExperimentIndex.build(root)
    info = index.info
    t = info["totals"]
    runs = info.get("runs", [])
    return {
        "output": str(root),
        "experiment": info.get("experiment"),
        "state": info.get("state"),
        "replications": {k: t[k] for k in ("replications", *(s.value for s in ReplicationStatus))},
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
        "precision": stop_plan(info.get("plan")),
        "parts": _parts_summary(root, index, runs),
    }


def _parts_summary(root: str | Path, index: Any,
                   runs: Sequence[Any]) -> list[dict[str, Any]] | None:
    """Progress per part when the experiment was last run in parts (``--part``, ``slurm``)."""
    from .sharding.lock import live_holders
    from .sharding.parts import parse_part, part_progress

    count = None
    for record in reversed(runs):
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("part"), str):
            try:
                part = parse_part(record["part"])
            except DataLoggerError:
                continue
            count = part.count if part is not None else None
        elif isinstance(record.get("parts"), int) and not isinstance(record["parts"], bool):
            count = record["parts"]
        if count is not None:
            break
    live = {}
    for holder in ([] if isinstance(root, str) else live_holders(root)):
        if count is not None and holder.part is not None and holder.part.endswith(f"/{count}"):
            live[int(holder.part.split("/")[0])] = f"pid {holder.pid} on {holder.host}"
    if count is None or count < 1:
        return None
    return part_progress(index.replications, count, live)


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
    if s["precision"] is not None:
        from .sharding.stopping import describe_stop

        head, *points = describe_stop(s["precision"])
        rows.append(("precision", head))
        rows.extend(("", line) for line in points)
    for row in s["parts"] or []:
        rows.append((f"part {row['part']}",
                     f"{row['committed']}/{row['planned']} committed, {row['failed']} failed, "
                     f"{row['pending']} pending"
                     + (f"; running now ({row['running']})" if row["running"] else "")))
    print_fields(rows)
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
    if isinstance(out, str):  # an object-store URI
        from .sharding.storage import ObjectStore

        count = sum(1 for n in ObjectStore(out).list("") if n.endswith(".parquet"))
        print(f"exported {count} Parquet file(s) to {for_terminal(out)}")
        polars = (f"import polars as pl; print(pl.scan_parquet({python_str(out + '/**/*.parquet')}"
                  ", hive_partitioning=True).head(10).collect())")
        print(f"  python -c {shell_word(polars)}")
        return 0
    files = sorted(out.rglob("*.parquet"))
    print(f"exported {len(files)} Parquet file(s) to {for_terminal(str(out))}")
    duck = (f"import duckdb; print(duckdb.read_parquet({python_str(str(out / '**/*.parquet'))}, "
            "hive_partitioning=True).limit(10))")
    print(f"  python -c {shell_word(duck)}")
    return 0


# --------------------------------------------------------------------------------------- verify


def _cmd_verify(args: argparse.Namespace) -> int:
    from .sharding.verify import verify_path

    report = verify_path(args.dir, repair=args.repair)
    for line in report.lines():
        print(for_terminal(line))
    if not report.ok:
        print(f"{PROG}: error: {report.problem_summary()}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------ summarize


def _metric_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", action="append", default=[], metavar="NAME[=DEF]",
                        help="a metric of the config (repeatable; default: all), or a new one "
                             "defined in YAML, e.g. 'L={stream: queue, reduce: time_mean, "
                             "window: [100, null]}'")
    parser.add_argument("--confidence", type=float, default=0.95, metavar="C",
                        help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--duration", type=float, metavar="T",
                        help="end of time_mean windows (default: the config's duration)")


def _resolve_metric_options(exp: Any, options: Sequence[str]) -> Any:
    """The ``metrics`` argument for ``--metric`` options: None (the config's), a list of the
    config's names, or a mapping of definitions (names of the config's metrics given next to new
    definitions bring their own definitions along)."""
    from .sharding.metrics import experiment_config, parse_metric_option, resolve_metrics

    if not options:
        return None
    parsed = [parse_metric_option(o) for o in options]
    named = [name for name, spec in parsed if spec is None]
    if len(named) == len(parsed):
        return named
    specs: dict[str, Any] = {}
    if named:
        specs.update(resolve_metrics(exp, named, experiment_config(exp)))
    specs.update({name: spec for name, spec in parsed if spec is not None})
    return specs


def _safe(value: Any) -> str:
    """Text for a terminal: control characters of names read from disk are shown escaped."""
    text = "-" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _cmd_summarize(args: argparse.Namespace) -> int:
    from .sharding.experiment import Experiment
    from .sharding.summary import verdict as summary_verdict

    exp = Experiment.open(args.dir)
    metrics = _resolve_metric_options(exp, args.metric)
    summary = exp.summary(args.confidence, metrics=metrics, duration=args.duration)
    compare = None
    if args.compare is not None:
        compare = exp.compare(args.compare, confidence=args.confidence, metrics=metrics,
                              duration=args.duration)
    if args.json:
        doc: dict[str, Any] = {"confidence": args.confidence, "summary": summary.to_pylist()}
        if compare is not None:
            meta = compare.schema.metadata or {}
            doc["compare"] = {
                "method": meta.get(b"disco.method", b"").decode(),
                "note": meta.get(b"disco.note", b"").decode() or None,
                "rows": compare.to_pylist(),
            }
        print(json.dumps(doc, indent=1))
        return 0
    level = f"{args.confidence:.0%}" if round(args.confidence * 100, 6).is_integer() else \
        f"{args.confidence:g}"
    fixed = {"metric", "point_id", "n", "mean", "sd", "se", "half_width", "ci_low", "ci_high",
             "missing"}
    params = [c for c in summary.column_names if c not in fixed]
    d = summary.to_pydict()
    headers = ["metric", "point", *params, "n", "mean", f"±{level}", "ci_low", "ci_high", "sd"]
    rows = [[_safe(d["metric"][i]), _safe(d["point_id"][i]),
             *[_safe(d[p][i]) for p in params],
             str(d["n"][i]) + (f" ({d['missing'][i]} missing)" if d["missing"][i] else ""),
             *[_number(d[k][i]) for k in ("mean", "half_width", "ci_low", "ci_high", "sd")]]
            for i in range(summary.num_rows)]
    print_table(headers, rows, [False, False] + [True] * (len(headers) - 2))
    if compare is not None:
        meta = compare.schema.metadata or {}
        method = meta.get(b"disco.method", b"").decode()
        c = compare.to_pydict()
        ref = c["reference"][0] if compare.num_rows else args.compare
        how = ("paired by replication (common random numbers)" if method == "paired"
               else "Welch (independent samples)")
        print()
        print(f"differences against {_safe(ref)}, {how}:")
        note = meta.get(b"disco.note")
        if note:
            print(f"  note: {note.decode()}")
        headers = ["metric", "point", *params, "n", "difference", f"±{level}", "ci_low",
                   "ci_high", "verdict"]
        rows = []
        for i in range(compare.num_rows):
            verdict = summary_verdict(c["ci_low"][i], c["ci_high"][i])
            rows.append([_safe(c["metric"][i]), _safe(c["point_id"][i]),
                         *[_safe(c[p][i]) for p in params], str(c["n"][i]),
                         *[_number(c[k][i]) for k in ("difference", "half_width", "ci_low",
                                                      "ci_high")], verdict])
        print_table(headers, rows, [False, False] + [True] * (len(headers) - 3) + [False])
    return 0


# --------------------------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace) -> int:
    from .sharding.experiment import Experiment
    from .sharding.report import require_matplotlib, write_report

    require_matplotlib()
    exp = Experiment.open(args.dir)
    metrics = _resolve_metric_options(exp, args.metric)
    path = write_report(exp, args.out, metrics=metrics, confidence=args.confidence,
                        reference=args.compare)
    size = path.stat().st_size
    mirror = getattr(exp, "_mirror", None)
    if mirror is not None and args.out is None:
        # Beside the experiment, as for a directory: <uri>/report.html.
        mirror.store.put_file_range(path.name, path, 0, size)
        print(f"wrote {mirror.store.display(path.name)} ({_human_bytes(size)}); open it in any "
              "browser, no network needed")
        return 0
    print(f"wrote {path} ({_human_bytes(size)}); open it in any browser, no network needed")
    return 0
