"""Logging results into a real MLflow SQLite store (in process): contents, idempotency, parents, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _track_results import bench_record, eval_record, write

from mpm.cli import main
from mpm.tracking import (
    TrackingError,
    ensure_parent_run,
    find_runs,
    init_store,
    log_result,
    resolve_store,
    track_result,
    ui_command,
)


def _job_runs(client, experiment, key):
    exp = client.get_experiment_by_name(experiment)
    return find_runs(client, exp.experiment_id, "mpm.job_key", key)


def test_eval_result_logged(session_store, client, tmp_path):
    path = write(tmp_path / "eval.json", eval_record(tmp_path, dataset="ade20k-log"))
    out = track_result(path, tracking_uri=str(session_store), experiment="eval")
    assert out.action == "created"
    run = client.get_run(out.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "eval"
    assert run.info.status == "FINISHED"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["dataset"] == "ade20k-log" and p["split"] == "val" and p["method"] == "mpm"
    assert p["schedule"] == "[2,5]" and p["batch_size"] == "1" and p["backend"] == "math"
    assert p["dtype"] == "float32" and p["limit"] == "8" and p["target"] == "local"
    assert p["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert p["version.torch"] == "2.14.1" and p["model.config.depth"] == "12" and p["protocol.source"] == "dataset"
    assert m["mIoU"] == 38.1 and m["aAcc"] == 75.0 and m["mAcc"] == 50.0
    assert m["gflops"] == 7.5 and m["images_per_s"] == 0.64
    assert t["mpm.job_key"] == out.job_key and t["mpm.kind"] == "eval" and t["mpm.partial"] == "true"
    assert t["mlflow.runName"].startswith("eval ade20k-log/val Seg-T/16-mask mpm/2-5")
    hist = client.get_metric_history(out.run_id, "tokens_after_step")
    assert sorted((h.step, h.value) for h in hist) == [(0, 700.0), (1, 520.5)]
    blocks = {h.step: h.value for h in client.get_metric_history(out.run_id, "tokens_in_block")}
    assert len(blocks) == 12 and blocks[1] == 1024.0 and blocks[4] == 700.0 and blocks[11] == 520.5
    assert sorted(a.path for a in client.list_artifacts(out.run_id)) == ["eval.json", "per_class.csv"]
    assert run.info.artifact_uri.startswith((session_store / "artifacts" / "eval").as_uri())
    local = client.download_artifacts(out.run_id, "per_class.csv", str(tmp_path / "dl"))
    assert "building" in Path(local).read_text()


def test_bench_result_logged(session_store, client, tmp_path):
    path = write(tmp_path / "bench.json", bench_record(batch_size=7))
    run_id = log_result(path, tracking_uri=f"sqlite:///{session_store}/mlflow.db", experiment="bench")
    run = client.get_run(run_id)
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert t["mpm.kind"] == "bench" and t["mpm.partial"] == "false"
    assert p["batch_size"] == "7" and p["backend"] == "sdpa" and p["dtype"] == "float16" and p["device"] == "cuda"
    assert p["env.device_name"] == "NVIDIA H100" and p["version.cuda"] == "12.8"
    assert m["latency_median_ms"] == 40.0 and m["latency_p90_ms"] == 43.0
    assert m["images_per_s"] == pytest.approx(1000 * 7 / 40) and m["breakdown_decoder_ms"] == 7.5
    assert m["gflops"] == 3.21
    hist = client.get_metric_history(run_id, "tokens_after_step_std")
    assert sorted((h.step, h.value) for h in hist) == [(0, 10.0), (1, 15.0)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["bench.json"]


def test_remote_target_result_logged_the_same_way(session_store, client, tmp_path):
    rec = bench_record(batch_size=1, target={"name": "rpi5", "type": "ssh", "device": "cpu", "threads": 4})
    rec["environment"].update(hostname="rpi5", machine="aarch64", device="cpu", device_name="Raspberry Pi 5",
                              git_commit="c" * 40)
    local = log_result(write(tmp_path / "local.json", bench_record(batch_size=1)), tracking_uri=str(session_store),
                       experiment="bench")
    remote = log_result(write(tmp_path / "remote.json", rec), tracking_uri=str(session_store), experiment="bench")
    assert remote != local
    run = client.get_run(remote)
    assert run.data.tags["mpm.target"] == "rpi5" and run.data.params["target"] == "rpi5"
    assert run.data.params["target.type"] == "ssh" and run.data.tags["mpm.env.hostname"] == "rpi5"
    assert run.data.params["git_commit"] == "c" * 40 and run.data.params["env.machine"] == "aarch64"
    assert run.data.params["env.device_name"] == "Raspberry Pi 5"
    assert run.data.tags["mlflow.runName"].endswith("@rpi5")


def test_relogging_updates_the_same_run(session_store, client, tmp_path):
    uri = str(session_store)
    path = write(tmp_path / "r.json", eval_record(tmp_path, dataset="idem", miou=30.0))
    first = track_result(path, tracking_uri=uri, experiment="eval")
    again = track_result(path, tracking_uri=uri, experiment="eval")
    assert (first.action, again.action) == ("created", "unchanged") and again.run_id == first.run_id
    assert client.get_run(first.run_id).data.tags["mpm.env.hostname"] == "node-1"
    # the job ran again, on another node, later: new numbers, same job
    rec = eval_record(tmp_path, dataset="idem", miou=31.5)
    rec["environment"]["hostname"], rec["created_utc"] = "node-7", "2026-02-02T00:00:00Z"
    write(path, rec)
    upd = track_result(path, tracking_uri=uri, experiment="eval")
    assert upd.action == "updated" and upd.run_id == first.run_id
    runs = _job_runs(client, "eval", first.job_key)
    assert [r.info.run_id for r in runs] == [first.run_id]
    assert runs[0].data.metrics["mIoU"] == 31.5 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["mpm.env.hostname"] == "node-7"
    assert runs[0].data.tags["mpm.created_utc"] == "2026-02-02T00:00:00Z"
    assert [h.value for h in client.get_metric_history(first.run_id, "mIoU")] == [30.0, 31.5]
    # the new JSON replaced the artifact
    local = client.download_artifacts(first.run_id, "r.json", str(tmp_path / "dl"))
    assert json.loads(Path(local).read_text())["metrics"]["mIoU"] == 31.5


def test_relog_clears_stale_tags(session_store, client, tmp_path):
    rec = eval_record(tmp_path, dataset="stale")
    rec["per_class_csv"] = str(tmp_path / "later.csv")
    path = write(tmp_path / "s.json", rec)
    first = track_result(path, tracking_uri=str(session_store), experiment="eval", strict_artifacts=False)
    assert "later.csv" in client.get_run(first.run_id).data.tags["mpm.missing_artifacts"]
    (tmp_path / "later.csv").write_text("class_index,class_name\n")
    second = track_result(path, tracking_uri=str(session_store), experiment="eval")
    assert second.run_id == first.run_id and second.action == "updated"
    run = client.get_run(first.run_id)
    assert "mpm.missing_artifacts" not in run.data.tags
    assert sorted(a.path for a in client.list_artifacts(first.run_id)) == ["later.csv", "s.json"]


def test_changed_param_replaces_the_run(session_store, client, tmp_path):
    uri = str(session_store)
    path = write(tmp_path / "g.json", eval_record(tmp_path, dataset="replace"))
    first = track_result(path, tracking_uri=uri, experiment="eval")
    write(path, eval_record(tmp_path, dataset="replace", git_commit="f" * 40, miou=12.0))
    second = track_result(path, tracking_uri=uri, experiment="eval")
    assert second.action == "replaced" and second.replaced_run_id == first.run_id
    assert second.job_key == first.job_key
    runs = _job_runs(client, "eval", first.job_key)
    assert [r.info.run_id for r in runs] == [second.run_id]
    assert runs[0].data.params["git_commit"] == "f" * 40 and runs[0].data.metrics["mIoU"] == 12.0
    assert runs[0].data.tags["mpm.replaces"] == first.run_id
    assert client.get_run(first.run_id).info.lifecycle_stage == "deleted"


def test_parent_and_children(session_store, client, tmp_path):
    uri = str(session_store)
    parent = ensure_parent_run(uri, "misc", "invocation-42", params={"config": "paper"})
    assert ensure_parent_run(uri, "misc", "invocation-42", params={"config": "paper"}) == parent
    kids = []
    for bs in (1, 2):
        path = write(tmp_path / f"c{bs}.json", eval_record(tmp_path, dataset="kids", batch_size=bs))
        kids.append(track_result(path, tracking_uri=uri, experiment="misc", parent_key="invocation-42"))
    # a new invocation's key creates its own parent, found again by key
    other = track_result(write(tmp_path / "c9.json", eval_record(tmp_path, dataset="kids", batch_size=9)),
                         tracking_uri=uri, experiment="misc", parent_key="invocation-43")
    assert other.parent_run_id != parent
    assert ensure_parent_run(uri, "misc", "invocation-43") == other.parent_run_id
    exp = client.get_experiment_by_name("misc")
    parents = find_runs(client, exp.experiment_id, "mpm.parent_key", "invocation-42")
    assert [r.info.run_id for r in parents] == [parent]
    assert parents[0].data.tags["mpm.kind"] == "pipeline" and parents[0].data.params["config"] == "paper"
    for k in kids:
        assert k.parent_run_id == parent
        tags = client.get_run(k.run_id).data.tags
        assert tags["mlflow.parentRunId"] == parent and tags["mpm.invocation"] == "invocation-42"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_id for r in children) == sorted(k.run_id for k in kids)
    with pytest.raises(TrackingError, match="parent key"):
        ensure_parent_run(uri, "misc", "it's")
    with pytest.raises(TrackingError, match="different values"):
        ensure_parent_run(uri, "misc", "invocation-42", params={"config": "other"})


def test_long_params_truncated(session_store, client, tmp_path):
    path = write(tmp_path / "long.json", eval_record(tmp_path, dataset="long"))
    run_id = log_result(path, tracking_uri=str(session_store), experiment="misc",
                        extra_params={"note": "n" * 7000, "bad key!": 3})
    run = client.get_run(run_id)
    note = run.data.params["note"]
    assert len(note) == 6000 and "[truncated: 7000 chars, sha256 " in note
    assert run.data.params["bad key_"] == "3"
    assert run.data.tags["mpm.truncated"] == "note"


def test_jobs_never_create_experiments(session_store, client, tmp_path):
    path = write(tmp_path / "x.json", eval_record(tmp_path, dataset="nowhere"))
    default_before = client.search_runs(["0"])
    with pytest.raises(TrackingError, match="does not exist.*mpm track init"):
        log_result(path, tracking_uri=str(session_store), experiment="no-such-experiment")
    assert client.get_experiment_by_name("no-such-experiment") is None
    assert client.search_runs(["0"]) == default_before == []
    with pytest.raises(TrackingError, match="not initialised"):
        log_result(path, tracking_uri=str(tmp_path / "fresh"), experiment="eval")
    assert not (tmp_path / "fresh" / "mlflow.db").exists()


def test_init_is_idempotent(session_store):
    ids = init_store(str(session_store), ["eval", "bench"])
    again = init_store(str(session_store), "eval,bench")
    assert ids == again
    with pytest.raises(TrackingError, match="Default"):
        init_store(str(session_store), ["Default"])


def test_cli_log_parent_and_ui_command(session_store, client, tmp_path, capsys):
    uri = f"sqlite:///{session_store}/mlflow.db"
    path = write(tmp_path / "cli.json", eval_record(tmp_path, dataset="cli"))
    assert main(["track", "parent", "--uri", uri, "--experiment", "misc", "--key", "inv-cli"]) == 0
    parent = capsys.readouterr().out.strip()
    done = tmp_path / "done" / "cli.tracked.json"
    assert main(["track", "log", str(path), "--uri", uri, "--experiment", "misc", "--parent-key", "inv-cli",
                 "--param", "wildcard=a", "--tag", "snakemake.jobid=7", "--done-file", str(done)]) == 0
    marker = json.loads(done.read_text())
    assert marker["action"] == "created" and marker["parent_run_id"] == parent
    run = client.get_run(marker["run_id"])
    assert run.data.tags["mpm.job_key"] == marker["job_key"] and run.data.params["wildcard"] == "a"
    assert run.data.tags["snakemake.jobid"] == "7" and run.data.tags["mlflow.parentRunId"] == parent
    # errors are one line, exit status 2
    assert main(["track", "log", str(path), "--uri", uri, "--experiment", "missing"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["track", "ui-command", "--uri", uri, "--port", "5055"]) == 0
    cmd = capsys.readouterr().out.split()
    assert cmd[:2] == ["mlflow", "ui"] and cmd[cmd.index("--backend-store-uri") + 1] == uri
    assert cmd[cmd.index("--default-artifact-root") + 1] == str(session_store / "artifacts")
    assert cmd[cmd.index("--port") + 1] == "5055"
    assert ui_command("http://127.0.0.1:5001")[-1] == "http://127.0.0.1:5001"
    assert resolve_store(uri).artifact_root == session_store / "artifacts"


def test_artifacts_go_to_the_parent_run(tmp_path) -> None:
    import mlflow

    from mpm.tracking.log import ensure_parent_run, log_parent_artifacts
    from mpm.tracking.store import init_store

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    init_store(uri, ["exp"])
    table = tmp_path / "main.md"
    table.write_text("| a |\n")
    run_id = log_parent_artifacts(uri, "exp", "inv-1", [str(table)], "tables")
    assert run_id == ensure_parent_run(uri, "exp", "inv-1")
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert [a.path for a in client.list_artifacts(run_id, "tables")] == ["tables/main.md"]
    from mpm.tracking.store import TrackingError

    with pytest.raises(TrackingError, match="missing"):
        log_parent_artifacts(uri, "exp", "inv-1", [str(tmp_path / "nope.png")])
