"""Benchmark inputs: real images resized to the model's crop.

The merged token count depends on image content, so timings use real images
(random noise merges very differently); the source is recorded with the result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mpm.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_images(source: str | Path, limit: int | None = None) -> list[Path]:
    """Image files of ``source``: a prepared split's manifest (``mpm-manifest`` JSON, in its
    order), a folder (searched recursively, sorted), or one image file."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".json":
        return _manifest_images(source)[:limit] if limit else _manifest_images(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DatasetError(f"benchmark image source {source} does not exist")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "annotation" not in p.parts)
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {source}")
    return files[:limit] if limit else files


def _manifest_images(path: Path) -> list[Path]:
    try:
        data = json.loads(path.read_text())
        root = path.parent.parent  # ROOT/manifests/NAME.json -> ROOT
        files = [root / s["image"] for s in data["samples"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"benchmark image source {path} is not a readable mpm manifest: {err}") from err
    if not files:
        raise DatasetError(f"manifest {path} lists no images")
    return files


def resize_to_crop(img: Image.Image, crop: tuple[int, int]) -> np.ndarray:
    """Resize so the image covers ``crop`` (H, W), keeping ratio, then centre-crop: (H, W, 3) uint8."""
    h, w = crop
    scale = max(h / img.height, w / img.width)
    size = (max(w, round(img.width * scale)), max(h, round(img.height * scale)))
    img = img.convert("RGB").resize(size, Image.BILINEAR)
    top, left = (img.height - h) // 2, (img.width - w) // 2
    return np.asarray(img.crop((left, top, left + w, top + h)))


def load_batch_images(source: str | Path, count: int, crop: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """``count`` distinct images as a (count, 3, H, W) uint8 tensor, and a description of the source.

    When the source holds fewer images, they repeat (said in the description).
    """
    files = find_images(source)
    chosen = [files[i % len(files)] for i in range(count)]
    arrays = []
    for f in chosen:
        try:
            with Image.open(f) as im:
                arrays.append(resize_to_crop(im, crop))
        except OSError as err:
            raise DatasetError(f"cannot read benchmark image {f}: {err}") from err
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    digest = hashlib.sha256("\n".join(f.name for f in chosen).encode()).hexdigest()[:16]
    return batch, {
        "source": str(source),
        "images_available": len(files),
        "images_used": len(set(chosen)),
        "repeated": len(files) < count,
        "crop": list(crop),
        "file_list_sha256_16": digest,
    }
