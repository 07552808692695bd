"""``mpm prepare`` on small fixtures in the real source formats, manifests and the reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _data_fixtures import (
    CS_FRAMES,
    CS_OBJECTS,
    ade20k_members,
    cityscapes_members,
    pascal_context_json,
    voc_members,
    write_members,
)
from PIL import Image

from mpm.cli import main
from mpm.data import rle
from mpm.data.datasets import get_spec, load_split, reduce_zero_label
from mpm.data.manifest import manifest_path, read_manifest
from mpm.data.prepare import prepare_dataset
from mpm.errors import DatasetError

# -- ADE20K -----------------------------------------------------------------------------


def test_ade20k_manifest_and_reader(tmp_path, capsys):
    members = ade20k_members(n_train=3, n_val=2)
    write_members(tmp_path, members)
    assert main(["prepare", "ade20k", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(manifest_path(tmp_path, "ade20k", s)) for s in ("train", "val")]
    manifest = read_manifest(manifest_path(tmp_path, "ade20k", "val"))
    assert manifest["dataset"] == "ade20k" and manifest["split"] == "val" and manifest["source_split"] == "validation"
    assert manifest["num_classes"] == 150 and manifest["class_names"][0] == "wall"
    assert manifest["ignore_index"] == 255 and manifest["reduce_zero_label"] is True
    assert manifest["num_samples"] == 2 and manifest["expected_num_samples"] == 2000 and not manifest["complete"]
    first = manifest["samples"][0]
    assert first["image"] == "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg"
    assert first["label"] == "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png"
    import hashlib
    assert first["label_sha256"] == hashlib.sha256(members[first["label"]]).hexdigest()

    split = load_split(tmp_path, "ade20k", "validation")
    assert len(split) == 2 and split.spec.num_classes == 150 and split.spec.test_scale == (2048, 512)
    sample = split[1]
    stored = np.asarray(Image.open(tmp_path / first["label"].replace("00000001", "00000002")))
    assert sample.image.dtype == np.uint8 and sample.image.shape == stored.shape + (3,)
    assert sample.label.dtype == np.uint8
    assert np.array_equal(sample.label == 255, stored == 0)
    assert np.array_equal(sample.label[stored > 0], stored[stored > 0] - 1)
    assert [s.name for s in split] == ["ADE_val_00000001", "ADE_val_00000002"]
    assert len(split[:1]) == 1 and split.verify() == []


def test_reduce_zero_label():
    label = np.array([[0, 1, 150, 255]], np.uint8)
    assert reduce_zero_label(label).tolist() == [[255, 0, 149, 255]]


def test_bad_files_fail_prepare_with_the_list(tmp_path):
    write_members(tmp_path, ade20k_members(n_train=3, n_val=1))
    base = tmp_path / "ADEChallengeData2016"
    (base / "images/training/ADE_train_00000002.jpg").write_bytes(b"not a jpeg")
    (base / "annotations/training/ADE_train_00000003.png").unlink()
    with pytest.raises(DatasetError) as err:
        prepare_dataset("ade20k", tmp_path, splits=["train"])
    assert "ADE_train_00000003.png" in str(err.value)
    (base / "annotations/training/ADE_train_00000003.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError) as err:
        prepare_dataset("ade20k", tmp_path, splits=["train"])
    message = str(err.value)
    assert "2 bad file(s)" in message and "ADE_train_00000002.jpg" in message and "ADE_train_00000003.png" in message
    report = manifest_path(tmp_path, "ade20k", "train").with_suffix(".bad.txt")
    assert len(report.read_text().splitlines()) == 2
    assert not manifest_path(tmp_path, "ade20k", "train").exists()


def test_missing_dataset_and_manifest_say_what_to_run(tmp_path):
    with pytest.raises(DatasetError, match="mpm fetch dataset ade20k"):
        prepare_dataset("ade20k", tmp_path)
    with pytest.raises(DatasetError, match="mpm prepare ade20k --root"):
        load_split(tmp_path, "ade20k", "val")


def test_missing_synthetic_set_names_the_synth_command(tmp_path):
    from mpm.data.synthetic import generate

    for root in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(DatasetError) as err:
            load_split(root, "synthetic", "val")
        assert f"mpm synth --root {root} --prepare" in str(err.value) and "mpm prepare ade20k" not in str(err.value)
    generate(tmp_path, n_train=1, n_val=1, size=32)  # generated, not prepared
    with pytest.raises(DatasetError, match=f"run `mpm prepare synthetic --root {tmp_path}`"):
        load_split(tmp_path, "synthetic", "val")


def test_label_of_another_size_names_both_files(tmp_path):
    write_members(tmp_path, ade20k_members(n_train=1, n_val=2))
    prepare_dataset("ade20k", tmp_path)
    split = load_split(tmp_path, "ade20k", "val")
    split.check_sizes()
    image, label = split.image_paths[1], split.label_paths[1]
    w, h = Image.open(image).size
    Image.fromarray(np.zeros((h + 9, w + 17), np.uint8)).save(label)  # replaced after prepare
    for check in (split.check_sizes, lambda: split[1]):
        with pytest.raises(DatasetError) as err:
            check()
        msg = str(err.value)
        assert f"image {image} is {w}x{h}" in msg and f"label {label} is {w + 17}x{h + 9}" in msg
    split.check_sizes(limit=1)  # only the first sample
    label.unlink()
    with pytest.raises(DatasetError, match=f"missing: {label}"):
        split.check_sizes()
    Image.fromarray(np.zeros((h + 9, w + 17), np.uint8)).save(label)
    with pytest.raises(DatasetError, match=f"size mismatch: image {image}"):  # prepare says the same
        prepare_dataset("ade20k", tmp_path)


def test_manifest_is_written_atomically_and_checked(tmp_path):
    write_members(tmp_path, ade20k_members(n_train=1, n_val=1))
    path, _ = prepare_dataset("ade20k", tmp_path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ade20k-train.json", "ade20k-val.json"]  # no temp left
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(data, version=99)))
    with pytest.raises(DatasetError, match="version 99"):
        read_manifest(path)
    path.write_text("{")
    with pytest.raises(DatasetError, match="cannot read manifest"):
        read_manifest(path)


def test_reader_verify_detects_changed_files(tmp_path):
    write_members(tmp_path, ade20k_members(n_train=1, n_val=1))
    prepare_dataset("ade20k", tmp_path)
    (tmp_path / "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="changed: .*ADE_val_00000001.png"):
        load_split(tmp_path, "ade20k", "val", verify=True)


# -- Cityscapes -------------------------------------------------------------------------


def _cityscapes_root(tmp_path):
    gt, img = cityscapes_members()
    write_members(tmp_path / "cityscapes", gt)
    write_members(tmp_path / "cityscapes", img)
    return tmp_path


def test_cityscapes_polygons_to_train_ids(tmp_path):
    pytest.importorskip("cityscapesscripts")
    root = _cityscapes_root(tmp_path)
    paths = prepare_dataset("cityscapes", root, workers=1)
    assert [p.name for p in paths] == ["cityscapes-train.json", "cityscapes-val.json"]
    city, stem = CS_FRAMES["train"][0]
    out = root / f"cityscapes/gtFine/train/{city}/{stem}_gtFine_labelTrainIds.png"
    ids = np.asarray(Image.open(out))
    assert ids.shape == (32, 64)
    assert ids[24, 20] == 0  # road
    assert ids[5, 5] == 10  # sky
    assert ids[24, 45] == 13 and ids[25, 43] == 13  # car; the license plate is not drawn
    assert ids[5, 56] == 13  # "cargroup" drawn as car
    assert ids[31, 10] == 255 and ids[5, 40] == 255  # out of roi, unlabeled
    assert set(np.unique(ids)) == {0, 10, 13, 255}
    split = load_split(root, "cityscapes", "train")
    assert len(split) == 2 and split.spec.num_classes == 19 and split.spec.crop_size == 768
    assert np.array_equal(split[0].label, ids)
    manifest = read_manifest(manifest_path(root, "cityscapes", "val"))
    image = manifest["samples"][0]["image"]
    assert image == "cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    assert manifest["reduce_zero_label"] is False and manifest["class_names"][18] == "bicycle"
    assert len(CS_OBJECTS) == 6


def test_cityscapes_label_ids_fallback_and_bad_labels(tmp_path):
    pytest.importorskip("cityscapesscripts")
    root = _cityscapes_root(tmp_path)
    city, stem = CS_FRAMES["val"][0]
    gt = root / f"cityscapes/gtFine/val/{city}"
    (gt / f"{stem}_gtFine_polygons.json").unlink()  # only labelIds (all 7 = road) remain
    prepare_dataset("cityscapes", root, splits=["val"], workers=1)
    assert set(np.unique(np.asarray(Image.open(gt / f"{stem}_gtFine_labelTrainIds.png")))) == {0}
    city, stem = CS_FRAMES["train"][1]
    poly = root / f"cityscapes/gtFine/train/{city}/{stem}_gtFine_polygons.json"
    dragon = {"label": "dragon", "polygon": [[0, 0], [5, 0], [5, 5]]}
    poly.write_text(json.dumps({"imgHeight": 32, "imgWidth": 64, "objects": [dragon]}))
    with pytest.raises(DatasetError, match="label 'dragon' is not a Cityscapes label"):
        prepare_dataset("cityscapes", root, splits=["train"], workers=1)


# -- Pascal Context -----------------------------------------------------------------------


def _pascal_root(tmp_path):
    write_members(tmp_path, voc_members())
    data, expected = pascal_context_json()
    (tmp_path / "VOCdevkit/VOC2010/trainval_merged.json").write_text(json.dumps(data))
    return tmp_path, expected


def test_pascal_context_json_to_59_class_masks(tmp_path):
    root, expected = _pascal_root(tmp_path)
    assert main(["prepare", "pascal_context", "--root", str(root)]) == 0
    voc = root / "VOCdevkit/VOC2010"
    for stem, target in expected.items():
        assert np.array_equal(np.asarray(Image.open(voc / f"SegmentationClassContext/{stem}.png")), target), stem
    assert (voc / "ImageSets/SegmentationContext/train.txt").read_text() == "2008_000002\n"
    assert (voc / "ImageSets/SegmentationContext/val.txt").read_text() == "2008_000003\n2010_000001\n"
    # the overlap: aeroplane (value 1) painted after person (37); 'air conditioner' -> background
    mask = expected["2008_000002"]
    assert mask[5, 8] == 1 and mask[2, 2] == 37 and mask[1, 17] == 0
    split = load_split(root, "pascal_context", "val")
    assert split.spec.num_classes == 59 and split.spec.test_scale == (4160, 520)
    label = split[0].label  # 2008_000003: wood -> 58, aeroplane -> 0, background -> ignore
    assert label[5, 3] == 58 and label[1, 12] == 0 and label[10, 15] == 255
    sixty = load_split(root, "pascal_context_60", "val")
    assert sixty.spec.num_classes == 60 and sixty[0].label[10, 15] == 0 and sixty[0].label[5, 3] == 59


def test_pascal_context_missing_image_and_wrong_categories(tmp_path):
    root, _ = _pascal_root(tmp_path)
    (root / "VOCdevkit/VOC2010/JPEGImages/2010_000001.jpg").unlink()
    with pytest.raises(DatasetError, match="missing: .*2010_000001.jpg"):
        prepare_dataset("pascal_context", root)
    data, _ = pascal_context_json()
    data["categories"][0]["name"] = "zeppelin"
    (root / "VOCdevkit/VOC2010/trainval_merged.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="zeppelin"):
        prepare_dataset("pascal_context", root)


# -- RLE --------------------------------------------------------------------------------


def test_rle_matches_pycocotools_golden():
    # pycocotools.mask.encode of this mask (computed once with pycocotools 2.0)
    h, w = 37, 53
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - 15) ** 2 + (xx - 20) ** 2 < 12 ** 2) | ((xx > 40) & (yy > 5) & (yy < 30))).astype(np.uint8)
    mask[0, 0] = 1
    golden = "01g:8SF4M2N2N2N2O0O2O0000000000000001N101N2N2N2N3LZ:?YE000000000000000000000J"
    assert rle.encode(mask)["counts"] == golden
    assert np.array_equal(rle.decode({"size": [h, w], "counts": golden}), mask)
    assert mask.sum() == 726


def test_rle_roundtrip_and_errors():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 30, 2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        enc = rle.encode(mask)
        assert np.array_equal(rle.decode(enc), mask)
        assert np.array_equal(rle.decode({"size": enc["size"], "counts": rle.string_to_counts(enc["counts"])}), mask)
    with pytest.raises(DatasetError, match="runs sum"):
        rle.decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(DatasetError):
        rle.decode({"counts": "0"})


def test_specs():
    assert get_spec("ADE20K").reduce_zero_label and get_spec("cityscapes").test_scale == (2048, 1024)
    assert get_spec("pascal-context").crop_size == 480 and get_spec("ade20k").stride == 480
    assert get_spec("ade20k").scaled_test_scale(640) == (2560, 640)
