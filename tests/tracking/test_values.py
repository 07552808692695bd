"""Param/tag values: one string form, clear truncation, valid keys; result parsing and job keys (no MLflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _track_results import bench_record, eval_record, write

from mpm.tracking import (
    TrackingError,
    clean_key,
    job_key_of,
    read_result,
    resolve_store,
    stringify,
    truncate,
)
from mpm.tracking.values import PARAM_VALUE_LIMIT


def test_stringify_is_consistent():
    assert stringify(None) == "null"
    assert stringify(True) == "true" and stringify(False) == "false"
    assert stringify(8) == "8" and stringify(0.5) == "0.5" and stringify(2.0) == "2.0"
    assert stringify(float("nan")) == "nan"
    assert stringify((2, 5)) == stringify([2, 5]) == "[2,5]"
    assert stringify({"r": 8, "a": [1]}) == '{"a":[1],"r":8}'
    assert stringify(Path("/x/y")) == "/x/y"


def test_truncate_marks_and_fits():
    text = "x" * 10_000
    out, cut = truncate(text, PARAM_VALUE_LIMIT)
    assert cut and len(out) == PARAM_VALUE_LIMIT
    assert out.endswith("]") and "[truncated: 10000 chars, sha256 " in out
    assert truncate("short", 10) == ("short", False)
    # different long values stay distinguishable
    assert truncate("x" * 9000 + "a", 100)[0] != truncate("x" * 9000 + "b", 100)[0]


def test_clean_key():
    assert clean_key("model.config.depth") == "model.config.depth"
    assert clean_key("a b/c:d-e") == "a b/c:d-e"
    assert clean_key("weird$key!") == "weird_key_"
    assert clean_key("a//b") == "a__b"
    assert len(clean_key("k" * 400)) == 250


def test_eval_result_identity_params_metrics(tmp_path):
    path = write(tmp_path / "e.json", eval_record(tmp_path))
    tr = read_result(path)
    assert tr.kind == "eval" and tr.partial
    for key in ("dataset", "split", "model", "method", "schedule", "batch_size", "backend", "dtype", "device",
                "limit", "target", "checkpoint_sha256"):
        assert key in tr.identity, key
    assert tr.identity["schedule"] == "[2,5]" and tr.identity["limit"] == "8" and tr.identity["target"] == "local"
    assert tr.params["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert tr.params["git_commit_source"] == "result"
    assert tr.params["version.torch"] == "2.14.1" and tr.params["model.config.depth"] == 12
    assert tr.metrics["mIoU"] == 38.1 and tr.metrics["gflops"] == 7.5
    assert tr.series["tokens_after_step"] == [(0, 700.0), (1, 520.5)]
    per_block = dict(tr.series["tokens_in_block"])
    assert per_block[0] == per_block[1] == 1024.0 and per_block[2] == 700.0 and per_block[5] == 520.5
    assert [p.name for p in tr.artifacts] == ["e.json", "per_class.csv"]
    assert tr.tags["mpm.partial"] == "true" and tr.tags["mpm.kind"] == "eval"
    # what changes between executions of the same job is a (mutable) tag, not a param
    assert "env.hostname" not in tr.params and tr.tags["mpm.env.hostname"] == "node-1"
    assert tr.tags["mpm.created_utc"] == "2026-01-01T00:00:00Z" and "created_utc" not in tr.params


def test_job_key_ignores_measurements_and_provenance(tmp_path):
    a = read_result(write(tmp_path / "a.json", eval_record(tmp_path, miou=30.0)))
    b = read_result(write(tmp_path / "b.json", eval_record(tmp_path, miou=31.0, git_commit="f" * 40)))
    c = read_result(write(tmp_path / "c.json", eval_record(tmp_path, limit=None)))
    d = read_result(write(tmp_path / "d.json", eval_record(tmp_path, batch_size=4)))
    assert a.job_key == b.job_key and a.job_key.startswith("eval-")
    assert len({a.job_key, c.job_key, d.job_key}) == 3
    assert not c.partial and c.tags["mpm.partial"] == "false"
    # extra params are identity; "8" from the command line equals 8 from JSON
    assert job_key_of("eval", {"limit": 8}) == job_key_of("eval", {"limit": "8"})
    e = read_result(a.path, {"config": "paper"})
    assert e.job_key != a.job_key and e.params["config"] == "paper"


def test_bench_result_and_remote_target(tmp_path):
    local = read_result(write(tmp_path / "b.json", bench_record()))
    remote = read_result(write(tmp_path / "r.json", bench_record(target={"name": "pi5", "type": "ssh",
                                                                          "device": "cpu", "threads": 4})))
    assert local.kind == remote.kind == "bench" and not local.partial
    assert local.job_key != remote.job_key
    assert remote.identity["target"] == "pi5" and remote.params["target.type"] == "ssh"
    assert remote.run_name.endswith("@pi5")
    m = local.metrics
    assert m["latency_median_ms"] == 40.0 and m["images_per_s"] == 800.0 and m["gflops"] == 3.21
    assert m["breakdown_merge_ms"] == 2.0 and m["soc_temp_after_c"] == 55.5
    assert local.series["tokens_after_step"] == [(0, 700.0), (1, 520.0)]
    assert local.params["batch_size"] == 32 and local.params["env.device_name"] == "NVIDIA H100"


def test_bad_results_fail_clearly(tmp_path):
    rec = eval_record(tmp_path)
    rec["per_class_csv"] = str(tmp_path / "gone.csv")
    with pytest.raises(TrackingError, match="gone.csv"):
        read_result(write(tmp_path / "m.json", rec))
    tr = read_result(tmp_path / "m.json", strict_artifacts=False)
    assert "gone.csv" in json.loads(tr.tags["mpm.missing_artifacts"])[0]
    with pytest.raises(TrackingError, match="unknown schema"):
        read_result(write(tmp_path / "u.json", {"schema": "other/1"}))
    with pytest.raises(TrackingError, match="incomplete"):
        read_result(write(tmp_path / "i.json", {**eval_record(tmp_path), "complete": False}))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TrackingError, match="not valid JSON"):
        read_result(tmp_path / "bad.json")


def test_store_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = resolve_store(None)
    assert s.kind == "sqlite" and s.db_path == tmp_path / "results/mlruns/mlflow.db"
    assert s.uri == f"sqlite:///{tmp_path}/results/mlruns/mlflow.db"
    assert s.artifact_root == tmp_path / "results/mlruns/artifacts"
    assert resolve_store("results/mlruns").uri == s.uri
    assert resolve_store(f"sqlite:///{tmp_path}/x.db").db_path == tmp_path / "x.db"
    assert resolve_store("http://127.0.0.1:5000/").uri == "http://127.0.0.1:5000"
    monkeypatch.setenv("MPM_TRACKING_URI", "sqlite:///other/db.db")
    assert resolve_store(None).db_path == tmp_path / "other/db.db"
    with pytest.raises(TrackingError, match="file store"):
        resolve_store("file:///tmp/mlruns")
    with pytest.raises(TrackingError, match="not initialised"):
        resolve_store(tmp_path / "nothing").require_initialised()
