"""Single-scale test protocol of Segmenter in mmsegmentation 1.x, without mmseg.

Steps, each matching the mmseg code named:

1. :func:`resize_keep_ratio` — ``mmcv.transforms.Resize(scale=(2048, 512), keep_ratio=True)``,
   i.e. ``mmcv.imrescale`` (size from :func:`rescale_size`, ``cv2.resize`` INTER_LINEAR
   on the uint8 image).
2. :func:`normalize` — ``SegDataPreProcessor(mean=[127.5]*3, std=[127.5]*3, bgr_to_rgb=True)``
   on an RGB image.
3. :func:`slide_inference` — ``EncoderDecoder.slide_inference`` (windows of
   :func:`slide_windows`, logits summed and divided by the per-pixel window count).
4. :func:`predict` — the above, then ``BaseSegmentor.postprocess_result``: logits resized
   back to the original image size (bilinear, ``align_corners=False``) and argmax.

The model contract: ``model(x)`` with ``x`` (n, 3, h, w) normalised returns logits
(n, K, h, w) at the *input* resolution. ``h``/``w`` are the crop size, or smaller when
the image is smaller than the crop (mmseg then runs the smaller window without padding;
so does this code), so the model must accept any size — Segmenter pads to a multiple of
its patch size internally.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional: used when installed, for bit-exact agreement with mmcv
    import cv2 as _cv2
except ImportError:  # pragma: no cover - depends on the environment
    _cv2 = None

__all__ = [
    "MEAN",
    "STD",
    "rescale_size",
    "resize_keep_ratio",
    "normalize",
    "slide_windows",
    "slide_inference",
    "resize_logits",
    "predict",
]

MEAN = 127.5
STD = 127.5

Window = tuple[int, int, int, int]
Model = Callable[[Tensor], Tensor]


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    a, b = (int(x) for x in v)
    if a < 1 or b < 1:
        raise ValueError(f"{what} must be positive, got {(a, b)}")
    return a, b


def rescale_size(h: int, w: int, scale: float | tuple[int, int] = (2048, 512)) -> tuple[int, int]:
    """New (h, w) of a keep-ratio resize, as ``mmcv.image.rescale_size``.

    With a tuple ``scale`` the image becomes as large as possible with its long edge
    <= ``max(scale)`` and its short edge <= ``min(scale)``:
    ``factor = min(max(scale) / max(h, w), min(scale) / min(h, w))``; a number is the
    factor itself. ``new = int(old * factor + 0.5)``.
    Example: (512, 683) -> (512, 683); (375, 500) -> (512, 683); (256, 256) -> (512, 512).
    """
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ValueError(f"invalid scale {scale}, must be positive")
        factor = float(scale)
    else:
        long_max, short_max = max(scale), min(scale)
        factor = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize_keep_ratio(
    img: np.ndarray,
    scale: float | tuple[int, int] = (2048, 512),
    backend: str | None = None,
) -> np.ndarray:
    """Bilinear keep-ratio resize of an (H, W, C) uint8 image, as ``mmcv.imrescale``.

    Args:
        img: (H, W, C) uint8 array (channel order does not matter).
        scale: see :func:`rescale_size`.
        backend: ``"cv2"`` (``cv2.resize`` INTER_LINEAR, bit-exact with mmcv; the
            default when OpenCV is importable) or ``"torch"`` (``F.interpolate`` bilinear,
            ``align_corners=False``, no antialias, rounded to uint8). Both sample at pixel
            centres without antialiasing; OpenCV uses 11-bit fixed-point weights for
            uint8, so the torch result differs by at most 1 grey level on some pixels.
    Returns:
        (new_h, new_w, C) uint8 array.
    """
    img = np.asarray(img)
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    h, w = img.shape[:2]
    new_h, new_w = rescale_size(h, w, scale)
    if backend is None:
        backend = "cv2" if _cv2 is not None else "torch"
    if backend == "cv2":
        if _cv2 is None:
            raise ImportError("backend='cv2' needs opencv (pip install opencv-python-headless)")
        out = _cv2.resize(
            np.ascontiguousarray(img), (new_w, new_h), interpolation=_cv2.INTER_LINEAR
        )
        return out.reshape(new_h, new_w, img.shape[2])  # cv2 drops a single channel axis
    if backend != "torch":
        raise ValueError(f"unknown resize backend {backend!r} (cv2 or torch)")
    if (new_h, new_w) == (h, w):
        return img.copy()
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    x = x[0].permute(1, 2, 0).round_().clamp_(0, 255)
    return x.to(torch.uint8).numpy()


def normalize(img: np.ndarray | Tensor, mean: float = MEAN, std: float = STD) -> Tensor:
    """(H, W, 3) uint8 RGB image -> (3, H, W) float32 ``(x - 127.5) / 127.5``."""
    x = torch.as_tensor(np.asarray(img)) if not isinstance(img, Tensor) else img
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {tuple(x.shape)}")
    return (x.permute(2, 0, 1).float() - mean) / std


def slide_windows(
    h: int, w: int, crop: int | Sequence[int] = 512, stride: int | Sequence[int] = 480
) -> list[Window]:
    """Windows ``(y1, y2, x1, x2)`` of mmseg's ``slide_inference``, raster order.

    ``grids = max(h - crop + stride - 1, 0) // stride + 1`` per axis; window ``i``
    spans ``[max(min(i * stride + crop, h) - crop, 0), min(i * stride + crop, h))``.
    Every window has size ``(min(crop_h, h), min(crop_w, w))``; the last one on each
    axis is shifted back to end at the border. ``stride <= crop`` guarantees coverage.
    """
    h_crop, w_crop = _pair(crop, "crop")
    h_stride, w_stride = _pair(stride, "stride")
    if h_stride > h_crop or w_stride > w_crop:
        raise ValueError(f"stride {(h_stride, w_stride)} > crop {(h_crop, w_crop)} leaves gaps")
    if h < 1 or w < 1:
        raise ValueError(f"empty image {(h, w)}")
    h_grids = max(h - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w - w_crop + w_stride - 1, 0) // w_stride + 1
    out: list[Window] = []
    for i in range(h_grids):
        for j in range(w_grids):
            y1, x1 = i * h_stride, j * w_stride
            y2, x2 = min(y1 + h_crop, h), min(x1 + w_crop, w)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            out.append((y1, y2, x1, x2))
    return out


@torch.no_grad()
def slide_inference(
    model: Model,
    img: Tensor,
    num_classes: int,
    crop: int | Sequence[int] = (512, 512),
    stride: int | Sequence[int] = (480, 480),
    batch_size: int = 1,
    acc_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Sliding-window logits of a normalised image batch.

    Args:
        model: ``(n, 3, h, w) -> (n, K, h, w)`` logits at the input resolution.
        img: (B, 3, H, W) normalised images (usually B = 1), on the model's device
            and in the model's dtype.
        num_classes: K.
        crop, stride: (h, w) or one int.
        batch_size: windows per forward pass; each window holds the B images, so the
            model sees up to ``batch_size * B`` crops. Only equal-size windows share a
            pass. Results do not depend on it (up to the model's own batch effects).
        acc_dtype: dtype of the accumulator and of the result (float32 even when the
            model runs in half precision; mmseg accumulates in the input dtype).
    Returns:
        (B, K, H, W) logits, overlapping windows averaged (sum / count, like mmseg).
    """
    if img.ndim != 4:
        raise ValueError(f"expected (B, 3, H, W) input, got shape {tuple(img.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b, _, h, w = img.shape
    windows = slide_windows(h, w, crop, stride)
    logits = torch.zeros((b, num_classes, h, w), dtype=acc_dtype, device=img.device)
    count = torch.zeros((1, 1, h, w), dtype=acc_dtype, device=img.device)

    # group equal-size windows, keeping raster order inside a group (with mmseg's
    # tiling all windows have one size, so this is one group in raster order)
    groups: dict[tuple[int, int], list[Window]] = {}
    for win in windows:
        groups.setdefault((win[1] - win[0], win[3] - win[2]), []).append(win)

    for (wh, ww), wins in groups.items():
        for start in range(0, len(wins), batch_size):
            chunk = wins[start : start + batch_size]
            x = torch.cat([img[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk], dim=0)
            out = model(x)
            expected = (len(chunk) * b, num_classes, wh, ww)
            if tuple(out.shape) != expected:
                raise ValueError(
                    f"model returned logits of shape {tuple(out.shape)} for input "
                    f"{tuple(x.shape)}; expected {expected} (logits at input resolution)"
                )
            out = out.to(acc_dtype).view(len(chunk), b, num_classes, wh, ww)
            for k, (y1, y2, x1, x2) in enumerate(chunk):
                logits[:, :, y1:y2, x1:x2] += out[k]
                count[:, :, y1:y2, x1:x2] += 1
    if bool((count == 0).any()):  # cannot happen with stride <= crop
        raise RuntimeError("sliding windows left pixels uncovered")
    return logits / count


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, K, h, w) -> (B, K, H, W) bilinear, ``align_corners=False`` (mmseg postprocess)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict(
    model: Model,
    img: np.ndarray,
    num_classes: int,
    scale: float | tuple[int, int] = (2048, 512),
    crop: int | Sequence[int] = (512, 512),
    stride: int | Sequence[int] = (480, 480),
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    return_logits: bool = False,
    resize_backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Predict one image by the mmseg single-scale sliding protocol.

    Args:
        model: see :func:`slide_inference`; already on ``device`` and able to take
            ``dtype`` inputs (the input is cast to ``dtype``; use autocast outside
            for mixed precision with a float32 model).
        img: (H, W, 3) uint8 RGB image at its original size.
        num_classes: K.
        scale: keep-ratio resize target, e.g. (2048, 512) for ADE20K, (2048, 1024)
            for Cityscapes; ``None`` or 1.0 keeps the size.
        crop, stride: sliding window, e.g. 512/480 (ViT-L on ADE20K: 640/608).
        batch_size: windows per forward pass.
        device, dtype: where and in which dtype the model runs.
        return_logits: also return the (K, H, W) float32 logits at the original size (CPU).
        resize_backend: see :func:`resize_keep_ratio`.
    Returns:
        ``(pred, logits)``: pred (H, W) int64 on CPU at the original size; logits or None.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    resized = img if scale is None else resize_keep_ratio(img, scale, backend=resize_backend)
    x = normalize(resized)[None].to(device=device, dtype=dtype)
    logits = slide_inference(model, x, num_classes, crop=crop, stride=stride, batch_size=batch_size)
    logits = resize_logits(logits, (h, w))[0]  # (K, H, W)
    pred = logits.argmax(dim=0).cpu()
    return pred, (logits.cpu() if return_logits else None)
