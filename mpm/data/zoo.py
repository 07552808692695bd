"""The model zoo: every Segmenter checkpoint the paper evaluates.

Two formats: ``"segmenter"``, the authors' release (a folder with ``checkpoint.pth``
and ``variant.yml``, both downloaded), and ``"mmseg"``, mmsegmentation's re-trained
Segmenter models, whose file names end in the first 8 hex digits of their sha256 (the
prefix is verified after download). Test-time fields (crop, stride, resize scale)
follow each source's config for that model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from mpm.data.sources import RemoteFile
from mpm.errors import ConfigError

SEGMENTER_BASE = "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints/"
MMSEG_BASE = "https://download.openmmlab.com/mmsegmentation/v0.5/segmenter/"

BACKBONES = {"T": "vit_tiny_patch16_384", "S": "vit_small_patch16_384",
             "B": "vit_base_patch16_384", "L": "vit_large_patch16_384"}


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint; ``files[0]`` is the weights file."""

    name: str
    format: str  # "segmenter" | "mmseg"
    dataset: str  # a DatasetSpec name (mpm.data.datasets)
    backbone: str  # "T" | "S" | "B" | "L"
    decoder: str  # "mask" | "linear"
    crop_size: int
    stride: int
    test_scale: tuple[int, int]
    reported_miou: float  # single-scale mIoU reported by the source
    files: tuple[RemoteFile, ...]
    patch_size: int = 16
    mmseg_config: str | None = None

    @property
    def timm_backbone(self) -> str:
        """The timm model name of the encoder (Segmenter uses the 384 AugReg ViTs)."""
        return BACKBONES[self.backbone]

    @property
    def checkpoint_file(self) -> str:
        return self.files[0].filename

    @property
    def url(self) -> str:
        return self.files[0].url()

    @property
    def sha256(self) -> str | None:
        """The known sha256 (or its prefix) of the weights file, if any."""
        h = self.files[0].hash
        return h.split(":", 1)[1] if h and h.startswith("sha256:") else None

    def to_dict(self) -> dict:
        return {
            "name": self.name, "format": self.format, "dataset": self.dataset, "backbone": self.backbone,
            "decoder": self.decoder, "patch_size": self.patch_size, "crop_size": self.crop_size,
            "stride": self.stride, "test_scale": list(self.test_scale), "reported_miou": self.reported_miou,
            "url": self.url, "sha256": self.sha256, "files": [f.filename for f in self.files],
            "mmseg_config": self.mmseg_config,
        }


def _segmenter(name: str, folder: str, dataset: str, backbone: str, crop: int, stride: int,
               scale: tuple[int, int], miou: float) -> ZooEntry:
    files = tuple(RemoteFile(f, SEGMENTER_BASE, path=f"{folder}/{f}", dest=name)
                  for f in ("checkpoint.pth", "variant.yml"))
    return ZooEntry(name, "segmenter", dataset, backbone, "mask", crop, stride, scale, miou, files)


def _mmseg(name: str, stem: str, stamp: str, config: str, backbone: str, decoder: str, crop: int,
           stride: int, scale: tuple[int, int], miou: float) -> ZooEntry:
    filename = f"{stem}_{stamp}.pth"
    sha_prefix = stamp.rsplit("-", 1)[1]
    files = (RemoteFile(filename, MMSEG_BASE, path=f"{stem}/{filename}", hash=f"sha256:{sha_prefix}", dest=name),)
    return ZooEntry(name, "mmseg", "ade20k", backbone, decoder, crop, stride, scale, miou, files, mmseg_config=config)


_ADE = (2048, 512)
_ADE640 = (2560, 640)

#: every checkpoint, by name
ZOO: Mapping[str, ZooEntry] = MappingProxyType({e.name: e for e in (
    # the authors' release (rstrudel/segmenter README); ADE20K tested with the mmseg protocol
    _segmenter("seg_tiny_mask_ade20k", "ade20k/seg_tiny_mask", "ade20k", "T", 512, 480, _ADE, 38.1),
    _segmenter("seg_small_mask_ade20k", "ade20k/seg_small_mask", "ade20k", "S", 512, 480, _ADE, 45.3),
    _segmenter("seg_base_mask_ade20k", "ade20k/seg_base_mask", "ade20k", "B", 512, 480, _ADE, 48.5),
    _segmenter("seg_large_mask_640_ade20k", "ade20k/seg_large_mask_640", "ade20k", "L", 640, 608, _ADE640, 51.8),
    # Segmenter's Pascal Context model predicts 60 classes (background included)
    _segmenter("seg_large_mask_pascal_context", "pascal_context/seg_large_mask", "pascal_context_60", "L",
               480, 320, (4160, 520), 58.1),
    _segmenter("seg_large_mask_cityscapes", "cityscapes/seg_large_mask", "cityscapes", "L", 768, 512,
               (2048, 1024), 79.1),
    # mmsegmentation 1.x (configs/segmenter/metafile.yaml); file stamps end in sha256[:8]
    _mmseg("mmseg_vit-t_mask_ade20k", "segmenter_vit-t_mask_8x1_512x512_160k_ade20k", "20220105_151706-ffcf7509",
           "segmenter_vit-t_mask_8xb1-160k_ade20k-512x512", "T", "mask", 512, 480, _ADE, 39.99),
    _mmseg("mmseg_vit-s_linear_ade20k", "segmenter_vit-s_linear_8x1_512x512_160k_ade20k", "20220105_151713-39658c46",
           "segmenter_vit-s_fcn_8xb1-160k_ade20k-512x512", "S", "linear", 512, 480, _ADE, 45.75),
    _mmseg("mmseg_vit-s_mask_ade20k", "segmenter_vit-s_mask_8x1_512x512_160k_ade20k", "20220105_151706-511bb103",
           "segmenter_vit-s_mask_8xb1-160k_ade20k-512x512", "S", "mask", 512, 480, _ADE, 46.19),
    _mmseg("mmseg_vit-b_mask_ade20k", "segmenter_vit-b_mask_8x1_512x512_160k_ade20k", "20220105_151706-bc533b08",
           "segmenter_vit-b_mask_8xb1-160k_ade20k-512x512", "B", "mask", 512, 480, _ADE, 49.60),
    _mmseg("mmseg_vit-l_mask_ade20k", "segmenter_vit-l_mask_8x1_512x512_160k_ade20k", "20220105_162750-7ef345be",
           "segmenter_vit-l_mask_8xb1-160k_ade20k-512x512", "L", "mask", 640, 608, _ADE640, 52.16),
)})


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``."""
    try:
        return ZOO[name]
    except KeyError:
        raise ConfigError(f"unknown checkpoint {name!r}; known: {', '.join(ZOO)}") from None


def list_entries(dataset: str | None = None, format: str | None = None) -> list[ZooEntry]:
    """Zoo entries, optionally only those of one dataset and/or format."""
    return [e for e in ZOO.values()
            if (dataset is None or e.dataset == dataset) and (format is None or e.format == format)]


def checkpoint_dir(dest: str | os.PathLike, name: str) -> Path:
    """The folder ``mpm fetch checkpoint NAME --dest DEST`` fills: ``DEST/NAME``."""
    return Path(dest) / get_entry(name).files[0].dest


def checkpoint_path(dest: str | os.PathLike, name: str) -> Path:
    """The weights file of ``name`` under ``dest``."""
    return checkpoint_dir(dest, name) / get_entry(name).checkpoint_file


def variant_path(dest: str | os.PathLike, name: str) -> Path | None:
    """The ``variant.yml`` of a segmenter-format checkpoint (None for mmseg)."""
    entry = get_entry(name)
    return checkpoint_dir(dest, name) / "variant.yml" if entry.format == "segmenter" else None
