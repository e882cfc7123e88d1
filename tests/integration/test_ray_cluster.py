"""The Ray backend on a two-node Ray cluster on this machine, with the output in object storage.

``ray start --head`` and a second ``ray start --address=...`` with its own ``--temp-dir``, its
own temporary directory (``TMPDIR``, so its workers stage their shards in a directory the
coordinator never reads) and a custom resource, ``disco_node``, that places the actors on it
(``execution.ray_resources``). The output is ``s3://`` on the test's S3 server: no filesystem is
shared. The demo completes there; then the worker node's processes are stopped mid-run and the
run ends with every replication committed exactly once, by actors on the head node.

Both nodes, the S3 server and every process they started are stopped by the fixtures.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import decoded, run, statuses

from disco_data_logger.sharding.index import ExperimentIndex
from tests.s3_server import S3Server, free_port

pytestmark = [pytest.mark.ray_cluster, pytest.mark.s3]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"
RESOURCE = "disco_node"

# The head notices a lost node within seconds, not the default half minute.
_HEAD_ENV = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
             "RAY_health_check_failure_threshold": "3",
             "RAY_health_check_initial_delay_ms": "1000"}


def _processes_under(marker: str) -> list[int]:
    """Pids of the processes whose command line names ``marker`` (a node's temp dir: its raylet
    and agents), and of all their descendants (the node's workers, which rename themselves)."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if marker in cmdline:
            found.add(pid)
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        grew = bool(children)
        found |= children
    return sorted(found)


def _kill_all(marker: str) -> None:
    for _ in range(20):
        pids = _processes_under(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


class TwoNodeCluster:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray's socket paths live under --temp-dir and may not exceed 107 bytes: a short one.
        self.ray_root = Path(tempfile.mkdtemp(prefix="ddl-ray-", dir="/tmp"))
        self.head_tmp = self.ray_root / "head"
        self.worker_tmp = self.ray_root / "worker"
        self.head_scratch = root / "head-tmp"
        self.worker_scratch = root / "worker-tmp"
        for d in (self.head_tmp, self.worker_tmp, self.head_scratch, self.worker_scratch):
            d.mkdir(parents=True)
        self.env = {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def _ray(self, *args: str, env: dict[str, str]) -> None:
        proc = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args],
                              capture_output=True, text=True, timeout=180, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def start(self) -> None:
        self._ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                  "--num-cpus=2", f"--temp-dir={self.head_tmp}", "--include-dashboard=false",
                  "--disable-usage-stats",
                  env={**self.env, **_HEAD_ENV, "TMPDIR": str(self.head_scratch)})
        self.start_worker()

    def start_worker(self) -> None:
        self._ray("start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                  "--num-cpus=2", f"--resources={{\"{RESOURCE}\": 2}}",
                  f"--temp-dir={self.worker_tmp}",
                  env={**self.env, "TMPDIR": str(self.worker_scratch)})

    def stop_worker_node(self) -> None:
        """Every process of the worker node, killed (its raylet, agents and actors)."""
        _kill_all(str(self.worker_tmp))

    def stop(self) -> None:
        _kill_all(str(self.worker_tmp))
        _kill_all(str(self.head_tmp))
        shutil.rmtree(self.ray_root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_env(s3_server: S3Server) -> Iterator[dict[str, str]]:
    env = {**os.environ, **S3Server.environment(s3_server.endpoint)}
    yield env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            s3_env: dict[str, str]) -> Iterator[TwoNodeCluster]:
    pytest.importorskip("ray")
    here = str(Path(__file__).resolve().parent)
    env = {**s3_env, "PYTHONPATH": os.pathsep.join(
        [here, str(REPO), *[p for p in s3_env.get("PYTHONPATH", "").split(os.pathsep) if p]])}
    nodes = TwoNodeCluster(tmp_path_factory.mktemp("cluster"), env)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def _run_cli(config_overrides: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "disco_data_logger", "run", str(DEMO),
                             *config_overrides, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _overrides(uri: str, cluster: TwoNodeCluster, replications: int) -> list[str]:
    return [f"output={uri}", f"replications={replications}", "execution.backend=ray",
            "execution.workers=2", f"execution.ray_address={cluster.address}",
            f"execution.ray_resources={{{RESOURCE}: 1}}"]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    out = tmp_path_factory.mktemp("oracle") / "out"
    run(DEMO, f"output={out}", "replications=6", "execution.backend=serial")
    return decoded(out)


def _client_env(s3_env: dict[str, str], cluster: TwoNodeCluster, name: str) -> dict[str, str]:
    env = dict(cluster.env)
    env["XDG_CACHE_HOME"] = str(cluster.root / f"{name}-cache")
    env["TMPDIR"] = str(cluster.root / f"{name}-client-tmp")
    Path(env["TMPDIR"]).mkdir(exist_ok=True)
    return env


def _bucket(server: S3Server, name: str) -> str:
    server.create_bucket(name)
    return f"s3://{name}"


def test_demo_on_two_nodes_into_s3(cluster: TwoNodeCluster, s3_server: S3Server,
                                   s3_env: dict[str, str], oracle: pa.Table,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    uri = _bucket(s3_server, "ray-demo") + "/demo"
    env = _client_env(s3_env, cluster, "demo")
    proc = _run_cli(_overrides(uri, cluster, 6), env)
    staged_on_worker = False
    while proc.poll() is None:
        staged_on_worker |= any((cluster.worker_scratch / "disco-scratch").rglob("*.seg.zst")) \
            if (cluster.worker_scratch / "disco-scratch").exists() else False
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    assert "complete: 12/12 replications committed" in stdout
    assert staged_on_worker, "the actors did not stage on the worker node"
    assert not any((cluster.head_scratch / "disco-scratch").rglob("*.seg.zst")) \
        if (cluster.head_scratch / "disco-scratch").exists() else True
    for key, value in env.items():
        if key.startswith("AWS_") or key == "XDG_CACHE_HOME":
            monkeypatch.setenv(key, value)
    assert decoded(uri).equals(oracle)


def test_losing_the_worker_node_mid_run(cluster: TwoNodeCluster, s3_server: S3Server,
                                        s3_env: dict[str, str], oracle: pa.Table,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    uri = _bucket(s3_server, "ray-lost-node") + "/demo"
    env = _client_env(s3_env, cluster, "lost")
    for key, value in env.items():
        if key.startswith("AWS_") or key == "XDG_CACHE_HOME":
            monkeypatch.setenv(key, value)

    def committed() -> int:
        try:
            return int(ExperimentIndex.build(uri).totals["committed"])
        except Exception:  # noqa: BLE001 - nothing there yet
            return 0

    proc = _run_cli(_overrides(uri, cluster, 6), env)
    try:
        deadline = time.monotonic() + 180
        while committed() < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        cluster.stop_worker_node()
        # What the worker node staged is gone with it: the coordinator never needed it.
        shutil.rmtree(cluster.worker_scratch, ignore_errors=True)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    assert "complete: 12/12 replications committed" in stdout
    assert "no live Ray node offers execution.ray_resources" in stderr
    assert set(statuses(uri).values()) == {"committed"}
    assert decoded(uri).equals(oracle)  # every replication once, whichever node ran it
