"""mpm train-demo: deterministic by seed, a loadable checkpoint and its sidecar, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from mpm_testing import synthetic_set

from mpm.cli import main
from mpm.data.classes import SYNTHETIC_CLASSES
from mpm.data.datasets import load_split
from mpm.errors import ConfigError
from mpm.evaluation import evaluate, train_demo
from mpm.evaluation.train_demo import TrainDemoConfig, sidecar_path
from mpm.models import SegmenterConfig, load_segmenter

FAST = dict(steps=5, batch_size=2, train_crop=32, warmup_steps=2, log_every=2, threads=1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return synthetic_set(tmp_path_factory.mktemp("synth"), n_train=12, n_val=4, size=64, seed=5)


@pytest.fixture(scope="module")
def first(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "demo.pth"
    side = train_demo(data_root, out, seed=0, progress=False, log=lambda msg: None, **FAST)
    return out, side


def tensors(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_checkpoint_and_sidecar(first, data_root):
    out, side = first
    model = load_segmenter(out)
    spec = load_split(data_root, "synthetic", "val").spec
    # the real ViT-T/16 architecture, saved at the dataset's evaluation crop
    assert model.config == SegmenterConfig.preset("T", len(SYNTHETIC_CLASSES), image_size=(256, 256))
    assert model.config.image_size == (spec.crop_size, spec.crop_size)
    on_disk = json.loads(sidecar_path(out).read_text())
    assert on_disk == json.loads(json.dumps(side))
    assert side["synthetic"] is True and "SYNTHETIC" in side["note"] and side["kind"] == "mpm-demo-model"
    assert side["steps_done"] == 5 and side["stopped_by"] == "steps" and side["deterministic"] is True
    assert side["training"]["steps"] == 5 and side["training"]["seed"] == 0
    assert side["training"]["optimizer"] == "AdamW" and "ignore_index=255" in side["training"]["loss"]
    assert side["data"]["images"] == 12 and side["data"]["class_names"] == list(SYNTHETIC_CLASSES)
    assert side["model"]["trained_image_size"] == [32, 32]
    assert side["loss"]["first"] > 0 and len(side["loss"]["curve"]) == 3
    assert side["wall_time_s"]["train"] > 0
    assert side["checkpoint"]["sha256"] and side["checkpoint"]["bytes"] == out.stat().st_size
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()  # restored
    # mpm eval reads it; the sidecar travels into the eval record
    res = evaluate(model, load_split(data_root, "synthetic", "val"), method="mpm", schedule=(2, 5), limit=1,
                   checkpoint=out, progress=False)
    rec = res.to_dict()
    assert rec["checkpoint"]["sidecar"]["synthetic"] is True and rec["protocol"]["crop"] == [256, 256]


def test_same_seed_same_weights_cli(first, data_root, tmp_path, capsys):
    out_a, _ = first
    out_b = tmp_path / "demo.pth"
    rc = main(["train-demo", "--data-root", str(data_root), "--out", str(out_b), "--seed", "0", "--steps", "5",
               "--batch-size", "2", "--train-crop", "32", "--threads", "1", "--no-progress"])
    assert rc == 0 and "5 steps" in capsys.readouterr().out
    a, b = tensors(out_a), tensors(out_b)
    # the CLI uses the recipe's warm-up (not FAST's), which is irrelevant at step 0 only: compare configs
    assert json.loads(sidecar_path(out_b).read_text())["training"]["warmup_steps"] == TrainDemoConfig().warmup_steps
    assert a.keys() == b.keys()
    c = tmp_path / "again.pth"
    train_demo(data_root, c, seed=0, progress=False, log=lambda msg: None, **FAST)
    assert all(torch.equal(a[k], v) for k, v in tensors(c).items())
    d = tmp_path / "seed1.pth"
    train_demo(data_root, d, seed=1, progress=False, log=lambda msg: None, **FAST)
    assert not all(torch.equal(a[k], v) for k, v in tensors(d).items())


def test_bad_settings(data_root, tmp_path):
    with pytest.raises(ConfigError):
        train_demo(data_root, tmp_path / "x.pth", train_crop=512, progress=False, steps=1)
    with pytest.raises(ConfigError):
        train_demo(data_root, tmp_path / "x.pth", no_such_option=1, progress=False)
    assert not (tmp_path / "x.pth").exists()


class _SlowClock:
    """A ``time`` stand-in whose clock jumps 1000 s at each read: any hidden time cap would trip."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1000.0
        return self.now


def test_no_time_cap(data_root, tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("mpm.evaluation.train_demo")  # the package re-exports the function's name
    monkeypatch.setattr(module, "time", _SlowClock())  # hours "pass" between steps
    out = tmp_path / "slow.pth"
    side = train_demo(data_root, out, seed=0, progress=False, log=lambda msg: None, **{**FAST, "steps": 7})
    assert side["steps_done"] == 7 == side["training"]["steps"] and side["stopped_by"] == "steps"
    assert len(side["loss"]["curve"]) == 4 and side["loss"]["curve"][-1]["step"] == 6
    assert "max_seconds" not in side["training"] and not hasattr(TrainDemoConfig(), "max_seconds")
    assert out.is_file() and sidecar_path(out).is_file()


def test_time_limit_aborts_and_writes_nothing(data_root, tmp_path, capsys):
    from mpm.evaluation.train_demo import TrainTimeLimit

    out = tmp_path / "limited.pth"
    with pytest.raises(TrainTimeLimit, match=r"time limit of 1e-09 s after 1 of 5 steps; aborted"):
        train_demo(data_root, out, seed=0, progress=False, log=lambda msg: None, time_limit=1e-9, **FAST)
    assert list(tmp_path.iterdir()) == []
    # the CLI: one line, exit status 2, an earlier checkpoint left as it was
    out.write_bytes(b"earlier")
    rc = main(["train-demo", "--data-root", str(data_root), "--out", str(out), "--steps", "5", "--batch-size", "2",
               "--train-crop", "32", "--threads", "1", "--time-limit", "1e-9", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("mpm train-demo: error: training passed the time limit of 1e-09 s after 1 of 5")
    assert "not written" in err[-1] and "steps only" in err[-1]
    assert out.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["limited.pth"]
    with pytest.raises(ConfigError, match="time_limit"):
        train_demo(data_root, out, progress=False, time_limit=0, **FAST)


def test_unwritable_checkpoint_fails_before_training(data_root, tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("mpm.evaluation.train_demo")
    monkeypatch.setattr(module, "_load_train_set", lambda *a, **k: pytest.fail("training started"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write the checkpoint"):
        train_demo(data_root, tmp_path / "file" / "demo.pth", progress=False, **FAST)
    with pytest.raises(ConfigError, match="is a folder"):
        train_demo(data_root, tmp_path, progress=False, **FAST)
