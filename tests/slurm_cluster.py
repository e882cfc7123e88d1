"""A real single-node SLURM cluster for the tests, started and stopped in a private directory.

Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them when missing). Everything lives
under one temporary directory: a munge key and socket, ``slurm.conf`` with ports of its own, the
controller's state, the node's spool and the logs, so the cluster touches nothing of the
machine's own configuration and several test sessions never meet. It needs root (the daemons run
as ``SlurmUser=root``), as in CI; :func:`unavailable` says why it cannot start elsewhere.

Clients (``sbatch``, ``squeue``, ``scancel``, submitit) find it through ``SLURM_CONF``, which
:attr:`SlurmCluster.env` carries.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return (f"SLURM is not installed (missing {', '.join(missing)}; "
                "apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        return "the test SLURM cluster runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plugin_dir() -> str:
    for candidate in ("/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/aarch64-linux-gnu/slurm-wlm",
                      "/usr/lib/slurm-wlm", "/usr/lib64/slurm", "/usr/lib/slurm"):
        if Path(candidate, "select_cons_tres.so").exists():
            return candidate
    raise RuntimeError("cannot find SLURM's plugin directory")


class SlurmCluster:
    """One controller and one node (this machine), oversubscribed so array tasks run together."""

    def __init__(self, root: Path, *, cpus: int | None = None, oversubscribe: int = 4) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.oversubscribe = oversubscribe
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge.socket"
        self.partition = "ddltest"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SlurmCluster:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(
            ["munged", "-f", f"--socket={self.socket}", f"--key-file={key}",
             f"--log-file={self.root / 'log' / 'munged.log'}",
             f"--pid-file={self.root / 'munged.pid'}", f"--seed-file={self.root / 'munged.seed'}"],
            check=True, capture_output=True, text=True)
        self.conf.write_text(self._config())
        subprocess.run(["slurmctld", "-f", str(self.conf), "-i"], check=True, env=self.env,
                       capture_output=True, text=True)
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=self.env,
                       capture_output=True, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True,
                                 text=True, check=False)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the test SLURM cluster did not come up in {timeout:g} s; logs in "
                           f"{self.root / 'log'}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root", "--full"], env=self.env, capture_output=True,
                       check=False)
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True, check=False)
        for pidfile in ("slurmd.pid", "slurmctld.pid"):
            self._kill(self.root / pidfile)
        subprocess.run(["munged", "--stop", f"--socket={self.socket}"], capture_output=True,
                       check=False)
        self._kill(self.root / "munged.pid")

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------

    def queue(self) -> list[str]:
        """Job ids (``123_4`` for array tasks) still pending or running."""
        out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True,
                             text=True, check=True)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def wait_idle(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queue():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued after {timeout:g} s: {self.queue()}")
            time.sleep(0.5)

    # -- internals -------------------------------------------------------------------------

    def _kill(self, pidfile: Path, timeout: float = 10.0) -> None:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _config(self) -> str:
        r = self.root
        return f"""\
ClusterName=ddltest
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
PluginDir={_plugin_dir()}
NodeName={self.host} CPUs={self.cpus} RealMemory=4000 State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP \
OverSubscribe=FORCE:{self.oversubscribe}
"""
