"""The same logging against a real ``mlflow server`` (SQLite backend in tmp_path) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from _track_procs import cli_env
from _track_results import eval_record, write

from mpm.tracking import (
    TrackingError,
    find_runs,
    init_store,
    resolve_store,
    server_command,
    track_result,
)

START_TIMEOUT_S = 180.0  # a busy machine starts mlflow server slowly; a skip tests nothing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and the uvicorn worker it started (its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    else:  # the server exited; its worker may linger in the group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    cmd = server_command(f"sqlite:///{tmp_path}/server/mlflow.db", artifacts_destination=tmp_path / "server-art",
                         port=port)
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", *cmd[1:]], cwd=tmp_path, env=cli_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text()[-800:]
                why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not up in {START_TIMEOUT_S:.0f} s"
                pytest.skip(f"mlflow server {why}: {tail}")
            time.sleep(0.25)
        yield url, tmp_path / "server-art"
    finally:
        _stop(proc)


def test_logging_through_a_tracking_server(server, tmp_path):
    url, artifacts = server
    store = resolve_store(url)
    assert store.kind == "server"
    ids = init_store(url, ["srv-eval"])
    assert init_store(url, ["srv-eval"]) == ids  # idempotent over REST too

    path = write(tmp_path / "res" / "srv.json", eval_record(tmp_path / "res", miou=33.0))
    first = track_result(path, tracking_uri=url, experiment="srv-eval", parent_key="inv-srv")
    assert first.action == "created" and first.experiment_id == ids["srv-eval"]
    again = track_result(path, tracking_uri=url, experiment="srv-eval", parent_key="inv-srv")
    assert again.action == "unchanged" and again.run_id == first.run_id
    write(path, eval_record(tmp_path / "res", miou=34.0))
    upd = track_result(path, tracking_uri=url, experiment="srv-eval", parent_key="inv-srv")
    assert upd.action == "updated" and upd.run_id == first.run_id and upd.parent_run_id == first.parent_run_id

    client = store.client()
    [run] = find_runs(client, ids["srv-eval"], "mpm.job_key", first.job_key)
    assert run.info.run_id == first.run_id and run.data.metrics["mIoU"] == 34.0
    assert run.data.params["dataset"] == "ade20k" and run.data.tags["mlflow.parentRunId"] == first.parent_run_id
    hist = client.get_metric_history(first.run_id, "tokens_after_step")
    assert {(h.step, h.value) for h in hist} == {(0, 700.0), (1, 520.5)}
    assert sorted(a.path for a in client.list_artifacts(first.run_id)) == ["per_class.csv", "srv.json"]
    stored = [p.name for p in artifacts.rglob("*") if p.is_file()]  # proxied by the server onto its disk
    assert "srv.json" in stored and "per_class.csv" in stored
    assert client.search_runs(["0"]) == []
    with pytest.raises(TrackingError, match="does not exist"):
        track_result(path, tracking_uri=url, experiment="not-created")


def test_unreachable_server_fails_clearly(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    path = write(tmp_path / "x.json", eval_record(tmp_path))
    with pytest.raises(TrackingError, match="not reachable"):
        track_result(path, tracking_uri=url, experiment="eval")


N_LOGGERS = 16


def _log_concurrently(url: str, path, n: int, parent_key: str | None, folder) -> list[dict]:
    """``mpm track log`` of one result by ``n`` processes released at once; their done-file markers."""
    import json

    from _track_procs import finish, start_forked_cli

    folder.mkdir(parents=True, exist_ok=True)
    argvs = [["track", "log", str(path), "--uri", url, "--experiment", "srv-race",
              *(["--parent-key", parent_key] if parent_key else []), "--done-file", str(folder / f"{i}.json")]
             for i in range(n)]
    proc = start_forked_cli(argvs, cwd=folder)
    try:
        rc, out, err = finish(proc, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0 and json.loads(out.strip().splitlines()[-1]) == [0] * n, err[-3000:]
    return [json.loads((folder / f"{i}.json").read_text()) for i in range(n)]


def _all_runs(client, exp_id: str, key: str) -> list:
    """Every run of a job key, deleted ones included."""
    from mlflow.entities import ViewType

    return client.search_runs([exp_id], f"tags.`mpm.job_key` = '{key}'", run_view_type=ViewType.ALL)


def test_concurrent_loggers_of_one_result_leave_one_run(server, tmp_path):
    """Issue 9, item 8: 16 loggers of one new result left 1 active run, 2 deleted duplicates still
    RUNNING and 16 metric history points. Now: one run, FINISHED, one point per metric and step."""
    from mpm.tracking import ensure_parent_run

    url, _ = server
    [exp_id] = init_store(url, ["srv-race"]).values()
    client = resolve_store(url).client()
    parent = ensure_parent_run(url, "srv-race", "inv-race", running=True)  # the pipeline's onstart
    path = write(tmp_path / "res" / "race.json", eval_record(tmp_path / "res", miou=33.0))

    markers = _log_concurrently(url, path, N_LOGGERS, "inv-race", tmp_path / "new")
    key = markers[0]["job_key"]
    [run] = _all_runs(client, exp_id, key)  # no duplicate was ever created, not even a deleted one
    assert {m["run_id"] for m in markers} == {run.info.run_id} and run.info.lifecycle_stage == "active"
    assert sorted(m["action"] for m in markers).count("created") == 1
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert len(client.get_metric_history(run.info.run_id, "mIoU")) == 1
    assert sorted((h.step, h.value) for h in client.get_metric_history(run.info.run_id, "tokens_after_step")) == \
        [(0, 700.0), (1, 520.5)]
    claims = [k for k in client.get_run(parent).data.params if k.startswith("mpm.claim.")]
    assert claims == [f"mpm.claim.{key}"]
    assert client.get_run(parent).info.status == "RUNNING"  # the invocation has not ended

    # the job ran again at another commit (a param): 16 loggers replace the run by exactly one
    write(path, eval_record(tmp_path / "res", miou=35.0, git_commit="e" * 40))
    markers = _log_concurrently(url, path, N_LOGGERS, "inv-race", tmp_path / "replaced")
    runs = _all_runs(client, exp_id, key)
    [new] = [r for r in runs if r.info.lifecycle_stage == "active"]
    assert {r.info.run_id for r in runs} == {run.info.run_id, new.info.run_id}  # the old one, deleted
    assert {m["run_id"] for m in markers} == {new.info.run_id}
    assert new.info.status == "FINISHED" and new.data.params["git_commit"] == "e" * 40
    assert new.data.tags["mpm.replaces"] == run.info.run_id and new.data.metrics["mIoU"] == 35.0
    assert client.get_run(run.info.run_id).info.status == "FINISHED"  # ended before it was deleted
    assert [h.value for h in client.get_metric_history(new.info.run_id, "mIoU")] == [35.0]

    # without a parent key there is nothing to claim on: the oldest run wins, the others are ended
    # and deleted, so one active run remains and nothing is left RUNNING
    other = write(tmp_path / "res" / "other.json", eval_record(tmp_path / "res", miou=20.0, batch_size=3))
    markers = _log_concurrently(url, other, N_LOGGERS, None, tmp_path / "no-parent")
    runs = _all_runs(client, exp_id, markers[0]["job_key"])
    [active] = [r for r in runs if r.info.lifecycle_stage == "active"]
    assert all(r.info.status != "RUNNING" for r in runs)
    assert active.info.status == "FINISHED" and active.data.metrics["mIoU"] == 20.0
    assert len(client.get_metric_history(active.info.run_id, "mIoU")) == 1
    from mlflow.entities import ViewType

    everything = client.search_runs([exp_id], run_view_type=ViewType.ALL, max_results=1000)
    assert [r.info.run_id for r in everything if r.info.status == "RUNNING"] == [parent]
