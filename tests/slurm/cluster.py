"""A real one-node SLURM cluster on this host, for tests: munged + slurmctld + slurmd, all under one folder.

Debian's ``slurm-wlm`` and ``munge`` packages (``apt-get install -y slurm-wlm munge``) are all it
needs: the daemons run in the foreground as children of this process, on free 127.0.0.1 ports,
with their configuration, munge key, state, spool and logs under ``root``. No accounting
database (``sacct`` has nothing behind it: the SLURM executor plugin queries ``squeue``), no
cgroups (``proctrack/linuxproc``, ``task/none``), no GRES (so a job asking for a GPU is refused).
Clients find the cluster through ``SLURM_CONF`` (:meth:`SlurmCluster.env`).

    eval "$(python tests/slurm/cluster.py start /tmp/mpm-slurm)"   # export SLURM_CONF=... PATH=...
    python tests/slurm/cluster.py stop /tmp/mpm-slurm

(the ``start`` command keeps the daemons running in the background; ``stop`` stops them by the
pids recorded under the folder and removes it).
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: the programs a cluster needs (daemons and the clients the executor plugin calls)
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol")
#: the Debian packages that provide them
PACKAGES = ("slurm-wlm", "munge")
NODE = "mpm-ci-node"
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def which(name: str) -> str | None:
    """``name`` on PATH or in the sbin folders (daemons live there; PATH may not list them)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    """The cluster did not come up (the message names the daemon and the end of its log)."""


@dataclass
class SlurmCluster:
    """One node (``mpm-ci-node``, ``cpus`` CPUs, ``memory_mb`` MB) in one partition (``partition``)."""

    root: Path
    cpus: int = 2
    memory_mb: int = 8000
    partition: str = "ci"
    #: seconds a finished job stays visible to squeue/scontrol (the plugin's squeue status needs >= 3x its poll)
    min_job_age_s: int = 3600
    max_time_min: int = 60
    #: ``"h100:1"``: the node declares that many GPUs of that type, backed by /dev/null (no device:
    #: for testing what SLURM accepts, never for running CUDA). None: no GRES at all (the default)
    fake_gpus: str | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()

    # -- paths ------------------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    def log(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, snakemake's executor) needs to reach this cluster.

        ``PATH`` starts with :attr:`bin`, whose ``srun`` sets ``SLURM_CONF`` and runs the real one:
        snakemake-executor-plugin-slurm-jobstep (0.6.1) removes ``SLURM_CONF`` from the environment of
        the ``srun`` it starts inside each job, and this cluster's configuration is not in /etc/slurm.
        """
        return {"SLURM_CONF": str(self.conf), "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    # -- configuration ----------------------------------------------------------------------------------
    def write_config(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "run", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != self.bin)
        real_srun = shutil.which("srun", path=path) or "/usr/bin/srun"
        srun = self.bin / "srun"
        srun.write_text(f"#!/bin/sh\nSLURM_CONF={shlex.quote(str(self.conf))} exec {shlex.quote(real_srun)} \"$@\"\n")
        srun.chmod(0o755)
        os.chmod(self.root, 0o700)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "etc" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        user = getpass.getuser()
        host = socket.gethostname().split(".")[0]
        (self.root / "etc" / "plugstack.conf").write_text("")
        lines = {
            "ClusterName": "mpmci",
            "SlurmctldHost": f"{host}(127.0.0.1)",
            "SlurmctldPort": _free_port(),
            "SlurmdPort": _free_port(),
            "SlurmUser": user,
            "SlurmdUser": user,
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "StateSaveLocation": self.root / "state",
            "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.root / "run" / "slurmctld.pid",
            "SlurmdPidFile": self.root / "run" / "slurmd.pid",
            "SlurmctldLogFile": self.log("slurmctld"),
            "SlurmdLogFile": self.log("slurmd"),
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "PlugStackConfig": self.root / "etc" / "plugstack.conf",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "MpiDefault": "none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "SchedulerType": "sched/backfill",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "ReturnToService": 2,
            "EnforcePartLimits": "ALL",  # a job over a partition's limits is refused at submission, not left pending
            "MinJobAge": self.min_job_age_s,
            "InactiveLimit": 0,
            "KillWait": 5,
            "SlurmdParameters": "config_overrides",  # the declared CPUs/memory, whatever the host reports
        }
        gres = ""
        if self.fake_gpus:
            gpu_type, count = self.fake_gpus.split(":")
            lines["GresTypes"] = "gpu"
            gres = f" Gres=gpu:{gpu_type}:{count}"
            (self.conf.parent / "gres.conf").write_text(
                f"AutoDetect=off\nNodeName={NODE} Name=gpu Type={gpu_type} File=/dev/null Count={count}\n")
        text = "".join(f"{k}={v}\n" for k, v in lines.items())
        text += (f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb}{gres} State=UNKNOWN\n"
                 f"PartitionName={self.partition} Nodes={NODE} Default=YES MaxTime={self.max_time_min} State=UP\n")
        self.conf.write_text(text)

    # -- daemons ----------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 - the child keeps its copy
        try:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env={**os.environ, **self.env()}, start_new_session=True)
        finally:
            out.close()
        (self.root / "run" / f"{name}.child").write_text(str(self.procs[name].pid))

    def _tail(self, name: str) -> str:
        text = ""
        for path in (self.log(name), self.root / "log" / f"{name}.stdout"):
            if path.exists():
                text += path.read_text(errors="replace")[-1500:]
        return text.strip()

    def _wait(self, name: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ClusterError(f"{name} exited with {proc.returncode}:\n{self._tail(name)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} not ready after {timeout:.0f} s:\n{self._tail(name)}")
            time.sleep(0.2)

    def start(self, timeout: float = 90.0) -> "SlurmCluster":
        """Write the configuration, start the three daemons and wait until the node is idle."""
        missing = missing_binaries()
        if missing:
            raise ClusterError(f"missing {', '.join(missing)} (apt-get install -y {' '.join(PACKAGES)})")
        self.write_config()
        try:
            self._spawn("munged", [which("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                                   f"--key-file={self.root / 'etc' / 'munge.key'}",
                                   f"--pid-file={self.root / 'run' / 'munged.pid'}",
                                   f"--seed-file={self.root / 'run' / 'munged.seed'}",
                                   f"--log-file={self.log('munged')}"])
            self._wait("munged", self.munge_socket.exists, timeout)
            self._spawn("slurmctld", [which("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)])
            self._wait("slurmctld", lambda: self._run(["scontrol", "ping"]).stdout.count("UP") > 0, timeout)
            self._spawn("slurmd", [which("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
            self._wait("slurmd", lambda: self.node_state() == "idle", timeout)
        except BaseException:
            self.stop(remove=False)
            raise
        return self

    def _run(self, argv: list[str], check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([which(argv[0]) or argv[0], *argv[1:]], capture_output=True, text=True, check=check,
                              env={**os.environ, **self.env()}, timeout=timeout)

    def node_state(self) -> str:
        out = self._run(["sinfo", "-h", "-n", NODE, "-o", "%T"]).stdout.strip()
        return out.rstrip("*~#$@+").lower()

    def jobs(self) -> list[str]:
        """Ids of the jobs the controller still lists as pending or running."""
        out = self._run(["squeue", "-h", "-o", "%i", "--states=PENDING,RUNNING,CONFIGURING,COMPLETING"]).stdout
        return out.split()

    def scancel(self, job_id: str | int) -> None:
        self._run(["scancel", str(job_id)], check=True)

    def kill_escaped(self, job_id: str | int | None = None) -> int:
        """Stop what is left of a finished or cancelled job (all jobs: ``None``); see :func:`_job_processes`."""
        return _kill_escaped_job_processes(self.conf, str(job_id) if job_id is not None else None)

    def job(self, job_id: str | int) -> dict[str, str]:
        """``scontrol show job`` of one job as a dict (JobState, StartTime, EndTime, NodeList, Partition...)."""
        out = self._run(["scontrol", "show", "job", "-o", str(job_id)], check=True).stdout
        fields: dict[str, str] = {}
        for item in out.split():
            if "=" in item:
                key, value = item.split("=", 1)
                fields.setdefault(key, value)
        return fields

    def all_jobs(self) -> list[dict[str, str]]:
        """Every job the controller still remembers (finished ones for ``min_job_age_s``)."""
        out = self._run(["scontrol", "show", "job", "-o"]).stdout
        jobs = []
        for line in out.splitlines():
            fields: dict[str, str] = {}
            for item in line.split():
                if "=" in item:
                    key, value = item.split("=", 1)
                    fields.setdefault(key, value)
            if "JobId" in fields:
                jobs.append(fields)
        return jobs

    def stop(self, remove: bool = True, timeout: float = 30.0) -> None:
        """Cancel every job, stop the daemons (slurmd, slurmctld, munged) and remove ``root``."""
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            self._run(["scancel", "--full", "--user", getpass.getuser()])
            deadline = time.monotonic() + timeout
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                _terminate(proc, timeout)
        _kill_escaped_job_processes(self.conf)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def _job_processes(conf: Path, job_id: str | None = None) -> list[int]:
    """Processes of this cluster's jobs still alive: their environment names this cluster's
    configuration and a SLURM job id. (``proctrack/linuxproc`` follows a job by parent process, so a
    process whose parent died before it, e.g. the snakemake of a cancelled job step, escapes scancel.)"""
    marker = f"SLURM_CONF={conf}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        job = f"SLURM_JOB_ID={job_id}".encode() if job_id else None
        if marker in env and (job in env if job else any(v.startswith(b"SLURM_JOB_ID=") for v in env)):
            pids.append(int(entry.name))
    return pids


def _kill_escaped_job_processes(conf: Path, job_id: str | None = None, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL, the processes :func:`_job_processes` finds; return how many there were."""
    found = 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _job_processes(conf, job_id)
        found = found or len(pids)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
            time.sleep(0.2)
        if not pids:
            break
    return found


def _terminate(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _stop_recorded(root: Path) -> None:
    """Stop daemons started by ``cluster.py start`` in another process (pids under ``root/run``)."""
    cluster = SlurmCluster(root)
    if (root / "run" / "slurmctld.child").exists():
        cluster._run(["scancel", "--full", "--user", getpass.getuser()])
        deadline = time.monotonic() + 30
        while cluster.jobs() and time.monotonic() < deadline:
            time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = root / "run" / f"{name}.child"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    _kill_escaped_job_processes(cluster.conf)
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm/cluster.py start|stop DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).absolute()
    if argv[0] == "stop":
        _stop_recorded(root)
        return 0
    try:
        cluster = SlurmCluster(root).start()
    except ClusterError as err:
        print(f"slurm cluster under {root}: {err}", file=sys.stderr)
        return 1
    (root / "run" / "cluster.json").write_text(json.dumps({"pids": {n: p.pid for n, p in cluster.procs.items()},
                                                         **cluster.env()}))
    print(f"export SLURM_CONF={shlex.quote(str(cluster.conf))} PATH={shlex.quote(str(cluster.bin))}:\"$PATH\"")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
