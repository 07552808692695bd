"""Dataset specifications: the label spaces the pipeline knows (:data:`DATASETS`) and their protocols.

A :class:`DatasetSpec` holds what the evaluation stage needs to know about a label
space (classes, ignore index, ``reduce_zero_label``, sliding-window crop/stride and the
test resize scale); :func:`get_spec` finds one by name or alias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from mpm.data.classes import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    PASCAL_CONTEXT_CLASSES,
    SYNTHETIC_CLASSES,
)
from mpm.errors import ConfigError

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
