"""Faults on the cluster: a job cancelled while it runs, and a job asking for a GPU the cluster has not.

Each test works in a results folder of its own (the DAG's trained model copied in, its data folder
read), so the DAG's folder stays as its run left it.
"""

from __future__ import annotations

import shutil
import time

import pytest
from compare import normalised_json
from runs import CI_PROFILE, rule_of, slurm_run_id, snakemake, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # the DAG may run in the first test's set-up

EVAL = "eval/synthetic/seg-t-demo/none/dense"


def results_with_model(ci_dag, name: str):
    """A fresh results folder holding the DAG's trained demo model (times kept: nothing retrains it)."""
    results = ci_dag.root / name / "results"
    shutil.copytree(ci_dag.results / "models", results / "models", copy_function=shutil.copy2)
    return results


def wait_for(what: str, check, proc, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"snakemake exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.5)


def test_cancelled_job_fails_the_run_naming_rule_and_job_and_the_rerun_completes(ci_dag, slurm_cluster):
    results = results_with_model(ci_dag, "cancel")
    config = write_config(ci_dag.root / "cancel" / "ci.yaml", ci_dag.data, results)
    target, log = results / f"{EVAL}.json", results / "logs" / f"{EVAL}.log"
    args = [str(target), "--profile", CI_PROFILE, "--configfile", str(config)]
    run_log = ci_dag.root / "cancel" / "run.log"
    proc, out = snakemake(args, ci_dag.env, log=run_log, background=True)
    try:
        def running_job():  # the rule's command has started inside its SLURM job
            text = run_log.read_text()
            if "SLURM run ID:" not in text or not log.exists():
                return None
            run_id = slurm_run_id(text)
            jobs = [j["JobId"] for j in slurm_cluster.all_jobs()
                    if j["JobName"] == run_id and j["JobState"] == "RUNNING" and rule_of(j) == "evaluate"]
            return jobs[0] if jobs else None

        job_id = wait_for("running evaluate job", running_job, proc)
        slurm_cluster.scancel(job_id)
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
    output = run_log.read_text()
    assert rc != 0
    assert "Error in rule evaluate" in output
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in output
    assert f"external_jobid: {job_id}" in output
    left = list(target.parent.iterdir()) if target.parent.exists() else []
    assert not target.exists() and left == []  # no output, no half-written file beside it
    slurm_cluster.kill_escaped(job_id)  # a process of the job that outlived scancel (proctrack/linuxproc)
    assert not target.exists()

    rerun = snakemake(args, ci_dag.env, log=ci_dag.root / "cancel" / "rerun.log")
    assert rerun.returncode == 0, rerun.output[-3000:]
    roots = {"results": results, "data": ci_dag.data}
    assert normalised_json(target, roots) == normalised_json(ci_dag.results / f"{EVAL}.json",
                                                             {"results": ci_dag.results, "data": ci_dag.data})


def test_job_asking_for_a_gpu_fails_at_submission_naming_the_resource(ci_dag, slurm_cluster):
    results = results_with_model(ci_dag, "gpu")
    config = write_config(ci_dag.root / "gpu" / "ci.yaml", ci_dag.data, results, evaluation__device="cuda")
    target = results / f"{EVAL}.json"
    run = snakemake([str(target), "--profile", CI_PROFILE, "--configfile", str(config)], ci_dag.env,
                    log=ci_dag.root / "gpu" / "run.log", timeout=600)  # pending forever would time out here
    assert run.returncode != 0
    assert "Error in rule evaluate" in run.output
    assert "SLURM sbatch failed" in run.output
    assert "Invalid generic resource (gres) specification" in run.output and "--gpus=1" in run.output
    assert not target.exists()
    assert slurm_cluster.jobs() == []  # nothing was left waiting in the queue
