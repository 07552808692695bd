"""The offline synthetic demo set: textured regions in ADE20K's on-disk layout.

Each image is a warped Voronoi partition; every region takes a class in 1..K (or 0,
"other", ignored like ADE20K's 0) and is painted with that class's texture (stripes of
some orientation and period, bricks, dots, waves, gradients, noise) in that class's
colours, with a per-region brightness jitter. Colours overlap between classes (sky and
water are both blue), so a model must look at texture too.

Files follow ``ADEChallengeData2016/{images,annotations}/{training,validation}`` with
ADE20K's names, so ADE20K readers (mmseg's included) load it; ``synthetic.json`` beside
them says the data is synthetic and gives its class names. Output is a pure function of
the arguments: a rerun writes byte-identical files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mpm.io import save_image_atomic, write_json_atomic
from mpm.data.classes import SYNTHETIC_CLASSES
from mpm.errors import ConfigError

ADE_DIR = "ADEChallengeData2016"
METADATA_FILE = "synthetic.json"
GENERATOR_VERSION = 1
SPLITS = {"train": ("training", "ADE_train"), "val": ("validation", "ADE_val")}
_OTHER_PROB = 0.08
_JPEG_QUALITY = 90

# per class: (dark colour, light colour) in RGB
_PALETTE = {
    1: ((110, 160, 230), (200, 225, 250)),  # sky: vertical gradient
    2: ((30, 90, 20), (110, 170, 60)),  # grass: grainy noise
    3: ((120, 40, 30), (190, 90, 70)),  # brick: running bond with mortar
    4: ((210, 170, 20), (250, 240, 200)),  # awning: horizontal stripes
    5: ((25, 25, 25), (225, 225, 225)),  # zebra: diagonal stripes
    6: ((20, 80, 150), (90, 170, 220)),  # water: wavy bands
    7: ((180, 150, 100), (225, 200, 150)),  # sand: fine low-contrast noise
    8: ((60, 30, 10), (250, 140, 30)),  # dots: dot grid
}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid bilinearly upsampled to (h, w)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    coarse = Image.fromarray(rng.random((gh, gw), dtype=np.float32))
    return np.asarray(coarse.resize((w, h), Image.BILINEAR), dtype=np.float32)


def _texture(cls: int, y: np.ndarray, x: np.ndarray, idx: np.ndarray, shape: tuple[int, int],
             rng: np.random.Generator) -> np.ndarray:
    """Pattern intensity in [0, 1] of class ``cls`` at pixels ``idx`` (coordinates y, x)."""
    h, w = shape
    phase = np.float32(rng.uniform(0, 64))
    if cls == 1:
        return np.clip(y / h + 0.08 * _smooth_noise(rng, h, w, 48).ravel()[idx], 0, 1)
    if cls == 2:
        return 0.6 * rng.random(idx.size, dtype=np.float32) + 0.4 * _smooth_noise(rng, h, w, 8).ravel()[idx]
    if cls == 3:
        row = (y + phase) // 10
        shifted = x + phase + 10 * (row % 2)
        mortar = ((y + phase) % 10 < 2) | (shifted % 20 < 2)
        return np.where(mortar, 1.0, 0.15 + 0.25 * ((row + shifted // 20) % 2)).astype(np.float32)
    if cls == 4:
        return (np.sin(2 * np.pi * (y + phase) / 14) > 0).astype(np.float32)
    if cls == 5:
        return (np.sin(2 * np.pi * (x + y + phase) / 12) > 0).astype(np.float32)
    if cls == 6:
        return 0.5 + 0.5 * np.sin(2 * np.pi * (x + phase) / 26 + 3 * np.sin(2 * np.pi * y / 45))
    if cls == 7:
        return 0.5 + 0.25 * (rng.random(idx.size, dtype=np.float32) - 0.5)
    if cls == 8:
        dy, dx = (y + phase) % 11 - 5, (x + phase) % 11 - 5
        return (dy * dy + dx * dx < 10).astype(np.float32)
    raise ValueError(f"no texture for class {cls}")


def _colourise(t: np.ndarray, dark, light) -> np.ndarray:
    dark, light = np.asarray(dark, np.float32), np.asarray(light, np.float32)
    return dark + t.astype(np.float32)[:, None] * (light - dark)


def _partition(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Region index per pixel: nearest of 4..10 seeds in sinusoidally warped coordinates."""
    n = int(rng.integers(4, 11))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    amp, freq, ph = rng.uniform(4, 18, 2), rng.uniform(0.01, 0.04, 2), rng.uniform(0, 2 * np.pi, 2)
    wy = yy + np.float32(amp[0]) * np.sin(np.float32(freq[0]) * xx + np.float32(ph[0]))
    wx = xx + np.float32(amp[1]) * np.sin(np.float32(freq[1]) * yy + np.float32(ph[1]))
    seeds = rng.uniform((0, 0), (h, w), size=(n, 2)).astype(np.float32)
    best = np.full((h, w), np.inf, np.float32)
    region = np.zeros((h, w), np.int64)
    for k, (sy, sx) in enumerate(seeds):
        dist = (wy - sy) ** 2 + (wx - sx) ** 2
        closer = dist < best
        best[closer] = dist[closer]
        region[closer] = k
    return region


def make_sample(
    rng: np.random.Generator, height: int, width: int, num_classes: int = len(_PALETTE)
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (RGB uint8 image, uint8 label with 0 = other) pair."""
    regions = _partition(rng, height, width)
    n_regions = int(regions.max()) + 1
    region_cls = rng.integers(1, num_classes + 1, size=n_regions)
    region_cls[rng.random(n_regions) < _OTHER_PROB] = 0
    label = region_cls[regions].astype(np.uint8)
    gain = rng.uniform(0.85, 1.15, size=n_regions).astype(np.float32)
    flat_label, flat_region = label.ravel(), regions.ravel()
    image = np.empty((height * width, 3), np.float32)
    for cls in np.unique(region_cls):
        idx = np.flatnonzero(flat_label == cls)
        if idx.size == 0:
            continue
        y, x = np.divmod(idx, width)
        y, x = y.astype(np.float32), x.astype(np.float32)
        if cls == 0:  # a distractor: smooth noise in random colours
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            patch = _colourise(_smooth_noise(rng, height, width, 24).ravel()[idx], a, b)
        else:
            patch = _colourise(_texture(int(cls), y, x, idx, (height, width), rng), *_PALETTE[int(cls)])
        image[idx] = patch * gain[flat_region[idx], None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * 4
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return image.reshape(height, width, 3), label


def metadata(n_train: int, n_val: int, size: int, seed: int) -> dict:
    """The content of ``synthetic.json`` (no timestamps: reruns are byte-identical)."""
    return {
        "synthetic": True,
        "name": "mpm-synthetic",
        "description": (
            "SYNTHETIC data generated by mpm (mpm synth), not a real dataset: warped Voronoi "
            "regions painted with per-class textures, in the ADE20K on-disk layout. "
            "Label 0 = other/ignore, 1..K = classes (reduce_zero_label like ADE20K)."
        ),
        "generator_version": GENERATOR_VERSION,
        "num_classes": len(SYNTHETIC_CLASSES),
        "class_names": list(SYNTHETIC_CLASSES),
        "seed": seed,
        "n_train": n_train,
        "n_val": n_val,
        "size": [size, size + size // 4],
        "layout": f"{ADE_DIR}/images/{{training,validation}}/*.jpg, "
                  f"{ADE_DIR}/annotations/{{training,validation}}/*.png",
    }


def read_metadata(root: str | os.PathLike) -> dict | None:
    """The synthetic set's metadata under ``root``, or None for a real ADE20K."""
    import json

    path = Path(root) / ADE_DIR / METADATA_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _clear_stale(folder: Path, prefix: str, keep: int, suffix: str) -> None:
    pattern = re.compile(rf"{prefix}_(\d{{8}}){re.escape(suffix)}$")
    for path in folder.glob(f"{prefix}_*{suffix}"):
        match = pattern.match(path.name)
        if match and int(match.group(1)) > keep:
            path.unlink()


def generate(
    root: str | os.PathLike,
    n_train: int = 300,
    n_val: int = 60,
    size: int = 256,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the synthetic set under ``root``; return its metadata.

    Image sides are drawn in ``[size, 1.25 * size]`` so resizing and sliding-window
    code is exercised. Refuses a root that holds a real ADE20K.
    """
    if n_train < 0 or n_val < 0 or size < 32:
        raise ConfigError(f"invalid synthetic set size: n_train={n_train}, n_val={n_val}, size={size} (size >= 32)")
    root = Path(root)
    base = root / ADE_DIR
    meta_path = base / METADATA_FILE
    if (base / "images").exists() and not meta_path.exists():
        raise ConfigError(f"{base} holds data that is not a synthetic set (no {METADATA_FILE}); choose another --root")
    total, done = n_train + n_val, 0
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        folder, prefix = SPLITS[split]
        img_dir, ann_dir = base / "images" / folder, base / "annotations" / folder
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        _clear_stale(img_dir, prefix, count, ".jpg")
        _clear_stale(ann_dir, prefix, count, ".png")
        for i in range(1, count + 1):
            rng = np.random.default_rng([seed, split_index, i])
            h, w = (int(v) for v in rng.integers(size, size + size // 4 + 1, size=2))
            image, label = make_sample(rng, h, w)
            stem = f"{prefix}_{i:08d}"
            save_image_atomic(img_dir / f"{stem}.jpg", Image.fromarray(image), quality=_JPEG_QUALITY)
            save_image_atomic(ann_dir / f"{stem}.png", Image.fromarray(label))
            done += 1
            if progress is not None:
                progress(done, total)
    meta = metadata(n_train, n_val, size, seed)
    write_json_atomic(meta_path, meta)
    return meta
