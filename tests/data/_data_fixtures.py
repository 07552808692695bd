"""Builders of small datasets in their real source formats (written by the tests)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from mpm.data import rle


def jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in sorted(members.items()):
            info = zipfile.ZipInfo(name, date_time=(2016, 1, 1, 0, 0, 0))
            zf.writestr(info, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1272844800
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- ADE20K -------------------------------------------------------------------------


def ade20k_members(n_train: int = 3, n_val: int = 2, seed: int = 0) -> dict[str, bytes]:
    """ADEChallengeData2016.zip's layout: images/*.jpg, annotations/*.png (0..150)."""
    rng = np.random.default_rng(seed)
    members = {
        "ADEChallengeData2016/objectInfo150.txt": b"Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\twall\n",
        "ADEChallengeData2016/sceneCategories.txt": b"ADE_train_00000001 airport_terminal\n",
    }
    for split, prefix, n in (("training", "ADE_train", n_train), ("validation", "ADE_val", n_val)):
        for i in range(1, n + 1):
            h, w = int(rng.integers(24, 40)), int(rng.integers(24, 40))
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            label = rng.integers(0, 151, (h, w), dtype=np.uint8)
            members[f"ADEChallengeData2016/images/{split}/{prefix}_{i:08d}.jpg"] = jpeg_bytes(image)
            members[f"ADEChallengeData2016/annotations/{split}/{prefix}_{i:08d}.png"] = png_bytes(label)
    return members


def write_members(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        write(root / name, data)
    return root


# -- Cityscapes ----------------------------------------------------------------------

CS_W, CS_H = 64, 32
#: (label, polygon) drawn in order; see test_prepare for the expected train ids
CS_OBJECTS = [
    ("road", [[0, 16], [63, 16], [63, 31], [0, 31]]),
    ("sky", [[0, 0], [31, 0], [31, 15], [0, 15]]),
    ("car", [[40, 20], [50, 20], [50, 28], [40, 28]]),
    ("license plate", [[42, 25], [44, 25], [44, 26], [42, 26]]),
    ("cargroup", [[52, 2], [60, 2], [60, 10], [52, 10]]),
    ("out of roi", [[0, 30], [63, 30], [63, 31], [0, 31]]),
]
CS_FRAMES = {"train": [("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")],
             "val": [("frankfurt", "frankfurt_000000_000294")]}


def cityscapes_polygons(objects=CS_OBJECTS) -> bytes:
    return json.dumps({
        "imgHeight": CS_H, "imgWidth": CS_W,
        "objects": [{"label": label, "polygon": poly, "date": "", "deleted": 0, "verified": 1, "user": "t"}
                    for label, poly in objects],
    }).encode()


def cityscapes_members(seed: int = 0) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(gtFine_trainvaltest.zip members, leftImg8bit_trainvaltest.zip members)."""
    rng = np.random.default_rng(seed)
    gt = {"README": b"gtFine\n", "license.txt": b"test\n"}
    img = {"README": b"leftImg8bit\n", "license.txt": b"test\n"}
    for split, frames in CS_FRAMES.items():
        for city, stem in frames:
            gt[f"gtFine/{split}/{city}/{stem}_gtFine_polygons.json"] = cityscapes_polygons()
            gt[f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"] = png_bytes(np.full((CS_H, CS_W), 7, np.uint8))
            img[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = png_bytes(
                rng.integers(0, 256, (CS_H, CS_W, 3), dtype=np.uint8))
    return gt, img


# -- Pascal Context -----------------------------------------------------------------

PC_IMAGES = [  # (image_id, file_name, phase, height, width)
    (2008000002, "2008_000002.jpg", "train", 16, 20),
    (2008000003, "2008_000003.jpg", "val", 12, 18),
    (2010000001, "2010_000001.jpg", "val", 14, 14),
]


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def pascal_context_json() -> tuple[dict, dict[str, np.ndarray]]:
    """A trainval_merged.json in PASCAL in Detail's format and the expected 0..59 masks.

    Category ids are of the 459-label set: 2 aeroplane (value 1), 284 person (37),
    458 wood (59); 3 'air conditioner' is not among the 59 and becomes background.
    """
    from mpm.data.classes import PASCAL_CONTEXT_59

    value = {cid: i for i, (cid, _) in enumerate(PASCAL_CONTEXT_59, start=1)}
    names = dict(PASCAL_CONTEXT_59) | {3: "air conditioner"}
    anns, expected, ann_id = [], {}, 1
    plan = {
        2008000002: [(284, (0, 10, 0, 12)), (2, (4, 16, 6, 20)), (3, (0, 3, 15, 20))],
        2008000003: [(458, (2, 12, 0, 9)), (2, (0, 4, 10, 18))],
        2010000001: [],
    }
    for image_id, fname, _phase, h, w in PC_IMAGES:
        target = np.zeros((h, w), np.uint8)
        for cid, (y0, y1, x0, x1) in plan[image_id]:
            mask = _rect(h, w, y0, y1, x0, x1)
            seg = rle.encode(mask)
            if cid == 458:  # exercise the uncompressed form too
                seg = {"size": [h, w], "counts": rle.string_to_counts(seg["counts"])}
            anns.append({"id": ann_id, "image_id": image_id, "category_id": cid, "segmentation": seg,
                         "area": int(mask.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0], "parts": [], "iscrowd": 0})
            ann_id += 1
            target[mask.astype(bool)] = value.get(cid, 0)
        expected[fname[:-4]] = target
    data = {
        "info": {"description": "test"},
        "images": [{"image_id": i, "file_name": f, "phase": p, "height": h, "width": w}
                   for i, f, p, h, w in PC_IMAGES],
        "categories": [{"category_id": cid, "name": name, "supercategory": "object", "onlysemantic": 0, "parts": []}
                       for cid, name in sorted(names.items())],
        "annos_segmentation": anns,
        "annos_occlusion": [],
        "parts": [],
    }
    return data, expected


def voc_members(seed: int = 0) -> dict[str, bytes]:
    """VOCtrainval_03-May-2010.tar's layout (the images the JSON names)."""
    rng = np.random.default_rng(seed)
    members = {"VOCdevkit/VOC2010/ImageSets/Segmentation/train.txt": b"2008_000002\n"}
    for _, fname, _, h, w in PC_IMAGES:
        members[f"VOCdevkit/VOC2010/JPEGImages/{fname}"] = jpeg_bytes(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return members
