"""`mpm bench` on this host: a complete, schema-valid result; nothing written on failure."""

from __future__ import annotations

import argparse
import json

import jsonschema
import pytest
import torch
import yaml

from mpm.benchmarking.bench import SCHEMA_FILE, BenchSpec
from mpm.cli import COMMAND_MODULES
from mpm.cli.bench import main as bench_main
from mpm.cli.bench import register


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_local_cpu_point_is_complete_and_schema_valid(images, tmp_path, tiny_point, validator, capsys):
    config = tmp_path / "targets.yaml"
    config.write_text(yaml.safe_dump({"targets": {"cpu2": {"type": "local", "device": "cpu", "threads": 2}}}))
    out = tmp_path / "out" / "point.json"
    rc = bench_main(["--targets-config", str(config), "--target", "cpu2", "--images", str(images), *tiny_point,
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "ms/img" in captured.out and f"wrote {out}" in captured.out
    result = json.loads(out.read_text())
    validator.validate(result)
    assert result["target"] == {"name": "cpu2", "type": "local", "device": "cpu", "threads": 2}
    assert result["runtime"]["name"] == "torch"
    assert result["spec"]["threads"] == 2 and result["environment"]["torch_threads"] == 2
    assert result["spec"]["schedule"] == [2, 5] and result["method"]["method"] == "mpm"
    assert result["tokens"]["full"] == 16 and all(0 < t <= 16 for t in result["tokens"]["after_step_mean"])
    assert set(result["breakdown_ms"]) == {"embed_and_encoder_ms", "merge_ms", "unmerge_ms", "decoder_ms"}
    assert result["gflops"] > 0
    # the result's spec reproduces the point
    assert BenchSpec.from_dict(result["spec"]).crop == (64, 64)


def test_spec_file_and_default_schedule(images, tmp_path, validator):
    spec = BenchSpec(images=str(images), model="T", num_classes=3, crop=(64, 64), method="none", iters=1,
                     warmup=0, breakdown_iters=0, pool_batches=1, backend="math")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    out = tmp_path / "r.json"
    # --method mpm overrides the file; no --schedule: the paper's MPM(2,5)
    assert bench_main(["--spec", str(spec_file), "--method", "mpm", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    validator.validate(result)
    assert result["spec"]["method"] == "mpm" and result["spec"]["schedule"] == [2, 5]
    assert result["spec"]["iters"] == 1 and result["timing"]["iterations"] == 1


def test_failure_writes_nothing_and_keeps_old_output(images, tmp_path, tiny_point, capsys):
    out = tmp_path / "r.json"
    out.write_text("old\n")
    args = [a if a != "2,5" else "2,99" for a in tiny_point]  # block 99 of a 12-block encoder
    rc = bench_main(["--images", str(images), *args, "--out", str(out)])
    assert rc == 2
    assert "schedule blocks [99] out of range" in capsys.readouterr().err
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_registered_in_the_mpm_command():
    parser = argparse.ArgumentParser(prog="mpm")
    register(parser.add_subparsers(dest="command"))
    assert "mpm.cli.bench" in COMMAND_MODULES
    args = parser.parse_args(["bench", "--images", "x", "--schedule", "1,3", "--crop", "32,48",
                                      "--method-arg", "r=4", "--out", "o.json"])
    assert args.command == "bench" and args.schedule == (1, 3) and args.crop == (32, 48)
    assert args.method_args == ["r=4"] and args.target == "local" and args.runtime == "torch"


def test_mode_is_recorded_and_graphs_needs_cuda(images, tmp_path, tiny_point, validator, capsys):
    out = tmp_path / "eager.json"
    assert bench_main(["--images", str(images), *tiny_point, "--mode", "eager", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    validator.validate(result)
    assert result["spec"]["mode"] == "eager" and result["execution"]["mode"] == "eager"
    assert result["execution"]["graphs"] == 0 and result["execution"]["pad_share"] >= 0
    bad = tmp_path / "graphs.json"
    capsys.readouterr()
    assert bench_main(["--images", str(images), *tiny_point, "--mode", "graphs", "--out", str(bad)]) == 2
    assert "'graphs' (CUDA graphs) needs a CUDA device" in capsys.readouterr().err
    assert not bad.exists()


def test_photos_source(tmp_path, tiny_point, validator):
    pytest.importorskip("skimage")
    from mpm.benchmarking.images import PHOTOS_SOURCE, skimage_photos

    batch, source = skimage_photos(32, (48, 40))
    assert batch.shape == (32, 3, 48, 40) and batch.dtype == torch.uint8
    assert len({bytes(img.numpy().tobytes()) for img in batch}) == 32  # flips and crops: distinct images
    assert source["source"] == PHOTOS_SOURCE and not source["repeated"] and len(source["photos"]) == 8
    out = tmp_path / "photos.json"
    assert bench_main(["--images", PHOTOS_SOURCE, *tiny_point, "--out", str(out)]) == 0
    validator.validate(json.loads(out.read_text()))


def test_ratio_statistics_mark_noise():
    from mpm.benchmarking.timing import interleaved, ratio_stats

    fast = ratio_stats([10.0, 11.0, 10.5], [8.0, 8.5, 8.2])
    assert fast.significant and 1.2 < fast.median < 1.3 and fast.low <= fast.median <= fast.high
    noisy = ratio_stats([10.0, 8.0, 10.0], [9.0, 9.0, 9.0])
    assert not noisy.significant and noisy.to_dict()["significant"] is False
    with pytest.raises(ValueError):
        ratio_stats([1.0], [])
    calls = []
    times = interleaved({"a": lambda i: calls.append("a"), "b": lambda i: calls.append("b")}, torch.device("cpu"),
                        iters=2, repeats=3, warmup=1, on_round=lambda r: calls.append(f"round {r}"))
    # warm-up, then on the CPU call by call, the order rotating
    assert calls == ["a", "b"] + [c for r in range(3) for c in ("a", "b", "b", "a", f"round {r}")]
    assert [len(v) for v in times.values()] == [3, 3]
    calls.clear()
    cpu: dict = {}
    times = interleaved({"a": lambda i: calls.append("a"), "b": lambda i: calls.append("b")}, torch.device("cpu"),
                        iters=2, repeats=3, warmup=1, cpu_ms=cpu, per_call=False)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # blocks (the CUDA default)
    assert [len(v) for v in times.values()] == [3, 3] and [len(v) for v in cpu.values()] == [3, 3]


def test_an_invalid_record_is_refused_on_write_naming_the_field(images, tmp_path, tiny_point, monkeypatch, capsys):
    """The point's record is checked against its schema before it is written: a bad one writes nothing."""
    import mpm.benchmarking.running as running

    real = running.run_local

    def without_timing(*args, **kwargs):
        record = real(*args, **kwargs)
        del record["timing"]
        return record

    monkeypatch.setattr(running, "run_local", without_timing)
    out = tmp_path / "out" / "point.json"
    rc = bench_main(["--images", str(images), *tiny_point, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "timing" in err and str(out) in err and "Traceback" not in err
    assert not out.exists() and list(out.parent.glob("*")) == []
