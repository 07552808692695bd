"""The CI DAG through Snakemake's SLURM executor on a real one-node cluster (``conftest.ci_dag``).

Each job was a SLURM job of its rule, each timing ran inside an allocation and records it, no two
timings overlapped, the results equal those of a local run apart from timings, a second run has
nothing to do, and every job logged to the MLflow server (no SQLite file beside the results).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter

import pytest
from compare import differences
from runs import CI_PROFILE, rule_of, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # the DAG runs in the first test's set-up


def job_stats(output: str) -> Counter:
    """The ``Job stats`` table Snakemake prints before it runs: {rule: count}."""
    block = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = Counter()
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def dag_jobs(ci_dag, slurm_cluster) -> list[dict]:
    """The SLURM jobs of the DAG's run (the executor names them all with its run id)."""
    return [j for j in slurm_cluster.all_jobs() if j.get("JobName") == ci_dag.slurm_run_id]


def test_every_job_is_a_slurm_job_of_its_rule(ci_dag, slurm_cluster):
    jobs = dag_jobs(ci_dag, slurm_cluster)
    ran = Counter(rule_of(j) for j in jobs)
    planned = job_stats(ci_dag.run.output)
    planned.pop("all")  # the target rule has no command: Snakemake finishes it itself
    logged = planned.pop("track_result")  # a localrule: it logs to the server from the submit host
    assert ran == planned
    assert logged == len(list((ci_dag.results / "tracking").rglob("*.json")))
    assert "track_result" not in ran
    assert {j["JobState"] for j in jobs} == {"COMPLETED"}
    assert {j["Partition"] for j in jobs} == {slurm_cluster.partition}


def test_each_timing_ran_inside_an_allocation_and_none_overlapped(ci_dag, slurm_cluster):
    jobs = {j["JobId"]: j for j in dag_jobs(ci_dag, slurm_cluster)}
    benches = sorted((ci_dag.results / "bench").rglob("*.json"))
    assert len(benches) == 5  # config/ci.yaml: five method configurations at batch 1
    intervals = []
    for path in benches:
        record = json.loads(path.read_text())
        allocation = record["target"]["slurm"]
        job = jobs[allocation["job_id"]]
        assert rule_of(job) == "bench"
        *_, method, schedule, point = path.relative_to(ci_dag.results / "bench").with_suffix("").parts
        batch, backend, dtype, mode = re.match(r"bs(\d+)-([\w-]+)-(\w+)-(\w+)$", point).groups()
        assert job["Comment"].endswith(f"_{method}_{schedule}_{batch}_{backend}_{dtype}_{mode}"), job["Comment"]
        assert allocation["partition"] == job["Partition"] == slurm_cluster.partition
        assert allocation["node"] == job["NodeList"] == "mpm-ci-node"
        assert allocation["cpus_on_node"] == job["NumCPUs"]
        intervals.append((when(job["StartTime"]), when(job["EndTime"]), path.name))
    intervals.sort()
    for (_, end, first), (start, _, second) in zip(intervals, intervals[1:]):
        assert start >= end, f"{first} and {second} were timed at the same time"


def test_results_equal_the_local_run(ci_dag):
    assert differences(ci_dag.local_results, ci_dag.local_data, ci_dag.results, ci_dag.data) == []


def test_every_job_logged_to_the_tracking_server(ci_dag, tracking_server):
    from mpm.tracking import resolve_store

    markers = [json.loads(p.read_text()) for p in (ci_dag.results / "tracking").rglob("*.json")]
    assert len(markers) == 10  # five evaluations, five timings
    assert {m["tracking_uri"] for m in markers} == {tracking_server.url}
    assert not (ci_dag.results / "mlruns" / "mlflow.db").exists()  # nothing went to SQLite beside the results
    client = resolve_store(tracking_server.url).client()
    exp = client.get_experiment_by_name("mpm-ci")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "mpm.job_key" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("mpm.kind") == "pipeline"]
    assert sorted(r.data.tags["mpm.job_key"] for r in children) == sorted(m["job_key"] for m in markers)
    assert {r.info.run_id for r in children} == {m["run_id"] for m in markers}
    assert len(parents) == 1 and {m["parent_run_id"] for m in markers} == {parents[0].info.run_id}


def test_second_run_has_nothing_to_do(ci_dag):
    again = snakemake(["--profile", CI_PROFILE, "--configfile", str(ci_dag.config), "-n"], ci_dag.env,
                      log=ci_dag.root / "second.log")
    assert again.returncode == 0, again.output[-2000:]
    assert "Nothing to be done" in again.output
