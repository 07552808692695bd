"""Pascal Context: the 59-class masks from ``trainval_merged.json`` (PASCAL in Detail).

The JSON holds ``images`` (``image_id``, ``file_name``, ``height``, ``width``,
``phase`` = train/val), ``categories`` (``category_id``, ``name``; the 459-label set)
and ``annos_segmentation`` (``image_id``, ``category_id``, ``segmentation`` as COCO
RLE). As the Detail API's ``getMask``, annotations are painted in file order, later
ones over earlier ones; then, as mmsegmentation's
``tools/dataset_converters/pascal_context.py``, the 59 kept category ids map to
1..59 in sorted order and everything else to 0 (background, ignored by the 59-class
reader). Output is mmseg's layout: ``VOCdevkit/VOC2010/SegmentationClassContext/*.png``
and ``ImageSets/SegmentationContext/{train,val}.txt``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mpm.data import rle
from mpm.io import save_image_atomic, write_text_atomic
from mpm.data.classes import PASCAL_CONTEXT_59
from mpm.data.datasets import DatasetSpec
from mpm.data.manifest import build_manifest, write_manifest
from mpm.data.prepare.common import needs_update, rel, warn_size
from mpm.errors import DatasetError

log = logging.getLogger(__name__)

VOC_DIR = Path("VOCdevkit") / "VOC2010"
JSON_NAME = "trainval_merged.json"
MASK_DIR = "SegmentationClassContext"
LIST_DIR = Path("ImageSets") / "SegmentationContext"


def class_lut(categories: Sequence[Mapping] | None = None) -> np.ndarray:
    """459-label id → 59-class value (1..59), everything else 0; checks names if given."""
    kept = dict(PASCAL_CONTEXT_59)
    if categories:
        names = {int(c["category_id"]): str(c.get("name", "")).strip() for c in categories}
        wrong = [f"{cid}: {names[cid]!r} (expected {name!r})" for cid, name in kept.items()
                 if cid in names and names[cid] and names[cid] != name]
        if wrong:
            raise DatasetError(f"{JSON_NAME} categories differ from the 59-class list: " + "; ".join(wrong[:10]))
    size = max(max(kept) + 1, 1 + max((int(c["category_id"]) for c in categories or ()), default=0))
    lut = np.zeros(size, np.uint8)
    for value, cid in enumerate(sorted(kept), start=1):
        lut[cid] = value
    return lut


def image_mask(image: Mapping, annotations: Sequence[Mapping], lut: np.ndarray) -> np.ndarray:
    """The uint8 59-class mask (0 = background) of one image."""
    height, width = int(image["height"]), int(image["width"])
    raw = np.zeros((height, width), np.int64)
    for ann in annotations:
        mask = rle.decode(ann["segmentation"])
        if mask.shape != (height, width):
            raise DatasetError(
                f"annotation {ann.get('id')} of image {image['file_name']} is {mask.shape[1]}x{mask.shape[0]}, "
                f"image is {width}x{height}"
            )
        raw[mask.astype(bool)] = int(ann["category_id"])
    if raw.max(initial=0) >= lut.size:
        raw[raw >= lut.size] = 0
    return lut[raw]


def load_annotations(path: Path) -> dict:
    """Parse ``trainval_merged.json``; DatasetError if it is missing or malformed."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: run `mpm fetch dataset pascal_context --root {path.parents[2]}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    for key in ("images", "annos_segmentation"):
        if key not in data:
            raise DatasetError(f"{path} lacks {key!r}: not a PASCAL in Detail annotation file")
    return data


def write_masks(root: Path, data: Mapping, split: str, *, force: bool = False) -> tuple[list[str], list[str]]:
    """Write the masks of one phase (those missing or older than the JSON); return (sorted stems, problems)."""
    voc = root / VOC_DIR
    json_path = voc / JSON_NAME
    lut = class_lut(data.get("categories"))
    by_image: dict[int, list[Mapping]] = defaultdict(list)
    for ann in data["annos_segmentation"]:
        by_image[ann["image_id"]].append(ann)
    stems, problems = [], []
    for image in data["images"]:
        if image.get("phase") != split:
            continue
        stem = Path(image["file_name"]).stem
        out = voc / MASK_DIR / f"{stem}.png"
        if force or needs_update(out, [json_path]):
            try:
                mask = image_mask(image, by_image.get(image["image_id"], []), lut)
            except DatasetError as err:
                problems.append(f"unreadable: {stem} in {JSON_NAME} ({err})")
                continue
            save_image_atomic(out, Image.fromarray(mask))
        stems.append(stem)
    return sorted(stems), problems


def prepare(root: Path, spec: DatasetSpec, splits: Sequence[str], *, workers: int | None = None,
            progress: bool | None = None, force: bool = False) -> list[Path]:
    voc = root / VOC_DIR
    data = load_annotations(voc / JSON_NAME)
    written = []
    for split in splits:
        stems, problems = write_masks(root, data, spec.splits[split], force=force)
        if not stems and not problems:
            raise DatasetError(f"{voc / JSON_NAME} has no images of phase {spec.splits[split]!r}")
        if problems:
            shown = "; ".join(problems[:20]) + (f"; … {len(problems) - 20} more" if len(problems) > 20 else "")
            raise DatasetError(f"{len(problems)} bad file(s) in {spec.name}/{split}: {shown}")
        write_text_atomic(voc / LIST_DIR / f"{spec.splits[split]}.txt", "".join(s + "\n" for s in stems))
        pairs = [(rel(voc / "JPEGImages" / f"{s}.jpg", root), rel(voc / MASK_DIR / f"{s}.png", root)) for s in stems]
        manifest = build_manifest(root, spec, split, pairs, source_split=spec.splits[split], progress=progress)
        warn_size(spec.name, split, manifest["num_samples"], spec.expected_sizes.get(split))
        written.append(write_manifest(root, manifest))
    return written
