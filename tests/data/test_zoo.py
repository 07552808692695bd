"""The model-zoo table covers every checkpoint of the paper, consistently."""

from __future__ import annotations

import re

import pytest

from mpm.data import zoo
from mpm.data.datasets import get_spec
from mpm.errors import ConfigError

SEGMENTER = {  # PAPER.md: folder -> single-scale mIoU
    "ade20k/seg_tiny_mask": 38.1, "ade20k/seg_small_mask": 45.3, "ade20k/seg_base_mask": 48.5,
    "ade20k/seg_large_mask_640": 51.8, "pascal_context/seg_large_mask": 58.1, "cityscapes/seg_large_mask": 79.1,
}
MMSEG = {("T", "mask"): 39.99, ("S", "linear"): 45.75, ("S", "mask"): 46.19, ("B", "mask"): 49.60, ("L", "mask"): 52.16}


def test_every_segmenter_release_is_there_with_both_files():
    found = {}
    for e in zoo.list_entries(format="segmenter"):
        folder = e.files[0].path.rsplit("/", 1)[0]
        found[folder] = e.reported_miou
        assert [f.filename for f in e.files] == ["checkpoint.pth", "variant.yml"]
        assert e.url == f"{zoo.SEGMENTER_BASE}{folder}/checkpoint.pth"
    assert found == SEGMENTER


def test_every_mmseg_checkpoint_carries_its_sha256_prefix():
    found = {}
    for e in zoo.list_entries(format="mmseg"):
        found[(e.backbone, e.decoder)] = e.reported_miou
        pattern = r"segmenter_vit-[tslb]_(mask|linear)_8x1_512x512_160k_ade20k_\d{8}_\d{6}-([0-9a-f]{8})\.pth"
        stamp = re.fullmatch(pattern, e.checkpoint_file)
        assert stamp, e.checkpoint_file
        assert e.sha256 == stamp.group(2) and e.url.startswith(zoo.MMSEG_BASE)
        assert e.dataset == "ade20k"
    assert found == MMSEG


def test_entries_fit_their_datasets():
    for e in zoo.ZOO.values():
        spec = get_spec(e.dataset)
        assert e.backbone in zoo.BACKBONES and e.crop_size in (480, 512, 640, 768)
        assert e.stride < e.crop_size or e.stride == e.crop_size
        assert spec.scaled_test_scale(e.crop_size) == e.test_scale or spec.name != "ade20k"
        assert e.to_dict()["name"] == e.name
    assert get_spec(zoo.get_entry("seg_large_mask_pascal_context").dataset).num_classes == 60
    assert zoo.get_entry("seg_large_mask_640_ade20k").test_scale == (2560, 640)
    with pytest.raises(ConfigError, match="unknown checkpoint"):
        zoo.get_entry("seg_huge")
