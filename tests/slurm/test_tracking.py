"""16 jobs logging at once through the tracking server (``mpm track server``) lose nothing and duplicate nothing.

The loggers log the CI DAG's real results (``conftest.ci_dag``), each as a job of its own
(``--param load.logger=I`` is part of the job key), under a parent run created first (as the
workflow's onstart does), all released at the same instant from one launcher that imported MLflow
once and forked them (separate processes, own connections).
"""

from __future__ import annotations

import json
import subprocess
import sys

import forked_cli
import pytest
from runs import REPO, mpm_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # the DAG may run in the first test's set-up

N_LOGGERS = 16
EXPERIMENT = "mpm-ci-load"


def test_sixteen_concurrent_loggers_lose_and_duplicate_nothing(ci_dag, tracking_server, tmp_path):
    from mlflow.entities import ViewType

    from mpm.tracking import resolve_store

    url = tracking_server.url
    for step in (["init", "--uri", url, "--experiments", EXPERIMENT],  # as the workflow's onstart does,
                 ["parent", "--uri", url, "--experiment", EXPERIMENT, "--key", "load-test"]):  # before any job
        done = subprocess.run([sys.executable, "-m", "mpm.cli", "track", *step], cwd=REPO, env=mpm_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    results = sorted((ci_dag.results / "eval").rglob("*.json")) + sorted((ci_dag.results / "bench").rglob("*.json"))
    argvs = []
    for i in range(N_LOGGERS):
        argvs.append(["track", "log", str(results[i % len(results)]), "--uri", url, "--experiment", EXPERIMENT,
                      "--parent-key", "load-test", "--param", f"load.logger={i}",
                      "--done-file", str(tmp_path / f"{i}.json")])
    launcher = forked_cli.start(argvs, REPO, mpm_env(), barrier_s=300, join_s=900)
    stdout, stderr = launcher.communicate(timeout=1200)
    assert launcher.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1]) == [0] * len(argvs), stderr[-3000:]

    markers = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(N_LOGGERS)]
    client = resolve_store(url).client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "mpm.job_key" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("mpm.kind") == "pipeline"]
    assert len(children) == N_LOGGERS and len(runs) == N_LOGGERS + 1  # one run per job, plus the parent
    assert sorted(r.data.tags["mpm.job_key"] for r in children) == sorted(m["job_key"] for m in markers)
    assert len({m["job_key"] for m in markers}) == N_LOGGERS
    assert {r.info.run_id for r in children} == {m["run_id"] for m in markers}
    assert len(parents) == 1 and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    by_logger = {int(r.data.params["load.logger"]): r for r in children}
    for i, run in by_logger.items():
        assert run.info.status == "FINISHED"
        record = json.loads(results[i % len(results)].read_text())
        if record["schema"] == "mpm.bench/1":
            assert run.data.metrics["latency_median_ms"] == pytest.approx(record["timing"]["median_ms"])
        else:
            assert run.data.metrics["mIoU"] == pytest.approx(record["metrics"]["mIoU"])
    deleted = client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY, max_results=1000)
    assert deleted == []  # no logger made a second run of a job, not even one removed afterwards
