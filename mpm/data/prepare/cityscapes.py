"""Cityscapes: polygon annotations to 19-class train-id PNGs with cityscapesscripts.

For every ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` the label
``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png`` (mmsegmentation's naming) is
drawn from ``*_gtFine_polygons.json`` with cityscapesscripts' ``createLabelImage``
(the function behind its ``json2labelImg``), as mmseg's converter does; where only
``*_gtFine_labelIds.png`` exists it is mapped through cityscapesscripts' label table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mpm.io import save_image_atomic
from mpm.data.datasets import DatasetSpec
from mpm.data.manifest import build_manifest, write_manifest
from mpm.data.prepare.common import (
    default_workers,
    needs_update,
    rel,
    run_jobs,
    warn_size,
)
from mpm.errors import ConfigError, DatasetError

CS_DIR = "cityscapes"
IMG_SUFFIX = "_leftImg8bit.png"
POLY_SUFFIX = "_gtFine_polygons.json"
IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


def _cityscapesscripts():
    try:
        from cityscapesscripts.helpers import annotation, labels
        from cityscapesscripts.preparation import json2labelImg
    except ImportError:
        raise ConfigError("preparing Cityscapes needs cityscapesscripts: pip install 'mpm[cityscapes]'") from None
    return annotation, labels, json2labelImg


def polygons_to_train_ids(json_path: str | Path, out_path: str | Path) -> None:
    """Draw a ``*_gtFine_polygons.json`` as a trainId PNG (255 = ignore), atomically."""
    annotation_mod, labels_mod, json2label = _cityscapesscripts()
    annotation = annotation_mod.Annotation()
    try:
        annotation.fromJsonFile(str(json_path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"cannot read {json_path}: {type(err).__name__}: {err}") from None
    known = labels_mod.name2label
    for obj in annotation.objects:
        name = obj.label
        if name not in known and name.endswith("group"):
            name = name[: -len("group")]
        if name not in known and not obj.deleted:
            raise DatasetError(f"{json_path}: label {obj.label!r} is not a Cityscapes label")
    try:
        image = json2label.createLabelImage(annotation, "trainIds")
    except SystemExit:  # cityscapesscripts exits on errors it reports itself
        raise DatasetError(f"cityscapesscripts could not convert {json_path}") from None
    save_image_atomic(out_path, image)


def label_ids_to_train_ids(ids_path: str | Path, out_path: str | Path) -> None:
    """Map a ``*_gtFine_labelIds.png`` to train ids with cityscapesscripts' label table."""
    _, labels_mod, _ = _cityscapesscripts()
    lut = np.full(256, 255, np.uint8)
    for label in labels_mod.labels:
        if 0 <= label.id < 256:
            lut[label.id] = label.trainId if 0 <= label.trainId < 255 else 255
    with Image.open(ids_path) as img:
        ids = np.asarray(img)
    save_image_atomic(out_path, Image.fromarray(lut[ids]))


def _convert(src: str, out: str) -> str | None:
    """Worker: convert one label; None, or the problem as text."""
    try:
        if src.endswith(".json"):
            polygons_to_train_ids(src, out)
        else:
            label_ids_to_train_ids(src, out)
    except (DatasetError, OSError, ValueError) as err:
        return f"unreadable: {src} ({err})"
    return None


def collect(root: Path, split: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """Pairs of a split, conversion jobs (source, output), and missing files."""
    base = root / CS_DIR
    img_dir = base / "leftImg8bit" / split
    images = sorted(img_dir.glob(f"*/*{IMG_SUFFIX}"))
    if not images:
        raise DatasetError(f"no images under {img_dir}: run `mpm fetch dataset cityscapes --root {root}`")
    pairs, jobs, problems = [], [], []
    for img in images:
        stem = img.name[: -len(IMG_SUFFIX)]
        gt_dir = base / "gtFine" / split / img.parent.name
        out = gt_dir / f"{stem}{TRAIN_IDS_SUFFIX}"
        poly, ids = gt_dir / f"{stem}{POLY_SUFFIX}", gt_dir / f"{stem}{IDS_SUFFIX}"
        source = poly if poly.is_file() else ids if ids.is_file() else None
        if source is None and not out.is_file():
            problems.append(f"missing: {poly}")
            continue
        if source is not None and needs_update(out, [source]):
            jobs.append((str(source), str(out)))
        pairs.append((rel(img, root), rel(out, root)))
    return pairs, jobs, problems


def prepare(root: Path, spec: DatasetSpec, splits: Sequence[str], *, workers: int | None = None,
            progress: bool | None = None) -> list[Path]:
    _cityscapesscripts()
    written = []
    for split in splits:
        pairs, jobs, problems = collect(root, spec.splits[split])
        results = run_jobs(_convert, jobs, default_workers(workers), f"cityscapes/{split} labels", progress)
        problems += [r for r in results if r]
        if problems:
            shown = "; ".join(problems[:20]) + (f"; … {len(problems) - 20} more" if len(problems) > 20 else "")
            raise DatasetError(f"{len(problems)} bad file(s) in {spec.name}/{split}: {shown}")
        manifest = build_manifest(root, spec, split, pairs, source_split=spec.splits[split], progress=progress)
        warn_size(spec.name, split, manifest["num_samples"], spec.expected_sizes.get(split))
        written.append(write_manifest(root, manifest))
    return written
