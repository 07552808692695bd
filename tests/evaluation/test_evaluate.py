"""mpm eval: protocol, record schema, partial runs, tokens/GFLOPs, crash safety, CLI."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from mpm_testing import synthetic_set

from mpm.cli import main
from mpm.cli.eval import parse_method_args, parse_schedule
from mpm.data.classes import SYNTHETIC_CLASSES
from mpm.data.datasets import get_spec, load_split
from mpm.errors import BackendError, ConfigError
from mpm.evaluation import ConfusionMatrix, EvalResult, eval_protocol, evaluate, predict
from mpm.evaluation.evaluate import SCHEMA
from mpm.models import Segmenter, SegmenterConfig, build_segmenter, save_segmenter

TOP_KEYS = {
    "schema", "complete", "partial", "limit", "created_utc", "dataset", "images", "checkpoint", "model",
    "method", "protocol", "run", "metrics", "tokens", "gflops", "wall_time_s", "images_per_s", "device",
    "dtype", "backend", "environment", "confusion_matrix",
}


def tiny_config(**kw) -> SegmenterConfig:
    base = dict(num_classes=len(SYNTHETIC_CLASSES), embed_dim=32, depth=6, num_heads=2, image_size=(64, 64),
                decoder_depth=1)
    base.update(kw)
    return SegmenterConfig(**base)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthetic_set(tmp_path_factory.mktemp("synth"), n_train=2, n_val=4, size=64, seed=3)


@pytest.fixture(scope="module")
def split(data_root):
    return load_split(data_root, "synthetic", "val")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_segmenter(tiny_config())
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_segmenter(model, path)
    return path


def load(checkpoint):
    from mpm.models import load_segmenter

    return load_segmenter(checkpoint)


def run(checkpoint, split, **kw) -> EvalResult:
    kw.setdefault("progress", False)
    return evaluate(load(checkpoint), split, checkpoint=checkpoint, **kw)


@pytest.fixture(scope="module")
def dense(checkpoint, split):
    return run(checkpoint, split, method="none", batch_size=1)


@pytest.fixture(scope="module")
def merged(checkpoint, split):
    return run(checkpoint, split, method="mpm", schedule=(2, 5), batch_size=1)


# --------------------------------------------------------------------------- protocol


def test_protocol_follows_dataset_and_model_crop():
    ade = get_spec("ade20k")
    t = eval_protocol(ade, SegmenterConfig.preset("T", 150))
    assert (t.crop, t.stride, t.test_scale, t.source) == ((512, 512), (480, 480), (2048, 512), "dataset")
    big = eval_protocol(ade, SegmenterConfig.preset("L", 150))  # ViT-L at 640: mmseg's 640/608, (2560, 640)
    assert (big.crop, big.stride, big.test_scale, big.source) == ((640, 640), (608, 608), (2560, 640), "model")
    city = eval_protocol(get_spec("cityscapes"), SegmenterConfig.preset("L", 19, image_size=(768, 768)))
    assert (city.crop, city.stride, city.test_scale) == ((768, 768), (512, 512), (2048, 1024))
    small = eval_protocol(get_spec("synthetic"), tiny_config())  # overlap kept would leave no stride: scaled
    assert (small.crop, small.stride, small.test_scale) == ((64, 64), (48, 48), (256, 64))
    over = eval_protocol(ade, SegmenterConfig.preset("T", 150), stride=256, test_scale=(1024, 256))
    assert (over.stride, over.test_scale, over.source) == ((256, 256), (1024, 256), "override")
    assert t.mean == (127.5, 127.5, 127.5) and t.std == (127.5, 127.5, 127.5)
    with pytest.raises(ConfigError):
        eval_protocol(ade, SegmenterConfig.preset("T", 150), stride=600)


def test_cli_parsers():
    assert parse_schedule("2,5") == (2, 5)
    assert parse_schedule("[2, 5]") == (2, 5)
    assert parse_schedule("none") == () and parse_schedule("") == () and parse_schedule(None) is None
    with pytest.raises(ConfigError):
        parse_schedule("2;5")
    assert parse_method_args(["r=8", "prop_attn=true", "window=2,2", "metric=keys", "global_threshold=none"]) == {
        "r": 8, "prop_attn": True, "window": (2, 2), "metric": "keys", "global_threshold": None}
    with pytest.raises(ConfigError):
        parse_method_args(["r"])


# --------------------------------------------------------------------------- the record


def test_record_schema_complete(dense, split, checkpoint):
    rec = dense.to_dict()
    assert TOP_KEYS <= set(rec), TOP_KEYS - set(rec)
    assert rec["schema"] == SCHEMA == "mpm.eval/1"
    assert rec["complete"] is True and rec["partial"] is False and rec["limit"] is None
    assert rec["images"] == {"evaluated": 4, "total": 4, "limit": None, "partial": False}
    ds = rec["dataset"]
    assert ds["name"] == "synthetic" and ds["split"] == "val" and ds["synthetic"] is True
    assert ds["class_names"] == list(SYNTHETIC_CLASSES) and ds["num_classes"] == 8
    assert ds["reduce_zero_label"] is True and ds["ignore_index"] == 255
    ck = rec["checkpoint"]
    assert ck["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert ck["bytes"] == checkpoint.stat().st_size and ck["path"].endswith("tiny.pth")
    assert rec["model"]["config"] == tiny_config().to_dict()
    assert rec["model"]["parameters"] > 0 and rec["model"]["name"].startswith("Seg-")
    assert rec["method"] == {"method": "none", "schedule": [], "batch_policy": "exact"}
    assert rec["protocol"]["crop"] == [64, 64] and rec["protocol"]["stride"] == [48, 48]
    assert rec["protocol"]["test_scale"] == [256, 64]
    m = rec["metrics"]
    for key in ("mIoU", "aAcc", "mAcc", "IoU", "Acc", "class_names", "gt_pixels", "pred_pixels"):
        assert key in m
    assert m["mIoU"] == pytest.approx(dense.metrics.mIoU) and 0 <= m["aAcc"] <= 100
    assert len(m["IoU"]) == 8
    assert rec["device"] == "cpu" and rec["dtype"] == "float32" and rec["backend"] == "math"
    assert rec["environment"]["torch"] == torch.__version__
    assert rec["wall_time_s"] > 0
    assert rec["tokens"]["steps"] == [] and rec["tokens"]["image_tokens"]["mean"] == 16.0
    g = rec["gflops"]
    assert g["per_window"] == pytest.approx(g["dense_per_window"]) and g["ratio_to_dense"] == pytest.approx(1.0)
    assert g["windows"] == rec["run"]["windows"] == rec["tokens"]["windows"] >= 4
    cm = np.asarray(rec["confusion_matrix"])
    assert cm.shape == (8, 8) and cm.sum() == sum(m["gt_pixels"])
    json.dumps(rec, allow_nan=False)  # strict JSON


def test_limit_marks_partial(checkpoint, split):
    res = run(checkpoint, split, method="mpm", schedule=(2, 5), limit=2)
    rec = res.to_dict()
    assert rec["partial"] is True and rec["limit"] == 2
    assert rec["images"] == {"evaluated": 2, "total": 4, "limit": 2, "partial": True}
    assert "PARTIAL" in res.summary_line()
    full = run(checkpoint, split, method="mpm", schedule=(2, 5), limit=10)  # a limit above the size: full
    assert full.to_dict()["partial"] is False and full.to_dict()["limit"] == 10


def test_matches_predict_image_by_image(dense, checkpoint, split):
    model = load(checkpoint)
    cm = ConfusionMatrix(8)
    for sample in split:
        pred, _ = predict(model, sample.image, 8, scale=(256, 64), crop=64, stride=48, batch_size=1)
        cm.update(pred, sample.label)
    np.testing.assert_array_equal(cm.mat, dense.confusion)


def test_mpm_tokens_and_flops(dense, merged):
    d, m = dense.to_dict(), merged.to_dict()
    assert m["method"]["method"] == "mpm" and m["method"]["schedule"] == [2, 5]
    steps = m["tokens"]["steps"]
    assert [(s["step"], s["block"], s["site"]) for s in steps] == [(0, 2, "before_block"), (1, 5, "before_block")]
    full = m["tokens"]["image_tokens"]["mean"]
    for s in steps:
        assert s["min"] <= s["mean"] <= s["max"] <= full and s["std"] >= 0
        assert 0 < s["kept_fraction"] <= 1
    assert steps[1]["mean"] <= steps[0]["mean"] and steps[0]["min"] >= full / 2  # one insertion: at most half
    assert m["tokens"]["after_step_mean"] == [s["mean"] for s in steps]
    g, gd = m["gflops"], d["gflops"]
    assert g["windows"] == gd["windows"]
    assert g["dense_per_window"] == pytest.approx(gd["per_window"])  # dense reference of the same windows
    assert g["per_window"] < g["dense_per_window"] and g["ratio_to_dense"] < 1
    assert g["breakdown_per_window"]["merge"] > 0 and gd["breakdown_per_window"]["merge"] == 0
    assert g["per_image"] == pytest.approx(g["per_window"] * g["windows"] / 4)


def test_window_batching_across_images(merged, checkpoint, split):
    batched = run(checkpoint, split, method="mpm", schedule=(2, 5), batch_size=3, workers=0)
    b = batched.to_dict()
    assert b["run"]["forwards"] < merged.to_dict()["run"]["forwards"]
    assert b["run"]["windows"] == merged.to_dict()["run"]["windows"]
    # the exact policy gives every window what it gets alone (up to float rounding)
    diff = np.abs(batched.confusion - merged.confusion).sum()
    assert diff <= 0.002 * merged.confusion.sum()
    for s, t in zip(b["tokens"]["steps"], merged.to_dict()["tokens"]["steps"]):
        assert s["mean"] == pytest.approx(t["mean"], rel=0.01)
    assert b["gflops"]["padded_per_window"] >= b["gflops"]["per_window"]


def test_errors(checkpoint, split):
    with pytest.raises(ConfigError):
        evaluate(build_segmenter(tiny_config(num_classes=5)), split, progress=False)
    with pytest.raises(BackendError):
        evaluate(load(checkpoint), split, backend="fa2", progress=False)
    with pytest.raises(ConfigError):
        evaluate(load(checkpoint), split, method="mpm", schedule=(2, 9), progress=False)
    with pytest.raises(ConfigError):
        evaluate(load(checkpoint), split, limit=0, progress=False)


# --------------------------------------------------------------------------- files


def test_per_class_csv(dense, tmp_path):
    out = dense.save(tmp_path / "r.json", per_class_csv=tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv", encoding="utf-8")))
    assert [r["class_name"] for r in rows] == list(SYNTHETIC_CLASSES)
    assert [int(r["class_index"]) for r in rows] == list(range(8))
    rec = json.loads(out.read_text())
    assert rec["per_class_csv"] == str((tmp_path / "r.csv").resolve())
    for r, iou in zip(rows, rec["metrics"]["IoU"]):
        assert (r["IoU"] == "nan") if iou is None else float(r["IoU"]) == pytest.approx(iou)


class CrashOnThird(Segmenter):
    """A Segmenter whose third forward (third window with batch size 1) fails."""

    calls = 0

    def forward(self, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == 3:
            raise RuntimeError("simulated crash on the 3rd window")
        return super().forward(*args, **kwargs)


def test_crash_leaves_previous_output(dense, checkpoint, split, tmp_path):
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    dense.save(out, per_class_csv=table)
    before = (out.read_bytes(), table.read_bytes())
    model = CrashOnThird(tiny_config())
    model.load_state_dict(load(checkpoint).state_dict())
    with pytest.raises(RuntimeError, match="3rd window"):
        evaluate(model, split, batch_size=1, progress=False).save(out, per_class_csv=table)
    assert (out.read_bytes(), table.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temp files


def test_cli_end_to_end(checkpoint, data_root, tmp_path, capsys):
    out, table = tmp_path / "res" / "mpm.json", tmp_path / "res" / "mpm.csv"
    rc = main(["eval", "--data-root", str(data_root), "--dataset", "synthetic", "--checkpoint", str(checkpoint),
               "--method", "mpm", "--schedule", "2,5", "--batch-size", "2", "--out", str(out),
               "--per-class-csv", str(table), "--no-progress", "--limit", "3"])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["schema"] == "mpm.eval/1" and rec["method"]["schedule"] == [2, 5]
    assert rec["partial"] is True and rec["images"]["evaluated"] == 3
    assert rec["run"]["batch_size"] == 2 and len(rec["tokens"]["steps"]) == 2
    assert table.is_file()
    line = capsys.readouterr().out
    assert "mIoU" in line and "GFLOPs" in line and "tokens" in line
    # the default schedule of --method mpm is the paper's (2, 5); a ToMe run takes --method-arg
    out2 = tmp_path / "res" / "tome.json"
    assert main(["eval", "--data-root", str(data_root), "--dataset", "synthetic", "--checkpoint",
                 str(checkpoint), "--method", "tome", "--schedule", "0,1", "--method-arg", "r=3",
                 "--out", str(out2), "--no-progress"]) == 0
    rec2 = json.loads(out2.read_text())
    assert rec2["method"]["method"] == "tome" and rec2["method"]["r"] == 3
    assert rec2["tokens"]["steps"][0]["mean"] == rec2["tokens"]["image_tokens"]["mean"] - 3
    # --out FOLDER/: one file per (dataset, split, model, method, schedule); a partial run is named so
    folder = tmp_path / "all"
    base = ["eval", "--data-root", str(data_root), "--dataset", "synthetic", "--checkpoint", str(checkpoint),
            "--out", str(folder) + "/", "--no-progress"]
    assert main(base + ["--method", "mpm"]) == 0
    assert main(base + ["--method", "none", "--limit", "2"]) == 0
    assert main(base + ["--method", "tome", "--schedule", "0,1", "--method-arg", "r=3"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "synthetic-val__tiny__mpm-2_5.json", "synthetic-val__tiny__none__limit2.json",
        "synthetic-val__tiny__tome-0_1-r3.json"]
    assert json.loads((folder / "synthetic-val__tiny__mpm-2_5.json").read_text())["method"]["schedule"] == [2, 5]


def test_cli_interrupt_writes_nothing(checkpoint, data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.json"
    args = ["eval", "--data-root", str(data_root), "--dataset", "synthetic", "--checkpoint", str(checkpoint),
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    before = out.read_bytes()
    calls = {"n": 0}
    forward = Segmenter.forward

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return forward(self, *a, **k)

    monkeypatch.setattr(Segmenter, "forward", interrupted)
    assert main(args + ["--method", "mpm"]) == 130
    assert "nothing written" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    # a bad checkpoint is a one-line error, no output
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.undo()
    assert main(["eval", "--data-root", str(data_root), "--dataset", "synthetic", "--checkpoint", str(bad),
                 "--out", str(tmp_path / "x.json"), "--no-progress"]) == 2
    assert not (tmp_path / "x.json").exists()


# --------------------------------------------------------------------------- refused before the work


@pytest.fixture
def count_forwards(monkeypatch):
    calls = {"n": 0}
    forward = Segmenter.forward

    def counted(self, *a, **k):
        calls["n"] += 1
        return forward(self, *a, **k)

    monkeypatch.setattr(Segmenter, "forward", counted)
    return calls


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@pytest.mark.parametrize("extra, named", [
    (["--out", "{file}/r.json"], "argument --out: cannot write there: {file} is a file, not a folder"),
    (["--per-class-csv", "{file}/c.csv"], "argument --per-class-csv: cannot write there: {file} is a file"),
    (["--method", "none", "--schedule", "2,5"], "--schedule 2,5: method 'none' never merges"),
    (["--crop", "0"], "argument --crop: expected an integer >= 1, got '0'"),
    (["--stride", "-4"], "argument --stride: expected an integer >= 1"),
    (["--threads", "0"], "argument --threads: expected an integer >= 1, got '0'"),
    (["--workers", "-1"], "argument --workers: expected an integer >= 0, got '-1'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1"),
    (["--limit", "0"], "argument --limit: expected an integer >= 1"),
    (["--test-scale", "512"], "argument --test-scale: expected two sizes"),
    (["--checkpoint", "{file}.missing"], "argument --checkpoint: {file}.missing does not exist"),
    pytest.param(["--device", "cuda"], "--device cuda: no usable CUDA GPU on this machine", marks=NO_GPU),
    pytest.param(["--device", "cuda:1"], "--device cuda:1: no usable CUDA GPU", marks=NO_GPU),
])
def test_cli_refuses_bad_options_before_the_work(checkpoint, data_root, tmp_path, capsys, count_forwards,
                                                 extra, named):
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    argv = ["eval", "--data-root", str(data_root), "--dataset", "synthetic", "--checkpoint", str(checkpoint),
            "--out", str(tmp_path / "r.json"), "--no-progress"] + [a.format(file=file) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mpm eval: error: ") and "Traceback" not in err, err
    assert named.format(file=file) in err
    assert count_forwards["n"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_cli_label_of_another_size_fails_before_the_work(checkpoint, tmp_path, capsys, count_forwards):
    from PIL import Image

    root = synthetic_set(tmp_path / "synth", n_train=1, n_val=3, size=64, seed=1)
    split = load_split(root, "synthetic", "val")
    image, label = split.image_paths[2], split.label_paths[2]
    w, h = Image.open(image).size
    Image.fromarray(np.zeros((h + 9, w + 17), np.uint8)).save(label)  # changed after `mpm prepare`
    out = tmp_path / "r.json"
    assert main(["eval", "--data-root", str(root), "--dataset", "synthetic", "--checkpoint", str(checkpoint),
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"image {image} is {w}x{h}" in err and f"label {label} is" in err
    assert count_forwards["n"] == 0 and not out.exists()
    # --limit 2 reads only the two good pairs
    assert main(["eval", "--data-root", str(root), "--dataset", "synthetic", "--checkpoint", str(checkpoint),
                 "--out", str(out), "--no-progress", "--limit", "2"]) == 0


@NO_GPU
def test_evaluate_on_cuda_without_gpu_is_a_config_error(checkpoint, split):
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        evaluate(load(checkpoint), split, device="cuda", progress=False)


def test_cli_missing_synthetic_set_names_mpm_synth(checkpoint, tmp_path, capsys):
    assert main(["eval", "--data-root", str(tmp_path / "nowhere"), "--dataset", "synthetic", "--checkpoint",
                 str(checkpoint), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"mpm synth --root {tmp_path / 'nowhere'} --prepare" in err and "prepare ade20k" not in err
