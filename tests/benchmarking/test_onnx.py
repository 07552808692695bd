"""The optional ONNX Runtime path (dense model only); skipped without onnxruntime."""

from __future__ import annotations

import json

import pytest

from mpm.benchmarking.bench import validate_result
from mpm.benchmarking.onnx import check_onnx_spec
from mpm.cli.bench import main as bench_main
from mpm.errors import ConfigError


def test_merging_methods_are_refused(images, make_spec):
    # checked before anything is imported or exported: works without onnxruntime too
    with pytest.raises(ConfigError, match="covers only the dense model"):
        check_onnx_spec(make_spec(images, method="mpm", schedule=(2, 5)))
    with pytest.raises(ConfigError, match="covers only the dense model"):
        check_onnx_spec(make_spec(images, method="mpm", schedule=(2, 5), batch_policy="batch-min"))
    with pytest.raises(ConfigError, match="float32 only"):
        check_onnx_spec(make_spec(images, method="none", schedule=(), dtype="float16"))
    check_onnx_spec(make_spec(images, method="none", schedule=()))


def test_dense_point_with_onnxruntime(images, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="optional extra: pip install 'mpm[onnx]'")
    pytest.importorskip("onnx", reason="optional extra: pip install 'mpm[onnx]'")
    out = tmp_path / "onnx.json"
    rc = bench_main(["--runtime", "onnxruntime", "--images", str(images), "--model", "T", "--num-classes", "3",
                     "--crop", "64", "--method", "none", "--threads", "1", "--iters", "3", "--warmup", "1",
                     "--pool-batches", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert validate_result(result) == []
    runtime = result["runtime"]
    assert runtime["name"] == "onnxruntime" and runtime["providers"] == ["CPUExecutionProvider"]
    assert runtime["max_abs_diff_vs_torch"] < 1e-3
    assert result["timing"]["iterations"] == 3 and result["breakdown_ms"]["merge_ms"] is None
    assert result["tokens"] == {"full": 16, "after_step_mean": [], "after_step_std": []}


def test_cli_refuses_merging_with_onnxruntime(images, tmp_path, capsys):
    out = tmp_path / "onnx.json"
    rc = bench_main(["--runtime", "onnxruntime", "--images", str(images), "--method", "mpm", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "covers only the dense model" in err or "needs the onnxruntime package" in err
