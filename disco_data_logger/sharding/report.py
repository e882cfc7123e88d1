"""The experiment report: one self-contained HTML file that opens without network access.

Charts are drawn with matplotlib and embedded as inline SVG (text kept as text, so the file stays
small and searchable); the page has no script, no external style sheet, font or image, so it
renders the same offline, in a mail attachment or in an archive years later. Sections:

1. provenance: experiment, config (as YAML), overrides, versions, git commit, host, runs;
2. the summary table (mean, Student-t confidence interval per metric and sweep point) and the
   differences against a reference point (paired under ``seeding: common``, Welch otherwise);
3. per metric, the means across sweep points with their confidence intervals as error bars;
4. per metric, convergence: the running mean and interval against the number of replications;
5. per stream, a fan chart over simulated time per sweep point (median, 50 % and 90 % bands).

matplotlib is an optional dependency: ``pip install "disco-data-logger[report]"``.
"""

from __future__ import annotations

import datetime as _dt
import html
import io
import math
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .._version import __version__
from ..errors import MetricError
from .fan import require_matplotlib

if TYPE_CHECKING:
    from .metrics import ExperimentView, MetricsArg

__all__ = ["build_report", "write_report", "require_matplotlib", "REPORT_NAME"]

REPORT_NAME = "report.html"
"""The default file name, inside the experiment directory."""

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


# -- charts ------------------------------------------------------------------------------------


class _Charts:
    """Figures rendered to inline SVG, each with unique ids inside the page."""

    def __init__(self) -> None:
        require_matplotlib()
        self.count = 0

    def figure(self, width: float = 7.0, height: float = 3.2, ncols: int = 1) -> Any:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, ncols, sharey=True, squeeze=False)[0]
        for ax in axes:
            ax.grid(True, color="#dddddd", linewidth=0.6)
            ax.set_axisbelow(True)
        return fig, list(axes)

    def svg(self, fig: Any, name: str, caption: str) -> str:
        import matplotlib

        self.count += 1
        buf = io.StringIO()
        # hashsalt: clip-path ids differ between the SVGs of one page
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"c{self.count}",
                                    "font.family": "sans-serif"}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        text = buf.getvalue()
        text = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", text)
        text = re.sub(r"^\s*<!DOCTYPE[^>]*>\s*", "", text)
        text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)  # RDF boilerplate
        return (f'<figure class="chart" data-chart="{html.escape(name)}">{text}'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _point_label(pid: str, params: dict[str, Any]) -> str:
    if not params:
        return str(pid)
    return f"{pid} (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def _numeric_axis(points: list[str], params: dict[str, dict[str, Any]]
                  ) -> tuple[str, list[float]] | None:
    """(parameter, x values) when the points differ in exactly one numeric parameter."""
    if not points or not params.get(points[0]):
        return None
    keys = list(params[points[0]])
    varying = [k for k in keys if len({repr(params[p].get(k)) for p in points}) > 1]
    if len(varying) != 1:
        return None
    key = varying[0]
    xs = [params[p].get(key) for p in points]
    if all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
        return key, [float(x) for x in xs if isinstance(x, int | float)]
    return None


def _metric_chart(charts: _Charts, name: str, summary: pa.Table, confidence: float) -> str:
    rows = summary.filter(pa.compute.equal(summary["metric"], name))
    points = rows["point_id"].to_pylist()
    params = _params_of(rows)
    mean = np.array([np.nan if v is None else v for v in rows["mean"].to_pylist()])
    hw = np.array([np.nan if v is None else v for v in rows["half_width"].to_pylist()])
    fig, (ax,) = charts.figure(width=6.0, height=3.0)
    axis = _numeric_axis(points, params)
    if axis is not None:
        key, xs = axis
        ax.errorbar(xs, mean, yerr=np.nan_to_num(hw), fmt="o-", color=_COLORS[0], capsize=4)
        ax.set_xlabel(key)
    else:
        xs = list(range(len(points)))
        ax.errorbar(xs, mean, yerr=np.nan_to_num(hw), fmt="o", color=_COLORS[0], capsize=4)
        ax.set_xticks(xs, [_point_label(p, params[p]).replace(" (", "\n(") for p in points],
                      fontsize="small")
        ax.set_xlabel("sweep point")
    ax.set_ylabel(name)
    ax.set_title(f"{name}: mean and {confidence:.0%} confidence interval per sweep point",
                 fontsize="medium")
    return charts.svg(fig, f"metric-{name}",
                      f"{name} across sweep points; error bars: {confidence:.0%} Student-t "
                      "confidence intervals")


def _convergence_chart(charts: _Charts, name: str, table: pa.Table, confidence: float) -> str:
    from .statistics import running_intervals

    fig, (ax,) = charts.figure(width=6.0, height=3.0)
    pids = table["point_id"].to_pylist()
    column = np.asarray(table[name].to_numpy(zero_copy_only=False), dtype=np.float64)
    reps = np.asarray(table["replication"].to_numpy(zero_copy_only=False), dtype=np.float64)
    pid_arr = np.asarray(pids, dtype=object)
    for k, pid in enumerate(dict.fromkeys(pids)):
        rows = np.nonzero(pid_arr == pid)[0]
        rows = rows[np.argsort(reps[rows], kind="stable")]
        run = running_intervals(column[rows], confidence)
        if run["n"].size == 0:
            continue
        color = _COLORS[k % len(_COLORS)]
        ax.plot(run["n"], run["mean"], color=color, linewidth=1.2, label=str(pid))
        ok = np.isfinite(run["half_width"])
        ax.fill_between(run["n"][ok], (run["mean"] - run["half_width"])[ok],
                        (run["mean"] + run["half_width"])[ok], color=color, alpha=0.2,
                        linewidth=0)
    ax.set_xlabel("replications")
    ax.set_ylabel(name)
    ax.set_title(f"{name}: running mean and {confidence:.0%} interval", fontsize="medium")
    ax.legend(fontsize="small")
    return charts.svg(fig, f"convergence-{name}",
                      f"Convergence of {name}: the mean of the first n replications (in "
                      f"replication order) and its {confidence:.0%} confidence interval")


def _fan_chart(charts: _Charts, stream: str, fan: pa.Table) -> str:
    from .fan import BANDS

    pids = list(dict.fromkeys(fan["point_id"].to_pylist()))
    params = _params_of(fan)
    ncols = max(len(pids), 1)
    fig, axes = charts.figure(width=min(3.2 * ncols + 1.0, 12.0), height=2.8, ncols=ncols)
    pid_arr = np.asarray(fan["point_id"].to_pylist(), dtype=object)
    epoch = np.asarray(fan["epoch"].to_numpy(zero_copy_only=False))
    bands = {b: np.asarray(fan[b].to_numpy(zero_copy_only=False)) for b in BANDS}
    for k, (ax, pid) in enumerate(zip(axes, pids, strict=False)):
        rows = pid_arr == pid
        color = _COLORS[k % len(_COLORS)]
        e = epoch[rows]
        ax.fill_between(e, bands["low90"][rows], bands["high90"][rows], color=color,
                        alpha=0.15, linewidth=0, label="90 %")
        ax.fill_between(e, bands["low50"][rows], bands["high50"][rows], color=color,
                        alpha=0.35, linewidth=0, label="50 %")
        ax.plot(e, bands["median"][rows], color=color, linewidth=1.0, label="median")
        ax.set_title(_point_label(pid, params.get(pid, {})), fontsize="small")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel(f"{stream} (sum over entities)")
    axes[0].legend(fontsize="x-small", loc="best")
    return charts.svg(fig, f"fan-{stream}",
                      f"Stream {stream}: median and 50 % / 90 % bands across replications of its "
                      "entity sum over simulated time, per sweep point")


def _params_of(table: pa.Table) -> dict[str, dict[str, Any]]:
    skip = {"metric", "point_id", "epoch", "n", "mean", "sd", "se", "half_width", "ci_low",
            "ci_high", "missing", "low90", "low50", "median", "high50", "high90"}
    keys = [c for c in table.column_names if c not in skip]
    out: dict[str, dict[str, Any]] = {}
    cols = {k: table[k].to_pylist() for k in keys}
    for i, pid in enumerate(table["point_id"].to_pylist()):
        if pid not in out:
            out[pid] = {k: cols[k][i] for k in keys}
    return out


# -- tables and page ---------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary_section(summary: pa.Table, confidence: float) -> str:
    params = [c for c in summary.column_names if c not in (
        "metric", "point_id", "n", "mean", "sd", "se", "half_width", "ci_low", "ci_high",
        "missing")]
    headers = ["metric", "point", *params, "n", "mean", f"± ({confidence:.0%})", "CI low",
               "CI high", "sd", "missing"]
    d = summary.to_pydict()
    rows = [[d["metric"][i], d["point_id"][i], *[str(d[p][i]) for p in params], d["n"][i],
             d["mean"][i], d["half_width"][i], d["ci_low"][i], d["ci_high"][i], d["sd"][i],
             d["missing"][i]] for i in range(summary.num_rows)]
    return _table(headers, rows, "numbers")


def _compare_section(compare: pa.Table, confidence: float) -> str:
    from .summary import verdict

    if compare.num_rows == 0:
        return "<p>Only one sweep point: nothing to compare.</p>"
    params = [c for c in compare.column_names if c not in (
        "metric", "point_id", "reference", "method", "n", "n_reference", "difference", "se",
        "df", "half_width", "ci_low", "ci_high", "p_value")]
    d = compare.to_pydict()
    rows = []
    for i in range(compare.num_rows):
        lo, hi = d["ci_low"][i], d["ci_high"][i]
        rows.append([d["metric"][i], d["point_id"][i], *[str(d[p][i]) for p in params],
                     d["reference"][i], d["method"][i], d["n"][i], d["difference"][i],
                     d["half_width"][i], lo, hi, verdict(lo, hi)])
    headers = ["metric", "point", *params, "minus", "method", "n", "difference",
               f"± ({confidence:.0%})", "CI low", "CI high", "verdict"]
    note = (compare.schema.metadata or {}).get(b"disco.note")
    text = f'<p class="note">{html.escape(note.decode())}</p>' if note else ""
    return text + _table(headers, rows, "numbers")


def _provenance(exp: ExperimentView) -> str:
    import yaml

    info = exp.info
    totals = info.get("totals", {})
    exp_name = info.get("experiment") or {}
    versions = dict(info.get("versions") or {})
    rows = [
        ("experiment", "/".join(str(exp_name.get(k, "?")) for k in
                                ("organisation", "model", "name")) if exp_name else "–"),
        ("output", str(exp.path)),
        ("state", info.get("state") or "–"),
        ("replications", f"{totals.get('committed', '?')} committed, "
                         f"{totals.get('failed', '?')} failed, {totals.get('pending', '?')} "
                         "pending"),
        ("streams / records", f"{totals.get('streams', '?')} / {totals.get('records', '?')}"),
        ("fingerprint", info.get("fingerprint") or "–"),
        ("config file", info.get("config_path") or "–"),
        ("overrides", " ".join(info.get("overrides") or []) or "–"),
        ("git commit", info.get("git_commit") or "–"),
        ("host", f"{info.get('host') or '–'} ({info.get('platform') or '–'})"),
        ("versions (run)", ", ".join(f"{k} {v}" for k, v in versions.items()) or "–"),
        ("created / updated", f"{info.get('created') or '–'} / {info.get('updated') or '–'}"),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    runs = info.get("runs") or []
    run_rows = [[r.get("started"), r.get("finished"), r.get("state"), r.get("backend"),
                 r.get("workers"), r.get("committed"), r.get("wall_seconds")] for r in runs]
    config = info.get("config")
    config_html = ""
    if config:
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        config_html = (f"<details><summary>config ({len(text.splitlines())} lines)</summary>"
                       f"<pre>{html.escape(text)}</pre></details>")
    runs_html = _table(["started", "finished", "state", "backend", "workers", "committed",
                        "seconds"], run_rows) if run_rows else ""
    return f'<table class="kv">{body}</table>{config_html}{runs_html}'


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid
#ccc; } table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
table.numbers td { text-align: right; font-variant-numeric: tabular-nums; }
table.numbers td:first-child, table.numbers td:nth-child(2) { text-align: left; }
table.kv th { background: #f6f6f6; width: 12em; } thead th { background: #f0f0f0; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure.chart { margin: 1em 0; } figure.chart svg { max-width: 100%; height: auto; }
.grid figure.chart { flex: 1 1 520px; max-width: 590px; }
figcaption { color: #555; font-size: 0.85em; } .note { color: #8a5a00; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .muted { color: #777; }
"""


def build_report(exp: ExperimentView, *, metrics: MetricsArg = None, confidence: float = 0.95,
                 reference: Any = None, max_epochs: int = 300) -> str:
    """The report of ``exp`` as one HTML string (see the module docstring)."""
    from .metrics import experiment_config, stream_names
    from .statistics import check_confidence
    from .summary import compare_table, resolve_point, summary_table

    check_confidence(confidence)
    charts = _Charts()
    cfg = experiment_config(exp)
    info = exp.info
    name = info.get("experiment") or {}
    title = "/".join(str(name.get(k, "?")) for k in ("organisation", "model", "name")) \
        if name else Path(exp.path).name
    sections: list[str] = []
    sections.append(f"<h2>Provenance</h2>{_provenance(exp)}")

    table: pa.Table | None = None
    try:
        table = exp.metrics(metrics)
    except MetricError as exc:
        if metrics is not None:
            raise
        sections.append(f"<h2>Metrics</h2><p class='note'>{html.escape(str(exc))}</p>")
    if table is not None:
        summary = summary_table(table, confidence)
        names = [m for m in dict.fromkeys(summary["metric"].to_pylist())]
        sections.append(f"<h2>Summary</h2><p>One value per replication and metric; mean and "
                        f"Student-t {confidence:.0%} confidence interval per sweep point "
                        f"({table.num_rows} replications).</p>"
                        + _summary_section(summary, confidence))
        points = list(dict.fromkeys(table["point_id"].to_pylist()))
        if len(points) > 1:
            ref = resolve_point(reference if reference is not None else points[0], table)
            paired = cfg is not None and cfg.seeding == "common"
            compare = compare_table(table, ref, paired=paired, confidence=confidence)
            sections.append(f"<h2>Differences against {html.escape(ref)}</h2>"
                            + _compare_section(compare, confidence))
        sections.append("<h2>Metrics across sweep points</h2><div class='grid'>"
                        + "".join(_metric_chart(charts, m, summary, confidence) for m in names)
                        + "</div>")
        sections.append("<h2>Convergence</h2><div class='grid'>"
                        + "".join(_convergence_chart(charts, m, table, confidence)
                                  for m in names) + "</div>")
    streams = stream_names(exp)
    fans = [_fan_chart(charts, s, exp.fan(s, max_epochs=max_epochs)) for s in streams]
    sections.append("<h2>Streams over simulated time</h2>"
                    + ("".join(fans) if fans else "<p>No streams with a stream label.</p>"))

    import matplotlib

    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    footer = (f"<p class='muted'>Generated {html.escape(generated)} by disco-data-logger "
              f"{html.escape(__version__)} (matplotlib {html.escape(matplotlib.__version__)}, "
              f"Python {html.escape(platform.python_version())}).</p>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}: experiment report</title>"
            f"<style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class='muted'>Experiment report of "
            f"{html.escape(str(exp.path))}</p>" + "".join(sections) + footer
            + "</body></html>\n")


def write_report(exp: ExperimentView, out: str | os.PathLike[str] | None = None, *,
                 metrics: MetricsArg = None, confidence: float = 0.95,
                 reference: Any = None) -> Path:
    """Write the report of an opened experiment (``Experiment.open(path)``) to ``out`` (default
    ``<path>/report.html``), atomically; returns the file written."""
    require_matplotlib()
    target = Path(out) if out is not None else Path(exp.path) / REPORT_NAME
    text = build_report(exp, metrics=metrics, confidence=confidence, reference=reference)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:  # never follows an existing file or link
            fh.write(text)
        os.replace(tmp, target)  # replaces a link at target itself, never its destination
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return target
