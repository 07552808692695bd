"""What the MLflow UI shows of the runs: experiment kind, the jobs' real times, names with the model,
and parent runs that end with the invocation (RUNNING until then, FINISHED or FAILED)."""

from __future__ import annotations

import json

import pytest
from _track_results import bench_record, eval_record, write

from mpm.cli import main
from mpm.tracking import TrackingError, ensure_parent_run, find_runs, init_store, track_result
from mpm.tracking.log import finish_parent_run
from mpm.tracking.result import _utc_ms
from mpm.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, RUNS_VIEW_TAG, ui_url


def test_experiments_are_model_training_experiments(tmp_path):
    """MLflow 3.x opens an experiment without this tag on its GenAI view ("No data available")."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ids = init_store(uri, ["new"])
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_experiment(ids["new"]).tags[EXPERIMENT_KIND_TAG] == "custom_model_development" == EXPERIMENT_KIND
    # an experiment of an older mpm gets the tag on the next init; a kind chosen in the UI stays
    old = client.create_experiment("old")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    init_store(uri, ["new", "old", "chosen"])
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    # the runs view the UI URL opens: jobs grouped by kind (not folded under the parent), metric columns
    view = json.loads(client.get_experiment(old).tags[RUNS_VIEW_TAG])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "mpm.kind"}]
    assert {"metrics.`mIoU`", "metrics.`images_per_s`", "metrics.`latency_median_ms`"} <= set(view["selectedColumns"])
    assert ui_url("http://127.0.0.1:5000/", old) == (f"http://127.0.0.1:5000/#/experiments/{old}/runs?"
                                                     "workflowType=machine_learning&viewStateShareKey=mpm-runs")


def test_the_installed_mlflow_ui_reads_what_the_view_sets():
    """The names ui_url and the runs view rely on, in the installed MLflow UI's JavaScript."""
    from pathlib import Path

    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    if not js.is_dir():
        pytest.skip(f"this mlflow has no built UI ({js})")
    text = "\n".join(p.read_text(errors="replace") for p in js.glob("*.js"))
    for name in ("mlflow.sharedViewState.", "viewStateShareKey", '"workflowType"', '"machine_learning"',
                 '"selectedColumns"', '"groupBy"', "mlflow.experimentKind", '"custom_model_development"'):
        assert name in text, name


def test_runs_start_and_end_with_their_jobs(session_store, client, tmp_path):
    rec = eval_record(tmp_path, dataset="times")
    rec.update(started_utc="2026-03-04T05:06:07.250Z", finished_utc="2026-03-04T05:09:08.500Z")
    first = track_result(write(tmp_path / "t.json", rec), tracking_uri=str(session_store), experiment="eval")
    run = client.get_run(first.run_id)
    start, end = _utc_ms(rec["started_utc"]), _utc_ms(rec["finished_utc"])
    assert (run.info.start_time, run.info.end_time) == (start, end)  # Duration 3 min 1.25 s, not ms of logging
    assert end - start == 181_250
    assert [h.timestamp for h in client.get_metric_history(first.run_id, "mIoU")] == [end]
    assert run.data.tags["mpm.started_utc"] == rec["started_utc"]
    # the job ran again later: the run's end and the new metric points are the new job's end
    rec.update(started_utc="2026-03-05T00:00:00.000Z", finished_utc="2026-03-05T00:01:00.000Z")
    rec["metrics"]["mIoU"] = 40.0
    again = track_result(write(tmp_path / "t.json", rec), tracking_uri=str(session_store), experiment="eval")
    assert again.action == "updated" and again.run_id == first.run_id
    later = _utc_ms(rec["finished_utc"])
    assert client.get_run(first.run_id).info.end_time == later
    assert [(h.timestamp, h.value) for h in client.get_metric_history(first.run_id, "mIoU")] == [(end, 38.1),
                                                                                                  (later, 40.0)]
    # a record without the new fields: its end is created_utc, its start that minus its wall time
    old = eval_record(tmp_path, dataset="times-old")
    run = client.get_run(track_result(write(tmp_path / "o.json", old), tracking_uri=str(session_store),
                                      experiment="eval").run_id)
    assert run.info.end_time == _utc_ms("2026-01-01T00:00:00Z")
    assert run.info.end_time - run.info.start_time == 12_500  # wall_time_s 12.5


def test_run_names_carry_the_models_config_name(session_store, client, tmp_path):
    uri = str(session_store)
    job = "bench/local/seg-t-demo/mpm/2-5/bs2-math-float32"
    bench = bench_record(batch_size=2)
    bench["spec"]["model"] = "results/models/seg-t-demo.pth"
    bench["model"].update(weights="checkpoint", checkpoint="results/models/seg-t-demo.pth")
    out = track_result(write(tmp_path / "b.json", bench), tracking_uri=uri, experiment="bench",
                       extra_params={"pipeline.job": job})
    run = client.get_run(out.run_id)
    assert run.info.run_name == "bench seg-t-demo mpm/2-5 bs2 sdpa float16 cuda"  # was "bench models mpm(2,5) ..."
    assert run.data.tags["mpm.model"] == "seg-t-demo"
    # without the pipeline's job path: the checkpoint's file name, not its folder
    bench["spec"]["batch_size"] = bench["timing"]["batch_size"] = 3
    out = track_result(write(tmp_path / "b3.json", bench), tracking_uri=uri, experiment="bench")
    assert client.get_run(out.run_id).info.run_name.startswith("bench seg-t-demo mpm/2-5 bs3")
    ev = track_result(write(tmp_path / "e.json", eval_record(tmp_path, dataset="names")), tracking_uri=uri,
                      experiment="eval", extra_params={"pipeline.job": "eval/names/seg-t-demo/mpm/2-5"})
    assert client.get_run(ev.run_id).info.run_name.startswith("eval names/val seg-t-demo mpm/2-5 bs1 math")


def test_parent_runs_while_the_invocation_runs_then_ends(session_store, client, tmp_path, capsys):
    """Issue 9, item 5: the parent was FINISHED from its creation, even when the invocation failed."""
    uri = f"sqlite:///{session_store}/mlflow.db"
    assert main(["track", "parent", "--uri", uri, "--experiment", "misc", "--key", "inv-run"]) == 0
    parent = capsys.readouterr().out.strip()
    assert client.get_run(parent).info.status == "RUNNING" and client.get_run(parent).info.end_time is None
    kid = track_result(write(tmp_path / "k.json", eval_record(tmp_path, dataset="runs")), tracking_uri=uri,
                       experiment="misc", parent_key="inv-run")
    assert kid.parent_run_id == parent and client.get_run(parent).info.status == "RUNNING"  # a child ends nothing
    assert main(["track", "finish", "--uri", uri, "--experiment", "misc", "--key", "inv-run",
                 "--status", "failed"]) == 0
    assert f"parent run {parent} (inv-run) in experiment misc: FAILED" in capsys.readouterr().out
    info = client.get_run(parent).info
    assert info.status == "FAILED" and info.end_time >= info.start_time
    assert main(["track", "ui-command", "--uri", uri, "--experiment", "misc", "--port", "5066"]) == 0
    exp_id = client.get_experiment_by_name("misc").experiment_id
    assert capsys.readouterr().out.splitlines()[1] == f"# then open {ui_url('http://127.0.0.1:5066', exp_id)}"
    assert main(["track", "finish", "--uri", uri, "--experiment", "misc", "--key", "inv-none"]) == 2
    assert "no parent run with key 'inv-none'" in capsys.readouterr().err
    with pytest.raises(TrackingError, match="expected one of FINISHED, FAILED, KILLED"):
        finish_parent_run(uri, "misc", "inv-run", "DONE")
    # a parent that a job creates because none exists (no onstart) has no one to end it: FINISHED
    ad_hoc = track_result(write(tmp_path / "a.json", eval_record(tmp_path, dataset="adhoc")), tracking_uri=uri,
                          experiment="misc", parent_key="inv-adhoc")
    assert client.get_run(ad_hoc.parent_run_id).info.status == "FINISHED"
    assert ensure_parent_run(uri, "misc", "inv-adhoc", running=True) == ad_hoc.parent_run_id  # found, left as is
    assert client.get_run(ad_hoc.parent_run_id).info.status == "FINISHED"
    exp = client.get_experiment_by_name("misc")
    assert len(find_runs(client, exp.experiment_id, "mpm.parent_key", "inv-run")) == 1
