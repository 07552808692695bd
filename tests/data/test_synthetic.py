"""The synthetic demo set: deterministic, ADE20K layout, prepared and read like ADE20K."""

from __future__ import annotations

import filecmp
import json
import time

import numpy as np
import pytest
from PIL import Image

from mpm.cli import main
from mpm.data import synthetic
from mpm.data.classes import SYNTHETIC_CLASSES
from mpm.data.datasets import load_split
from mpm.data.prepare import prepare_dataset
from mpm.errors import ConfigError


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthetic.generate(a, n_train=6, n_val=3, size=64, seed=3)
    synthetic.generate(b, n_train=6, n_val=3, size=64, seed=3)
    synthetic.generate(c, n_train=6, n_val=3, size=64, seed=4)
    assert _files(a) == _files(b) == _files(c)
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in _files(a))
    assert not filecmp.cmp(a / _files(a)[0], c / _files(a)[0], shallow=False)
    synthetic.generate(a, n_train=6, n_val=3, size=64, seed=3)  # a rerun rewrites the same bytes
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in _files(a))


def test_layout_labels_and_metadata(tmp_path):
    meta = synthetic.generate(tmp_path, n_train=4, n_val=2, size=64, seed=0)
    base = tmp_path / "ADEChallengeData2016"
    train_images = sorted(p.name for p in (base / "images/training").iterdir())
    assert train_images == [f"ADE_train_{i:08d}.jpg" for i in range(1, 5)]
    val_labels = sorted(p.name for p in (base / "annotations/validation").iterdir())
    assert val_labels == ["ADE_val_00000001.png", "ADE_val_00000002.png"]
    on_disk = json.loads((base / "synthetic.json").read_text())
    assert on_disk == meta and meta["synthetic"] is True and "SYNTHETIC" in meta["description"]
    assert meta["class_names"] == list(SYNTHETIC_CLASSES) and meta["num_classes"] == 8
    sizes, values = set(), set()
    for png in (base / "annotations/training").iterdir():
        label = np.asarray(Image.open(png))
        image = Image.open(base / "images/training" / (png.stem + ".jpg"))
        assert image.mode == "RGB" and image.size == (label.shape[1], label.shape[0])
        assert 64 <= min(label.shape) and max(label.shape) <= 80
        sizes.add(label.shape)
        values |= set(np.unique(label).tolist())
    assert len(sizes) > 1 and values <= set(range(9)) and len(values - {0}) >= 4
    # fewer images on a rerun: the extra files of the earlier run go away
    synthetic.generate(tmp_path, n_train=2, n_val=1, size=64, seed=0)
    assert len(list((base / "images/training").iterdir())) == 2


def test_classes_differ_in_texture_not_only_colour(tmp_path):
    rng = np.random.default_rng(0)
    image, label = synthetic.make_sample(rng, 160, 160)
    stds = {c: image[label == c].std(axis=0).mean() for c in np.unique(label) if c and (label == c).sum() > 500}
    assert stds and max(stds.values()) > 20  # stripes, dots, bricks: high local variance


def test_prepare_and_read_as_ade20k_with_k_classes(tmp_path, capsys):
    argv = ["synth", "--root", str(tmp_path), "--n-train", "5", "--n-val", "3", "--size", "64", "--seed", "1"]
    assert main(argv) == 0
    assert "8 classes" in capsys.readouterr().out
    assert main(["prepare", "ade20k", "--root", str(tmp_path)]) == 0
    split = load_split(tmp_path, "ade20k", "val")
    assert split.spec.name == "synthetic" and split.spec.num_classes == 8 and len(split) == 3
    assert split.manifest["synthetic"] is True and split.manifest["num_classes"] == 8
    sample = split[0]
    assert sample.label.max(initial=0) < 8 or 255 in sample.label
    assert set(np.unique(sample.label)) <= set(range(8)) | {255}
    prepare_dataset("synthetic", tmp_path)
    assert load_split(tmp_path, "synthetic", "train").spec.class_names == SYNTHETIC_CLASSES


def test_refuses_a_real_ade20k_root(tmp_path):
    (tmp_path / "ADEChallengeData2016/images/training").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a synthetic set"):
        synthetic.generate(tmp_path, n_train=1, n_val=1)
    with pytest.raises(Exception, match="not a synthetic set"):
        prepare_dataset("synthetic", tmp_path)


def test_default_size_set_is_fast(tmp_path):
    # 36 of the default 360 images; the whole set must stay well under 30 s on one core
    start = time.process_time()
    synthetic.generate(tmp_path, n_train=30, n_val=6, size=256, seed=0)
    per_image = (time.process_time() - start) / 36
    assert per_image * 360 < 20, f"{per_image * 360:.1f} s for the default set"
