"""ADE20K SceneParsing (and the synthetic set in its layout): used as distributed.

``ADEChallengeData2016/images/{training,validation}/*.jpg`` pair with
``annotations/…/*.png`` (0 = other → ignored, 1..150 → 0..149 by reduce_zero_label at
read time). Nothing is converted; prepare pairs the files and writes the manifests.
When ``synthetic.json`` is present the class list comes from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mpm.data import synthetic
from mpm.data.datasets import DatasetSpec
from mpm.data.manifest import build_manifest, write_manifest
from mpm.data.prepare.common import rel, warn_size
from mpm.errors import DatasetError

ADE_DIR = synthetic.ADE_DIR


def find_pairs(root: Path, disk_split: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(image, label) pairs of a split, and the files that have no partner."""
    img_dir = root / ADE_DIR / "images" / disk_split
    ann_dir = root / ADE_DIR / "annotations" / disk_split
    if not img_dir.is_dir():
        raise DatasetError(
            f"{img_dir} not found: run `mpm fetch dataset ade20k --root {root}` (or `mpm synth --root {root}`)"
        )
    images = {p.stem: p for p in img_dir.glob("*.jpg")}
    labels = {p.stem: p for p in ann_dir.glob("*.png")} if ann_dir.is_dir() else {}
    pairs = [(rel(images[s], root), rel(labels[s], root)) for s in sorted(images) if s in labels]
    problems = [f"missing: {ann_dir / (s + '.png')}" for s in sorted(images) if s not in labels]
    problems += [f"missing: {img_dir / (s + '.jpg')}" for s in sorted(labels) if s not in images]
    return pairs, problems


def prepare(root: Path, spec: DatasetSpec, splits: Sequence[str], *, workers: int | None = None,
            progress: bool | None = None) -> list[Path]:
    meta = synthetic.read_metadata(root)
    if spec.synthetic and meta is None:
        raise DatasetError(f"{root / ADE_DIR / synthetic.METADATA_FILE} not found: {root} is not a synthetic set "
                           f"(make one with `mpm synth --root {root}`)")
    class_names = meta["class_names"] if meta else spec.class_names
    written = []
    for split in splits:
        disk_split = spec.splits[split]
        pairs, problems = find_pairs(root, disk_split)
        if problems:
            shown = "; ".join(problems[:20]) + (f"; … {len(problems) - 20} more" if len(problems) > 20 else "")
            raise DatasetError(f"{len(problems)} bad file(s) in {spec.name}/{split}: {shown}")
        manifest = build_manifest(
            root, spec, split, pairs, source_split=disk_split, class_names=class_names,
            synthetic=meta is not None, progress=progress,
            extra={"generator": {k: meta[k] for k in ("seed", "n_train", "n_val", "size", "generator_version")}}
            if meta else None,
        )
        if meta is None:
            warn_size(spec.name, split, manifest["num_samples"], spec.expected_sizes.get(split))
        written.append(write_manifest(root, manifest))
    return written
