"""Fixtures of the SLURM tests: a real one-node cluster, an MLflow tracking server, the CI DAG run through it.

The cluster (:mod:`cluster`: munged + slurmctld + slurmd on 127.0.0.1, state under a temporary
folder) is started once per session and stopped at the end. Without the SLURM programs every test
here is skipped, saying which are missing and how to install them.

``ci_dag`` runs the CI configuration (config/ci.yaml, in temporary folders) through
``workflow/profiles/slurm-ci`` once per session, and a local run of the same configuration to
compare against (or takes that one from ``$MPM_SLURM_LOCAL_RESULTS``: the results folder and data
root of a finished local run of config/ci.yaml, ``results-ci:data-ci``). Durations are printed at
the end of the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # cluster.py and the helpers beside this file

from cluster import PACKAGES, SlurmCluster, missing_binaries  # noqa: E402
from runs import (  # noqa: E402
    CI_PROFILE,
    REPO,
    DagRun,
    Server,
    free_port,
    mpm_env,
    slurm_env,
    slurm_run_id,
    snakemake,
    write_config,
)

#: lines printed at the end of the session (how long the SLURM runs took)
DURATIONS: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if DURATIONS:
        terminalreporter.section("SLURM runs")
        for line in DURATIONS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM is not installed: {', '.join(missing)} not found "
                    f"(apt-get install -y {' '.join(PACKAGES)})")
    root = Path(tmp_path_factory.mktemp("slurm", numbered=True))
    cluster = SlurmCluster(root / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """``mpm track server --detach`` on a fresh SQLite store; stopped with ``mpm track server --stop``."""
    store = Path(tmp_path_factory.mktemp("server", numbered=True)) / "mlruns"
    base = [sys.executable, "-m", "mpm.cli", "track", "server", "--uri", str(store)]
    proc = subprocess.run([*base, "--port", str(free_port()), "--detach"], cwd=REPO, env=mpm_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("export MPM_TRACKING_URI=")]
    try:
        yield Server(url=line.split("=", 1)[1], store=store)
    finally:
        subprocess.run([*base, "--stop"], cwd=REPO, env=mpm_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def ci_dag(slurm_cluster, tracking_server, tmp_path_factory) -> DagRun:
    """The CI DAG through the SLURM executor (and the local run it is compared with)."""
    root = Path(tmp_path_factory.mktemp("dag", numbered=True))
    given = os.environ.get("MPM_SLURM_LOCAL_RESULTS")
    if given:
        results, _, data = given.partition(":")
        local_results = (REPO / results).resolve()
        local_data = (REPO / (data or "data-ci")).resolve()
        if not (local_results / "tables" / "index.json").is_file():
            pytest.fail(f"MPM_SLURM_LOCAL_RESULTS={given}: {local_results} holds no finished run of config/ci.yaml")
    else:
        local_data, local_results = root / "local" / "data", root / "local" / "results"
        cfg = write_config(root / "local" / "ci.yaml", local_data, local_results)
        local = snakemake(["--cores", "2", "--configfile", str(cfg)], mpm_env(), log=root / "local.log")
        assert local.returncode == 0, local.output[-3000:]
        DURATIONS.append(f"local run of config/ci.yaml (reference): {local.seconds:.0f} s")
    data, results = root / "slurm" / "data", root / "slurm" / "results"
    cfg = write_config(root / "slurm" / "ci.yaml", data, results)
    env = slurm_env(slurm_cluster, tracking_server)
    run = snakemake(["--profile", CI_PROFILE, "--configfile", str(cfg)], env, log=root / "slurm.log")
    assert run.returncode == 0, run.output[-4000:]
    jobs = sum(j.get("JobName") == slurm_run_id(run.output) for j in slurm_cluster.all_jobs())
    DURATIONS.append(f"CI DAG through the SLURM executor ({CI_PROFILE}, {slurm_cluster.cpus}-CPU node): "
                     f"{run.seconds:.0f} s, {jobs} SLURM jobs")
    return DagRun(root=root, config=cfg, data=data, results=results, local_data=local_data,
                  local_results=local_results, run=run, env=env)
