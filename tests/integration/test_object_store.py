"""Experiments in object storage, end to end, against a real S3 server on 127.0.0.1 (moto).

The default demo (configs/demo.yaml, fewer replications) runs into ``s3://`` on the serial and
multiprocessing backends (the Ray backend runs it on a two-node cluster in
test_ray_cluster.py), and its records must equal those of the same config run into a local
directory: the oracle. Then every command reads the URI; a killed worker, a killed run and a
store that drops requests must all end with every replication committed exactly once; bad URIs
and missing credentials are one line before any work starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers import SORT_KEY, decoded, run, statuses

from disco_data_logger.sharding import Experiment
from disco_data_logger.sharding.index import ExperimentIndex
from tests.s3_server import S3Proxy

pytestmark = pytest.mark.s3

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"
DEMO_REPLICATIONS = "replications=3"
DUCKDB_HTTPFS = REPO / "build" / "duckdb-httpfs"


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "disco_data_logger", *args], capture_output=True,
                          text=True, timeout=timeout, env=env if env is not None else
                          dict(os.environ))


@pytest.fixture(scope="module")
def demo_oracle(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The demo's records run into a local directory (serial: the simplest path)."""
    out = tmp_path_factory.mktemp("demo-local") / "out"
    result = run(DEMO, f"output={out}", DEMO_REPLICATIONS, "execution.backend=serial")
    assert result.state == "complete"
    return decoded(out)


def _no_running_scratch(tmp: Path) -> None:
    leftovers = [p for p in (tmp / "disco-scratch").rglob("*") if p.is_file()] \
        if (tmp / "disco-scratch").exists() else []
    assert leftovers == [], "a closed worker left staged files behind"


@pytest.mark.parametrize("backend", ["multiprocessing", "serial"])
def test_demo_into_s3_equals_the_local_run(s3: Any, demo_oracle: pa.Table, backend: str,
                                           tmp_path: Path) -> None:
    uri = s3.uri(f"demo-{backend}")
    result = run(DEMO, f"output={uri}", DEMO_REPLICATIONS, f"execution.backend={backend}",
                 "execution.workers=2")
    assert result.state == "complete" and result.output == uri
    assert result.committed == 6
    assert decoded(uri).equals(demo_oracle)
    assert set(statuses(uri).values()) == {"committed"}
    names = s3.objects(f"demo-{backend}")
    assert {"experiment.json", "index/state.json", "index/replications.parquet"} <= set(names)
    assert not any(n.startswith("run.") for n in names)  # the store lock went with the run
    info = json.loads(s3.server.filesystem().open_input_stream(
        f"{s3.bucket}/demo-{backend}/experiment.json").read())
    assert info["output"] == uri and info["totals"]["committed"] == 6
    assert "secret" not in json.dumps(info).lower()
    _no_running_scratch(tmp_path / "tmp")


def test_commands_on_a_uri(s3: Any, demo_oracle: pa.Table, tmp_path: Path) -> None:
    uri = s3.uri("demo")
    assert _cli("run", str(DEMO), f"output={uri}", DEMO_REPLICATIONS, "--no-progress",
                "execution.workers=2").returncode == 0
    inspect = _cli("inspect", uri)
    assert inspect.returncode == 0, inspect.stderr
    assert f"output             {uri}" in inspect.stdout
    assert "6 total: 6 committed, 0 failed, 0 pending" in inspect.stdout
    # A reader on another machine: an empty cache, and the index is found up to date.
    other = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "other-cache")}
    assert json.loads(_cli("inspect", uri, "--json", env=other).stdout)["streams"] == \
        demo_oracle.group_by(["task_id", "stream"]).aggregate([]).num_rows
    verify = _cli("verify", uri, env=other)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "all intact" in verify.stdout
    assert "--repair works on a directory only" in _cli("verify", uri, "--repair").stderr
    merged = _cli("merge", uri)
    assert merged.returncode == 0 and f"into {uri}/index" in merged.stdout

    exp = Experiment.open(uri)
    assert exp.location == uri and repr(exp).startswith(f"<Experiment {uri}:")
    stock = exp.select("stream=stock").sort_by(SORT_KEY)
    expected = demo_oracle.filter(pa.compute.equal(demo_oracle["stream"], "stock"))
    assert stock.equals(expected.select(stock.column_names))
    assert exp.summary().num_rows > 0

    out = f"{uri}-parquet"
    export = _cli("export", uri, "--parquet", out, "--select", "stream=demand")
    assert export.returncode == 0, export.stderr
    assert f"to {out}" in export.stdout
    refused = _cli("export", uri, "--parquet", f"{uri}/inside")
    assert refused.returncode == 2 and "lies inside the experiment" in refused.stderr
    again = _cli("export", uri, "--parquet", out)
    assert again.returncode == 1 and "exists and is not empty" in again.stderr
    demand = demo_oracle.filter(pa.compute.equal(demo_oracle["stream"], "demand"))
    total = pa.compute.sum(demand["value"]).as_py()

    import polars as pl

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    frame = pl.scan_parquet(f"{out}/**/*.parquet", hive_partitioning=True, storage_options={
        "aws_endpoint_url": endpoint, "aws_allow_http": "true", "aws_region": "us-east-1",
        "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"]}).collect()
    assert frame.height == demand.num_rows
    assert frame["value"].sum() == pytest.approx(total)
    assert sorted(frame["point_id"].unique().to_list()) == ["p0000", "p0001"]


def test_duckdb_reads_an_export_in_s3(s3: Any, make_config: Any) -> None:
    """DuckDB's own S3 reader (httpfs, from scripts/install-duckdb-httpfs.sh) reads an export."""
    uri = s3.uri("small")
    run(make_config(output=uri))
    export = Experiment.open(uri).export(f"{uri}-parquet", "stream=level")
    local = Experiment.open(uri).select("stream=level")
    _duckdb_reads(str(export), os.environ["AWS_ENDPOINT_URL"], local.num_rows,
                  pa.compute.sum(local["value"]).as_py())


def _duckdb_reads(out: str, endpoint: str, rows: int, total: float) -> None:
    if not (DUCKDB_HTTPFS / ".version").exists():
        if os.environ.get("DDL_REQUIRE_DUCKDB_S3") == "1":
            pytest.fail("DuckDB's httpfs is required here (DDL_REQUIRE_DUCKDB_S3=1): run "
                        "scripts/install-duckdb-httpfs.sh")
        pytest.skip("DuckDB's S3 reader is not installed: run scripts/install-duckdb-httpfs.sh")
    extension = next(DUCKDB_HTTPFS.rglob("httpfs.duckdb_extension"))
    code = f"""
import duckdb, sys
con = duckdb.connect()
con.execute("LOAD '{extension}'")
con.execute(\"\"\"CREATE SECRET (TYPE s3, KEY_ID '{os.environ["AWS_ACCESS_KEY_ID"]}',
    SECRET '{os.environ["AWS_SECRET_ACCESS_KEY"]}', REGION 'us-east-1',
    ENDPOINT '{endpoint.split("://", 1)[1]}', USE_SSL false, URL_STYLE 'path')\"\"\")
n, s, p = con.execute("SELECT count(*), sum(value), count(DISTINCT point_id) FROM "
    "read_parquet('{out}/**/*.parquet', hive_partitioning=true)").fetchone()
print(duckdb.__version__, n, repr(s), p)
"""
    env = {**os.environ, "PYTHONPATH": str(DUCKDB_HTTPFS)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    version, n, value, points = proc.stdout.split()
    assert version == (DUCKDB_HTTPFS / ".version").read_text().strip()
    assert int(n) == rows and float(value) == pytest.approx(total) and int(points) == 2


def test_killed_worker_into_s3_commits_every_replication_once(s3: Any, make_config: Any,
                                                              tmp_path: Path) -> None:
    uri = s3.uri("killed-worker")
    local = tmp_path / "local"
    run(make_config(output=local, entry_point="ddl_testmodels:steady"))
    result = run(make_config(output=uri, entry_point="ddl_testmodels:kill_once",
                             parameters={"crash_replications": [1]},
                             execution={"backend": "multiprocessing", "workers": 2}))
    assert result.state == "complete" and result.retried == 2  # one per sweep point
    assert set(statuses(uri).values()) == {"committed"}
    assert decoded(uri).equals(decoded(local))  # the dead attempts' records nowhere


def _commits(uri: str) -> int:
    try:
        return int(ExperimentIndex.build(uri).totals["committed"])
    except Exception:  # noqa: BLE001 - not an experiment yet
        return 0


def test_killed_run_resumes_into_s3_exactly_once(s3: Any, make_config: Any,
                                                 tmp_path: Path) -> None:
    uri = s3.uri("killed-run")
    local = tmp_path / "local"
    run(make_config(output=local, replications=6))
    config = make_config(output=uri, replications=6, parameters={"sleep": 0.3},
                         execution={"backend": "multiprocessing", "workers": 2})
    proc = subprocess.Popen([sys.executable, "-m", "disco_data_logger", "run", str(config),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while _commits(uri) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.kill()  # SIGKILL: no merge, no lock released, workers orphaned
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1.0)  # orphaned workers notice and close their shards
    done = _commits(uri)
    assert 2 <= done < 12
    result = run(config)
    assert any("took over the lock" in note for note in result.notes)
    assert result.resumed >= done and result.resumed + result.committed == 12
    assert set(statuses(uri).values()) == {"committed"}
    assert decoded(uri).equals(decoded(local))


def test_a_store_failing_requests_loses_and_duplicates_nothing(
        s3: Any, make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local"
    run(make_config(output=local, replications=4))

    def fault(n: int, method: str, path: str) -> str | None:
        if n % 5 == 0:
            return "drop" if n % 2 else "503"
        return None

    uri = s3.uri("faulty")
    with S3Proxy(s3.server.port, fault=fault) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        result = run(make_config(output=uri, replications=4,
                                 execution={"backend": "multiprocessing", "workers": 2}))
        assert proxy.stats.faults >= 10
        assert result.state == "complete" and not result.failed
        got = decoded(uri)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.server.endpoint)
    assert got.equals(decoded(local))
    index = ExperimentIndex.build(uri)
    assert index.totals["committed"] == 8 and index.totals["lost"] == 0


def test_bad_outputs_fail_in_one_line_before_any_work(s3: Any, tmp_path: Path) -> None:
    def refused(output: str, env: dict[str, str] | None = None) -> str:
        proc = _cli("run", str(DEMO), f"output={output}", "replications=1", "--no-progress",
                    env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("disco-data-logger: error: "), lines
        return lines[0]

    assert "not a valid bucket name" in refused("s3://Not_A_Bucket/x")
    assert "query strings" in refused(f"{s3.uri()}/x?region=eu")
    assert "does not exist; create the bucket first" in refused("s3://no-such-bucket/x")
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    bare.update(AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp_path),
                AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"])
    line = refused(s3.uri("nocreds"), env=bare)
    assert "no AWS credentials" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert s3.objects("") == {}  # nothing was written
    assert not (tmp_path / "tmp" / "disco-scratch").exists()
    inspect = _cli("inspect", s3.uri("nothing-here"))
    assert inspect.returncode == 2 and "not an experiment" in inspect.stderr
