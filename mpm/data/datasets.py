"""The reader of prepared splits.

:func:`load_split` reads the manifest that ``mpm prepare`` wrote and returns a
:class:`SegmentationSplit`: a sequence of :class:`Sample` (RGB uint8 image, uint8 label
with 255 = ignore, already in training ids).

The label spaces (:class:`DatasetSpec`, :func:`get_spec`, :data:`DATASETS`) are defined in
:mod:`mpm.data.specs` and importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mpm.data.manifest import manifest_path, read_manifest, size_mismatch, verify_samples
from mpm.data.specs import (  # noqa: F401 - DATASETS and canonical_name are re-exported
    DATASETS,
    IGNORE_INDEX,
    DatasetSpec,
    canonical_name,
    canonical_split,
    get_spec,
)
from mpm.errors import DatasetError


# -- reading ------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an RGB uint8 array of shape (H, W, 3)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from None


def read_label_file(path: str | os.PathLike) -> np.ndarray:
    """A label PNG as stored (palette indices or gray values), uint8 (H, W)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"label {path} has mode {img.mode}; expected a single-channel PNG")
            arr = np.asarray(img)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read label {path}: {err}") from None
    if arr.dtype != np.uint8:
        if arr.max(initial=0) > 255:
            raise DatasetError(f"label {path} holds values above 255")
        arr = arr.astype(np.uint8)
    return arr.copy()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header (the pixels are not decoded)."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise DatasetError(f"missing: {path}") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"unreadable: {path} ({err})") from None


def reduce_zero_label(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """0 becomes ignore, every other value drops by one (mmseg's ``reduce_zero_label``)."""
    out = label.astype(np.int16) - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out.astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    """One evaluation sample: RGB uint8 (H, W, 3) and uint8 (H, W) label, 255 = ignore."""

    name: str
    image: np.ndarray
    label: np.ndarray
    image_path: Path
    label_path: Path


class SegmentationSplit(Sequence):
    """The samples of one prepared split, read lazily from its manifest."""

    def __init__(self, root: str | os.PathLike, manifest: Mapping, spec: DatasetSpec) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.spec = spec
        self.split: str = manifest["split"]
        self._samples: list[Mapping] = list(manifest["samples"])

    @property
    def dataset(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self._samples)

    def __repr__(self) -> str:
        return f"SegmentationSplit({self.spec.name}/{self.split}, {len(self)} samples, root={str(self.root)!r})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            sub = dict(self.manifest, samples=self._samples[index])
            return SegmentationSplit(self.root, sub, self.spec)
        entry = self._samples[index]
        image_path, label_path = self.root / entry["image"], self.root / entry["label"]
        image, label = read_image(image_path), read_label_file(label_path)
        if image.shape[:2] != label.shape:
            raise DatasetError(size_mismatch(image_path, image.shape[1::-1], label_path, label.shape[::-1]))
        return Sample(
            name=Path(entry["image"]).stem,
            image=image,
            label=self.decode_label(label),
            image_path=image_path,
            label_path=label_path,
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def decode_label(self, stored: np.ndarray) -> np.ndarray:
        """Stored label values to training ids (255 = ignore)."""
        if self.spec.reduce_zero_label:
            return reduce_zero_label(stored, self.spec.ignore_index)
        return stored

    @property
    def image_paths(self) -> list[Path]:
        return [self.root / e["image"] for e in self._samples]

    @property
    def label_paths(self) -> list[Path]:
        return [self.root / e["label"] for e in self._samples]

    def check_sizes(self, limit: int | None = None) -> None:
        """Refuse missing files and image/label pairs of different sizes, from the files' headers.

        Cheap (no pixel is decoded), so it runs before an evaluation rather than
        failing it at the first bad pair; ``limit`` checks only the first samples.
        """
        bad: list[str] = []
        for entry in self._samples[:limit]:
            image_path, label_path = self.root / entry["image"], self.root / entry["label"]
            try:
                image_wh, label_wh = image_size(image_path), image_size(label_path)
            except DatasetError as err:
                bad.append(str(err))
                continue
            if image_wh != label_wh:
                bad.append(size_mismatch(image_path, image_wh, label_path, label_wh))
        if bad:
            more = f"; … {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DatasetError(f"{len(bad)} bad sample(s) in {self.spec.name}/{self.split} under {self.root} "
                               f"(re-run `mpm prepare` after fixing them): " + "; ".join(bad[:5]) + more)

    def verify(self) -> list[str]:
        """Files that are missing or whose sha256 differs from the manifest."""
        return verify_samples(self.root, self._samples)


def missing_data_hint(root: str | os.PathLike, spec: DatasetSpec, split: str) -> str:
    """What to run when ``spec``'s prepared ``split`` is not under ``root``: the command for this dataset."""
    from mpm.data.synthetic import ADE_DIR, METADATA_FILE

    root = Path(root)
    manifest = manifest_path(root, spec.manifest_name, split)
    wanted = f"no prepared {spec.name}/{split} under {root} ({manifest} not found)"
    if spec.synthetic:
        if (root / ADE_DIR / METADATA_FILE).is_file():
            return f"{wanted}: run `mpm prepare synthetic --root {root}`"
        return f"{wanted}, and no synthetic set there: run `mpm synth --root {root} --prepare`"
    prepare = f"`mpm prepare {spec.manifest_name} --root {root}`"
    try:
        fetched = root.is_dir() and any(p.name != "manifests" for p in root.iterdir())
    except OSError:
        fetched = False
    if not fetched:
        return f"{wanted}: run `mpm fetch dataset {spec.manifest_name} --root {root}`, then {prepare}"
    return f"{wanted}: run {prepare} (after `mpm fetch dataset {spec.manifest_name} --root {root}` if not done)"


def load_split(root: str | os.PathLike, dataset: str, split: str, *, verify: bool = False) -> SegmentationSplit:
    """Open a prepared split: ``load_split("data/ade20k", "ade20k", "val")``.

    The class list comes from the manifest where the data defines it (the synthetic
    set written in ADE20K's layout has K classes, not 150). ``verify=True`` re-hashes
    every file against the manifest first.
    """
    spec = get_spec(dataset)
    split = canonical_split(split, spec)
    path = manifest_path(root, spec.manifest_name, split)
    if spec.synthetic and not path.is_file():  # prepared as ``mpm prepare ade20k``
        legacy = manifest_path(root, "ade20k", split)
        path = legacy if legacy.is_file() else path
    if not path.is_file():
        raise DatasetError(missing_data_hint(root, spec, split))
    manifest = read_manifest(path)
    if manifest.get("synthetic"):
        spec = get_spec("synthetic").with_classes(manifest["class_names"])
    elif spec.synthetic:
        raise DatasetError(f"manifest {path} is not of the synthetic set (no 'synthetic' flag)")
    elif manifest["num_classes"] != spec.num_classes and spec.manifest_name == spec.name:
        raise DatasetError(
            f"manifest {path} has {manifest['num_classes']} classes, dataset {spec.name} has {spec.num_classes}"
        )
    data = SegmentationSplit(root, manifest, spec)
    if verify:
        bad = data.verify()
        if bad:
            raise DatasetError(f"{len(bad)} file(s) of {path} changed or missing: " + "; ".join(bad[:20]))
    return data
