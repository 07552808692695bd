"""Dataset specifications and the reader of prepared splits.

A :class:`DatasetSpec` holds what the evaluation stage needs to know about a label
space (classes, ignore index, ``reduce_zero_label``, sliding-window crop/stride and the
test resize scale). :func:`load_split` reads the manifest that ``mpm prepare`` wrote
and returns a :class:`SegmentationSplit`: a sequence of :class:`Sample` (RGB uint8
image, uint8 label with 255 = ignore, already in training ids).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from mpm.data.classes import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    PASCAL_CONTEXT_CLASSES,
    SYNTHETIC_CLASSES,
)
from mpm.errors import ConfigError, DatasetError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetSpec:
    """A label space and its evaluation protocol.

    ``test_scale`` is mmseg's ``Resize(scale=test_scale, keep_ratio=True)``: the image
    is scaled by ``min(max(scale)/max(h, w), min(scale)/min(h, w))``. ``crop_size`` and
    ``stride`` drive sliding-window inference. ``splits`` maps the canonical split
    names (``train``, ``val``) to the names on disk. ``manifest_name`` is the prepared
    data this spec reads (two label spaces may share one prepared dataset).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX
    reduce_zero_label: bool = False
    crop_size: int = 512
    stride: int = 480
    test_scale: tuple[int, int] = (2048, 512)
    layout: str = "ade20k"
    splits: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({"train": "train", "val": "val"}), hash=False
    )
    expected_sizes: Mapping[str, int] = field(default_factory=dict, hash=False)
    manifest_name: str = ""
    synthetic: bool = False

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"dataset {self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if not self.manifest_name:
            object.__setattr__(self, "manifest_name", self.name)

    def with_classes(self, class_names: Sequence[str]) -> DatasetSpec:
        """The same protocol over another class list (the synthetic set's K classes)."""
        return replace(self, class_names=tuple(class_names), num_classes=len(class_names))

    def scaled_test_scale(self, crop_size: int) -> tuple[int, int]:
        """``test_scale`` for a model trained at another crop (ViT-L/16 at 640: (2560, 640))."""
        long, short = self.test_scale
        factor = crop_size / self.crop_size
        return (round(long * factor), round(short * factor))

    def disk_split(self, split: str) -> str:
        """The on-disk name of a canonical split."""
        return self.splits[canonical_split(split, self)]

    def to_dict(self) -> dict:
        return {
            "name": self.name, "num_classes": self.num_classes, "class_names": list(self.class_names),
            "ignore_index": self.ignore_index, "reduce_zero_label": self.reduce_zero_label,
            "crop_size": self.crop_size, "stride": self.stride, "test_scale": list(self.test_scale),
            "layout": self.layout, "synthetic": self.synthetic,
        }


_ADE_SPLITS = MappingProxyType({"train": "training", "val": "validation"})
_TRAIN_VAL = MappingProxyType({"train": "train", "val": "val"})

#: label spaces known to the pipeline, by name
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    spec.name: spec
    for spec in (
        # mmseg configs/_base_/datasets/ade20k.py + segmenter configs: Resize (2048, 512), slide 512/480
        DatasetSpec(
            "ade20k", 150, ADE20K_CLASSES, reduce_zero_label=True, crop_size=512, stride=480,
            test_scale=(2048, 512), layout="ade20k", splits=_ADE_SPLITS,
            expected_sizes=MappingProxyType({"train": 20210, "val": 2000}),
        ),
        # Segmenter's cityscapes config: Resize (2048, 1024), window 768, stride 512; 19 trainIds
        DatasetSpec(
            "cityscapes", 19, CITYSCAPES_CLASSES, crop_size=768, stride=512, test_scale=(2048, 1024),
            layout="cityscapes", splits=_TRAIN_VAL,
            expected_sizes=MappingProxyType({"train": 2975, "val": 500}),
        ),
        # 59 classes, background (0) ignored: mmseg's PascalContextDataset59 (reduce_zero_label)
        # Segmenter: window 480, stride 320, Resize (max_ratio 8 * 520, 520)
        DatasetSpec(
            "pascal_context", 59, PASCAL_CONTEXT_CLASSES, reduce_zero_label=True, crop_size=480,
            stride=320, test_scale=(4160, 520), layout="pascal_context", splits=_TRAIN_VAL,
            expected_sizes=MappingProxyType({"train": 4996, "val": 5104}),
        ),
        # the same masks read as Segmenter's 60-class space (background is class 0)
        DatasetSpec(
            "pascal_context_60", 60, ("background",) + PASCAL_CONTEXT_CLASSES, reduce_zero_label=False,
            crop_size=480, stride=320, test_scale=(4160, 520), layout="pascal_context", splits=_TRAIN_VAL,
            expected_sizes=MappingProxyType({"train": 4996, "val": 5104}), manifest_name="pascal_context",
        ),
        # the offline demo set: ADE20K's layout and conventions, K classes (see mpm.data.synthetic)
        DatasetSpec(
            "synthetic", len(SYNTHETIC_CLASSES), SYNTHETIC_CLASSES, reduce_zero_label=True, crop_size=256,
            stride=192, test_scale=(1024, 256), layout="ade20k", splits=_ADE_SPLITS, synthetic=True,
        ),
    )
})

_ALIASES = {"ade": "ade20k", "ade20k_2016": "ade20k", "pcontext": "pascal_context", "voc_context": "pascal_context",
            "pascal_context_59": "pascal_context", "synth": "synthetic"}
_SPLIT_ALIASES = {"training": "train", "validation": "val", "valid": "val"}


def canonical_name(name: str) -> str:
    """Normalise a dataset name (case, ``-``) and resolve aliases."""
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name`` (aliases accepted)."""
    key = canonical_name(name)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def canonical_split(split: str, spec: DatasetSpec | None = None) -> str:
    """``train``/``val`` from any accepted spelling (``training``, ``validation``)."""
    key = _SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    if spec is not None and key not in spec.splits:
        raise ConfigError(f"dataset {spec.name} has no split {split!r}; splits: {', '.join(spec.splits)}")
    return key


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


def size_mismatch(image: str | os.PathLike, image_wh: Sequence[int], label: str | os.PathLike,
                  label_wh: Sequence[int]) -> str:
    """The message for an image and label of different sizes, naming both files."""
    return (f"size mismatch: image {image} is {image_wh[0]}x{image_wh[1]}, "
            f"label {label} is {label_wh[0]}x{label_wh[1]}")


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
        from mpm.data.manifest import verify_samples

        return verify_samples(self.root, self._samples)


def missing_data_hint(root: str | os.PathLike, spec: DatasetSpec, split: str) -> str:
    """What to run when ``spec``'s prepared ``split`` is not under ``root``: the command for this dataset."""
    from mpm.data.manifest import manifest_path
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
    from mpm.data.manifest import manifest_path, read_manifest

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
