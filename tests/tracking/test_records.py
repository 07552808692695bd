"""Result records (mpm.records): the schemas describe what the producers write, and a record that
does not follow its schema is refused naming the file and every missing or invalid field."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _track_results import bench_record, eval_record, write

from mpm.cli import main
from mpm.errors import ConfigError
from mpm.records import SCHEMAS, RecordError, load_record, parse_record, validate_record


def test_schema_files_are_valid_json_schemas():
    import jsonschema

    for tag, path in SCHEMAS.items():
        schema = json.loads(path.read_text())
        jsonschema.validators.validator_for(schema).check_schema(schema)
        assert schema["properties"]["schema"] == {"const": tag}


def test_producers_write_valid_records_with_the_jobs_times(tmp_path):
    """A real evaluate() record and a real benchmark point (tiny random model, synthetic images)."""
    from mpm_testing import synthetic_set

    from mpm.benchmarking.bench import BenchSpec, run_point
    from mpm.data.classes import SYNTHETIC_CLASSES
    from mpm.data.datasets import load_split
    from mpm.evaluation import evaluate
    from mpm.models import SegmenterConfig, build_segmenter
    from mpm.tracking.result import describe_result, job_times

    root = synthetic_set(tmp_path / "synth", n_train=1, n_val=2, size=64, seed=0)
    model = build_segmenter(SegmenterConfig(num_classes=len(SYNTHETIC_CLASSES), embed_dim=32, depth=6, num_heads=2,
                                            image_size=(64, 64), decoder_depth=1))
    before = int(time.time() * 1000) - 1
    res = evaluate(model, load_split(root, "synthetic", "val"), method="mpm", schedule=(1, 3), progress=False)
    path = res.save(tmp_path / "eval.json", per_class_csv=tmp_path / "eval.csv")
    after_eval = int(time.time() * 1000) + 1
    record = load_record(path)
    start, end = job_times(record)
    assert before <= start <= end <= after_eval
    assert record["finished_utc"].endswith("Z") and "." in record["finished_utc"]  # milliseconds

    [manifest] = sorted((root / "manifests").glob("*val*.json"))
    point = run_point(BenchSpec(images=str(manifest), model="T", num_classes=8, crop=(64, 64), method="tome",
                                schedule="all", method_kwargs={"r": 2}, warmup=0, iters=1, breakdown_iters=0,
                                pool_batches=1, backend="math"))
    bench_json = write(tmp_path / "bench.json", point)
    point = load_record(bench_json)  # as `mpm bench` writes it; schedule "all" included
    b_start, b_end = job_times(point)
    assert after_eval - 2 <= b_start <= b_end <= int(time.time() * 1000) + 1

    # the tracking reads both, with the pipeline's model name in the run name
    tracked = describe_result(record, path, {"pipeline.job": "eval/synthetic/seg-t-demo/mpm/1-3"})
    assert (tracked.start_ms, tracked.end_ms) == (start, end)
    assert tracked.run_name.startswith("eval synthetic/val seg-t-demo mpm/1-3 bs1")
    tracked = describe_result(point, bench_json, {"pipeline.job": "bench/local/seg-t-demo/tome/all/bs1-math-float32"})
    assert tracked.run_name.startswith("bench seg-t-demo tome/all bs1") and tracked.tags["mpm.model"] == "seg-t-demo"


def test_the_issues_incomplete_record_is_refused_and_nothing_logged(session_store, client, tmp_path, capsys):
    """Issue 9, item 7: {"schema": "mpm.eval/1", "complete": true} was logged as 'eval null/null null none bsnull'."""
    uri = f"sqlite:///{session_store}/mlflow.db"
    path = write(tmp_path / "bare.json", {"schema": "mpm.eval/1", "complete": True})
    exp = client.get_experiment_by_name("misc")
    before = client.search_runs([exp.experiment_id], max_results=1000)
    done = tmp_path / "done.json"
    assert main(["track", "log", str(path), "--uri", uri, "--experiment", "misc", "--parent-key", "inv-bare",
                 "--done-file", str(done)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "not a valid mpm.eval/1 record" in err
    missing = err.split("missing ", 1)[1]
    for field in ("dataset", "model", "method", "metrics", "run", "images", "environment", "backend", "dtype"):
        assert field in missing, field
    after = client.search_runs([exp.experiment_id], max_results=1000)
    assert [r.info.run_id for r in after] == [r.info.run_id for r in before]  # not even a parent run
    assert not done.exists()


def test_invalid_fields_are_named(tmp_path):
    rec = eval_record(tmp_path)
    rec["metrics"]["mIoU"] = "high"
    rec["limit"] = 0
    del rec["dataset"]["split"]
    with pytest.raises(RecordError) as info:
        load_record(write(tmp_path / "e.json", rec))
    text = str(info.value)
    assert str(tmp_path / "e.json") in text and "missing dataset.split" in text
    assert "metrics.mIoU ('high' is not of type 'number', 'null')" in text and "limit (0 is less than" in text
    assert isinstance(info.value, ConfigError)  # the CLI prints it as one line, exit status 2

    bench = bench_record()
    del bench["timing"]["per_image_ms"]
    bench["spec"]["batch_size"] = "32"
    with pytest.raises(RecordError, match=r"missing timing\.per_image_ms; invalid: spec\.batch_size \('32' is not"):
        validate_record(bench, "b.json")
    for record, message in (([bench_record()], "holds a JSON list"), ({"complete": True}, "has no schema field"),
                            ({"schema": "mpm.eval/2"}, "unknown schema 'mpm.eval/2'"),
                            ({**eval_record(tmp_path), "complete": False}, "marked incomplete")):
        with pytest.raises(RecordError, match=message):
            validate_record(record, "r.json")
    with pytest.raises(RecordError, match="not valid JSON"):
        parse_record(b'{"schema": ', "broken.json")
    with pytest.raises(RecordError, match=f"cannot read result {tmp_path / 'none.json'}"):
        load_record(tmp_path / "none.json")
    assert validate_record(eval_record(tmp_path), "ok") == eval_record(tmp_path)


def test_without_jsonschema_the_loader_says_what_to_install(tmp_path, monkeypatch):
    import sys

    from mpm import records

    records._validator.cache_clear()
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema -> ImportError
    try:
        with pytest.raises(RecordError, match=r"needs the jsonschema package: pip install 'mpm\[pipeline\]'"):
            load_record(write(tmp_path / "e.json", eval_record(tmp_path)))
    finally:
        records._validator.cache_clear()


def test_tracking_reads_records_through_the_loader(tmp_path):
    from mpm.tracking import TrackingError, read_result

    rec = eval_record(tmp_path)
    del rec["run"]
    with pytest.raises(TrackingError, match=r"not a valid mpm.eval/1 record: missing run"):
        read_result(write(tmp_path / "x.json", rec))
    # records of no schema were once guessed from their keys: nothing writes them
    rec = eval_record(tmp_path)
    del rec["schema"]
    with pytest.raises(TrackingError, match="has no schema field"):
        read_result(write(tmp_path / "y.json", rec))
    assert Path(SCHEMAS["mpm.bench/1"]).name == "bench.schema.json"  # one schema per kind, defined once
