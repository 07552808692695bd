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


#: ``--images`` value for real photographs shipped inside scikit-image (no download)
PHOTOS_SOURCE = "skimage:photos"
#: scikit-image's bundled photographs (colour first), in the order they are used
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "camera.png", "coins.png", "moon.png", "grass.png", "gravel.png",
                  "brick.png")
#: variants that make distinct images of one photo: (horizontal flip, central zoom)
PHOTO_VARIANTS = ((False, 1.0), (True, 1.0), (False, 0.7), (True, 0.7), (False, 0.5), (True, 0.5), (False, 0.85),
                  (True, 0.85))


def skimage_photos(count: int, crop: tuple[int, int], photos: int = 8) -> tuple[torch.Tensor, dict]:
    """``count`` distinct real photographs from scikit-image's package data, (count, 3, H, W) uint8.

    The first ``photos`` bundled photographs found (:data:`SKIMAGE_PHOTOS`) each give up to eight
    images (:data:`PHOTO_VARIANTS`: as is, mirrored, central 70%, 50% and 85% crops, each also
    mirrored), variant by variant, so 32 images come from 8 photos (the first four variants), 64
    from the eight; grey photos are replicated to RGB. Needs
    scikit-image (``pip install scikit-image``; the files ship inside its wheel).
    """
    try:
        import skimage
    except ImportError:
        raise DatasetError("benchmark images 'skimage:photos' need scikit-image (pip install scikit-image)") from None
    folder = Path(skimage.__file__).parent / "data"
    names = [n for n in SKIMAGE_PHOTOS if (folder / n).is_file()][:photos]
    if not names or count > len(names) * len(PHOTO_VARIANTS):
        raise DatasetError(f"scikit-image {skimage.__version__} at {folder} bundles {len(names)} of the photos "
                           f"{', '.join(SKIMAGE_PHOTOS)}: too few for {count} distinct images")
    arrays, chosen = [], []
    for i in range(count):
        flip, zoom = PHOTO_VARIANTS[i // len(names)]
        name = names[i % len(names)]
        with Image.open(folder / name) as im:
            img = im.convert("RGB")
            if zoom < 1.0:
                w, h = img.size
                cw, ch = round(w * zoom), round(h * zoom)
                img = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
            if flip:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            arrays.append(resize_to_crop(img, crop))
        chosen.append(f"{name}:{'flip' if flip else 'orig'}:{zoom}")
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    digest = hashlib.sha256(batch.numpy().tobytes()).hexdigest()[:16]
    return batch, {
        "source": PHOTOS_SOURCE,
        "images_available": len(names) * len(PHOTO_VARIANTS),
        "images_used": count,
        "repeated": False,
        "crop": list(crop),
        "file_list_sha256_16": digest,
        "photos": names,
        "scikit_image": skimage.__version__,
    }


def load_batch_images(source: str | Path, count: int, crop: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """``count`` distinct images as a (count, 3, H, W) uint8 tensor, and a description of the source.

    ``source`` is a folder, image file or manifest (:func:`find_images`), or
    :data:`PHOTOS_SOURCE` for scikit-image's photographs (:func:`skimage_photos`).
    When a folder holds fewer images, they repeat (said in the description).
    """
    if str(source) == PHOTOS_SOURCE:
        return skimage_photos(count, crop)
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
