"""Helpers of the SLURM tests: run snakemake from the repository root, write a CI config, environments."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CI_PROFILE = "workflow/profiles/slurm-ci"
DOC_PROFILE = "workflow/profiles/slurm"
#: seconds any one snakemake invocation may take before the test fails (a hang is a failure)
RUN_TIMEOUT_S = 1500


@dataclass
class Server:
    """A tracking server started by ``mpm track server --detach``."""

    url: str
    store: Path


def mpm_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the worktree's mpm first on PYTHONPATH and no tracking URI of the caller's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.pop("MPM_TRACKING_URI", None)
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, data_root: Path, results: Path, **changes) -> Path:
    """config/ci.yaml with its data and results folders moved (and ``section__key=value`` changes).

    A config file, not ``--config``: ``--config`` on the command line replaces the profile's own
    ``config:`` (the tracking URI) instead of adding to it."""
    config = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    config["data_root"], config["results"] = str(data_root), str(results)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Run:
    """A finished snakemake invocation."""

    returncode: int
    output: str
    seconds: float


def snakemake(args: list[str], env: dict[str, str], log: Path | None = None, timeout: float = RUN_TIMEOUT_S,
              background: bool = False):
    """``snakemake ARGS`` from the repository root (the Snakefile is found there, wherever it lives)."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    if background:
        out = open(log, "w")  # noqa: SIM115 - closed by the caller through the process
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True), out
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    return Run(proc.returncode, output, time.monotonic() - t0)


def slurm_env(cluster, server: Server) -> dict[str, str]:
    return mpm_env({**cluster.env(), "MPM_TRACKING_URI": server.url})


@dataclass
class DagRun:
    """The CI DAG's run through the SLURM executor and the local run it is compared with."""

    root: Path
    config: Path
    data: Path
    results: Path
    local_data: Path
    local_results: Path
    run: Run
    env: dict[str, str]

    @property
    def slurm_run_id(self) -> str:
        return slurm_run_id(self.run.output)


def slurm_run_id(output: str) -> str:
    """The run id the SLURM executor names its jobs with (``--job-name``), from snakemake's output."""
    return re.search(r"SLURM run ID: (\S+)", output).group(1)


def rule_of(job: dict) -> str:
    """The rule a SLURM job ran: the executor's comment is ``rule_<name>[_wildcards_...]``."""
    m = re.match(r"^rule_(\w+?)(_wildcards_|$)", job.get("Comment", ""))
    return m.group(1) if m else ""


def memory_mb(text: str) -> float:
    """``scontrol``'s memory figures (``8000M``, ``62.50G``) in MB."""
    m = re.fullmatch(r"([\d.]+)([KMGT]?)", text)
    return float(m.group(1)) * {"K": 1 / 1024, "M": 1, "": 1, "G": 1024, "T": 1024 ** 2}[m.group(2)]
