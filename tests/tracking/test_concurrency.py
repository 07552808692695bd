"""Concurrent processes on one fresh SQLite store: two inits, then many jobs logging at once.

The inits are two fresh ``python -m mpm.cli track init`` processes. The jobs are forked
from one launcher that imported MLflow once (``_track_procs.start_forked_cli``; separate
processes that all start logging at the same instant), plus one fresh
``python -m mpm.cli track log`` process logging a job that a forked one also logs.
"""

from __future__ import annotations

import json

from _track_procs import finish, start_cli, start_forked_cli
from _track_results import bench_record, eval_record, write

N_JOBS = 8


def test_concurrent_init_then_concurrent_jobs(tmp_path):
    store = tmp_path / "results" / "mlruns"
    uri = f"sqlite:///{store}/mlflow.db"
    # two inits race on the fresh database: the lock makes one migrate, the other find it done
    inits = [start_cli("init", "--uri", uri, "--experiments", "eval,bench", cwd=tmp_path) for _ in range(2)]
    for proc in inits:
        rc, out, err = finish(proc, timeout=180)
        assert rc == 0, err
        assert "experiment eval: id" in out

    jobs = tmp_path / "jobs"
    results = []
    for i in range(N_JOBS):
        if i % 2:
            results.append(write(jobs / f"bench{i}.json", bench_record(batch_size=i, median_ms=10.0 + i)))
        else:
            results.append(write(jobs / f"eval{i}.json",
                                 eval_record(jobs / f"eval{i}", batch_size=i + 1, miou=30.0 + i,
                                             csv_name=f"classes{i}.csv")))
    argvs = []
    for i, path in enumerate(results):
        exp = "bench" if i % 2 else "eval"
        argvs.append(["track", "log", str(path), "--uri", uri, "--experiment", exp, "--parent-key", "inv-1",
                      "--done-file", str(jobs / f"{i}.tracked.json")])
    # plus two more loggers of job 0 at the same time (one forked, one a fresh `python -m mpm.cli`):
    # they must not duplicate its run
    argvs.append(["track", "log", str(results[0]), "--uri", uri, "--experiment", "eval", "--parent-key", "inv-1"])
    procs = [start_forked_cli(argvs, cwd=tmp_path),
             start_cli("log", str(results[0]), "--uri", uri, "--experiment", "eval", "--parent-key", "inv-1",
                       cwd=tmp_path)]
    try:
        (rc_forked, out_forked, err_forked), (rc_cli, _out, err_cli) = (finish(p, timeout=300) for p in procs)
    finally:
        for p in procs:  # only on a failure above: none left running
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rc_cli == 0, err_cli
    assert rc_forked == 0 and json.loads(out_forked.strip().splitlines()[-1]) == [0] * len(argvs), err_forked

    from mpm.tracking import find_runs, resolve_store

    client = resolve_store(uri).client()
    markers = [json.loads((jobs / f"{i}.tracked.json").read_text()) for i in range(N_JOBS)]
    assert len({m["run_id"] for m in markers}) == N_JOBS and len({m["job_key"] for m in markers}) == N_JOBS
    total = 0
    for name in ("eval", "bench"):
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("mpm.kind") == "pipeline"]
        children = [r for r in runs if "mpm.job_key" in r.data.tags]
        assert len(parents) == 1 and len(runs) == len(children) + 1
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
        assert all(r.info.status == "FINISHED" for r in children)
        for m in markers:
            if m["experiment"] == name:
                assert m["parent_run_id"] == parents[0].info.run_id
                [run] = find_runs(client, exp.experiment_id, "mpm.job_key", m["job_key"])
                assert run.info.run_id == m["run_id"]
                arts = {a.path for a in client.list_artifacts(run.info.run_id)}
                assert any(a.endswith(".json") for a in arts)
                if name == "eval":
                    assert any(a.startswith("classes") for a in arts)
                    assert run.data.metrics["mIoU"] >= 30.0
                else:
                    assert run.data.metrics["latency_median_ms"] >= 10.0
        total += len(children)
    assert total == N_JOBS
    from mlflow.entities import ViewType

    ids = [client.get_experiment_by_name(n).experiment_id for n in ("eval", "bench")]
    assert client.search_runs(ids, run_view_type=ViewType.DELETED_ONLY) == []  # no duplicate was ever made
    assert client.search_runs(["0"]) == []  # nothing landed in "Default"
    assert {e.name for e in client.search_experiments()} == {"Default", "eval", "bench"}
