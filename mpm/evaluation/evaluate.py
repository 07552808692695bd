"""Evaluate a Segmenter on a prepared split by mmsegmentation's Segmenter protocol.

:func:`evaluate` runs single-scale sliding-window inference (keep-ratio resize to the
dataset's test scale, windows of the model's crop, logits of overlapping windows
averaged, resized back to the original image and arg-maxed; the steps of
:mod:`mpm.evaluation.sliding`) with a merge method and schedule, and returns an
:class:`EvalResult`: the metrics of the accumulated confusion matrix, the tokens left
after every merge step over all windows, the GFLOPs from those actual token counts
(and the dense GFLOPs of the same windows), and everything needed to interpret the
numbers (dataset, checkpoint hash, model config, method, protocol, environment).

Windows of *several* images share a forward pass (``batch_size`` windows per pass;
only equal-size windows are stacked). Each image's logits are accumulated in the
raster order of its windows, exactly as :func:`mpm.evaluation.sliding.slide_inference`
does, so the result does not depend on ``batch_size`` beyond the model's own float
rounding across batch sizes.

Nothing is written while the evaluation runs: :meth:`EvalResult.save` writes the JSON
(schema ``mpm.eval/1``) and the per-class CSV atomically once it is complete, so an
interrupted or crashed run leaves any earlier output untouched.

>>> split = load_split("data/ade20k", "ade20k", "val")
>>> model = load_segmenter("ckpt/seg_tiny_mask/checkpoint.pth")
>>> res = evaluate(model, split, method="mpm", schedule=(2, 5), backend="math")
>>> res.save("results/ade20k-T-mpm-2_5.json", per_class_csv="results/ade20k-T-mpm-2_5.csv")
>>> print(res.summary_line())
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mpm.data.datasets import DatasetSpec, SegmentationSplit
from mpm.errors import CheckpointError, ConfigError, DatasetError
from mpm.evaluation.metrics import ConfusionMatrix, SegMetrics, write_per_class_csv
from mpm.evaluation.sliding import resize_keep_ratio, resize_logits, slide_windows
from mpm.io import write_json_atomic
from mpm.merging.base import MergeMethod, build_method
from mpm.methods import MethodIdentity
from mpm.models.flops import flops_of_run, merge_steps, segmenter_flops

__all__ = [
    "DTYPES",
    "SCHEMA",
    "EvalProtocol",
    "EvalResult",
    "checkpoint_info",
    "eval_protocol",
    "evaluate",
    "result_filename",
]

SCHEMA = "mpm.eval/1"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

Window = tuple[int, int, int, int]


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class EvalProtocol:
    """The test-time pipeline of one evaluation.

    Attributes:
        test_scale: keep-ratio resize target (mmseg ``Resize(scale, keep_ratio=True)``).
        crop, stride: sliding window (h, w).
        source: ``"dataset"`` (the dataset's own crop/stride/scale), ``"model"`` (the
            model was trained at another crop: crop from the model, scale via
            :meth:`DatasetSpec.scaled_test_scale`) or ``"override"``.
        mean, std: per-channel RGB input normalisation (0..255 scale), from the model config.
    """

    test_scale: tuple[int, int]
    crop: tuple[int, int]
    stride: tuple[int, int]
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"test_scale": list(self.test_scale), "crop": list(self.crop), "stride": list(self.stride),
                "source": self.source, "mean": list(self.mean), "std": list(self.std),
                "mode": "slide", "resize": "keep_ratio bilinear", "logits_resize": "bilinear align_corners=False"}


def _scaled_stride(spec: DatasetSpec, crop: int) -> int:
    """Stride for a model crop other than the dataset's.

    mmseg's configs keep the dataset's window *overlap* (ADE20K 512/480 -> ViT-L
    640/608); when that overlap would leave less than half a crop of stride (a
    small model), the stride is scaled with the crop instead.
    """
    overlap = spec.crop_size - spec.stride
    if crop - overlap >= max(crop // 2, 1):
        return crop - overlap
    return max(1, round(spec.stride * crop / spec.crop_size))


def eval_protocol(spec: DatasetSpec, model_config: Any, *, crop: int | None = None, stride: int | None = None,
                  test_scale: Sequence[int] | None = None) -> EvalProtocol:
    """The protocol for a model on a dataset (see :class:`EvalProtocol`).

    The crop is the model's training size (``config.image_size``) unless given; when it
    equals the dataset's crop the dataset's stride and test scale apply unchanged.
    """
    mh, mw = (int(v) for v in model_config.image_size)
    source = "dataset"
    if crop is None:
        if mh != mw:
            raise ConfigError(f"the model's image size {(mh, mw)} is not square; pass crop= explicitly")
        crop = mh
    elif crop != spec.crop_size:
        source = "override"
    if crop == spec.crop_size:
        default_stride, default_scale = spec.stride, tuple(spec.test_scale)
    else:
        source = "model" if source == "dataset" else source
        default_stride, default_scale = _scaled_stride(spec, crop), spec.scaled_test_scale(crop)
    if stride is not None or test_scale is not None:
        source = "override"
    stride = int(stride) if stride is not None else default_stride
    scale = tuple(int(v) for v in (test_scale if test_scale is not None else default_scale))
    if len(scale) != 2 or min(scale) < 1:
        raise ConfigError(f"test scale must be two positive sizes, got {scale}")
    if not 1 <= stride <= crop:
        raise ConfigError(f"stride {stride} must be in [1, crop={crop}]")
    return EvalProtocol(test_scale=scale, crop=(crop, crop), stride=(stride, stride), source=source,
                        mean=tuple(float(v) for v in model_config.mean),
                        std=tuple(float(v) for v in model_config.std))


def checkpoint_info(path: str | os.PathLike) -> dict:
    """Path, size and sha256 of a checkpoint file (plus its ``.json`` sidecar if present)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pth"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    info: dict[str, Any] = {"path": str(path.resolve()), "sha256": digest.hexdigest(),
                            "bytes": path.stat().st_size}
    sidecar = path.with_name(path.name + ".json")
    if sidecar.is_file():
        import json

        try:
            side = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            side = None
        if isinstance(side, dict):
            info["sidecar"] = {"path": str(sidecar.resolve()),
                               **{k: side[k] for k in ("kind", "synthetic", "note", "schema") if k in side}}
    return info


# --------------------------------------------------------------------------- result


@dataclass
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        metrics: mIoU/aAcc/mAcc and per-class IoU/Acc (percent) of the confusion matrix.
        confusion: (K, K) int64 confusion matrix (rows ground truth).
        class_names: the K class names.
        record: the JSON-ready result (schema ``mpm.eval/1``, see :func:`evaluate`).
    """

    metrics: SegMetrics
    confusion: np.ndarray
    class_names: list[str]
    record: dict[str, Any] = field(repr=False)

    @property
    def miou(self) -> float:
        return self.metrics.mIoU

    @property
    def partial(self) -> bool:
        return bool(self.record["partial"])

    def to_dict(self) -> dict[str, Any]:
        return self.record

    def save(self, out: str | os.PathLike, per_class_csv: str | os.PathLike | None = None) -> Path:
        """Write the per-class CSV (if asked) and then the JSON, each atomically.

        The JSON is written last: its presence means the run is complete.
        """
        record = dict(self.record)
        if per_class_csv is not None:
            csv_path = write_per_class_csv(per_class_csv, self.metrics, self.class_names)
            record["per_class_csv"] = str(Path(csv_path).resolve())
        return write_json_atomic(out, record)

    def summary_line(self) -> str:
        """One line: mIoU, GFLOPs (vs dense), tokens after each step, images, wall time."""
        r = self.record
        g = r["gflops"]
        tok = r["tokens"]
        steps = tok["steps"]
        tokens = "dense" if not steps else " -> ".join(
            f"{s['mean']:.1f}" for s in steps) + f" of {tok['image_tokens']['mean']:.0f} tokens"
        name = MethodIdentity.from_dict(r["method"]).short
        saving = (1.0 - g["per_window"] / g["dense_per_window"]) * 100 if g["dense_per_window"] else 0.0
        part = f" PARTIAL (limit {r['limit']})" if r["partial"] else ""
        return (f"{r['dataset']['name']}/{r['dataset']['split']} {r['model']['name']} {name}: "
                f"mIoU {r['metrics']['mIoU']:.2f} aAcc {r['metrics']['aAcc']:.2f} | "
                f"GFLOPs/window {g['per_window']:.3f} (dense {g['dense_per_window']:.3f}, -{saving:.1f}%) | "
                f"{tokens} | {r['images']['evaluated']}/{r['images']['total']} images{part} | "
                f"{r['wall_time_s']:.1f} s")


def result_filename(record: Mapping[str, Any]) -> str:
    """A file name for a result, one per (dataset, split, model, method, schedule).

    ``ade20k-val__seg_tiny_mask__mpm-2_5.json``; the model is named by its checkpoint
    (the folder for Segmenter's ``checkpoint.pth``) or its size; a partial run gets
    ``__limitN`` so it never takes the name of a full one.
    """
    import re

    ck = record.get("checkpoint") or {}
    if ck.get("path"):
        path = Path(ck["path"])
        model = path.parent.name if path.stem == "checkpoint" else path.stem
    else:
        model = f"seg_{record['model']['size']}".lower()
    method = MethodIdentity.from_dict(record["method"]).slug
    name = f"{record['dataset']['name']}-{record['dataset']['split']}__{model}__{method}"
    if record.get("partial"):
        name += f"__limit{record['images']['evaluated']}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name) + ".json"


# --------------------------------------------------------------------------- running


@dataclass(eq=False)
class _Image:
    """An image in flight: its normalised input and logit accumulators."""

    index: int
    name: str
    label: np.ndarray
    size: tuple[int, int]  # original (H, W)
    x: Tensor  # (3, h, w) normalised, on device, model dtype
    windows: list[Window]
    logits: Tensor | None = None  # (K, h, w) float32
    count: Tensor | None = None  # (1, h, w) float32
    outputs: dict[int, Tensor] = field(default_factory=dict)  # window position -> logits, until in order
    next_window: int = 0  # windows are added to the accumulators in raster order


class _Stats:
    """Token counts and FLOPs of every window that went through the model."""

    def __init__(self, model, method: MergeMethod) -> None:
        self.model = model
        self.method = method
        self.counts: list[Tensor] = []  # (B, steps) float64 per forward
        self.full: list[int] = []  # image tokens of each window
        self.flops = 0.0
        self.flops_padded = 0.0
        self.dense = 0.0
        self.parts = {"encoder": 0.0, "merge": 0.0, "decoder": 0.0}
        self.windows = 0
        self.forwards = 0
        self.sizes: dict[str, int] = {}
        self._dense_cache: dict[tuple[int, int], float] = {}

    def dense_flops(self, hw: tuple[int, int]) -> float:
        if hw not in self._dense_cache:
            self._dense_cache[hw] = segmenter_flops(self.model.config, hw).total
        return self._dense_cache[hw]

    def add(self, x: Tensor, enc) -> list[float]:
        b = x.shape[0]
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        p = self.model.config.patch_size
        n = math.ceil(hw[0] / p) * math.ceil(hw[1] / p)
        if enc.tokens_left:
            self.counts.append(torch.stack([t.reshape(-1) for t in enc.tokens_left], 1).to("cpu", torch.float64))
        reports = flops_of_run(self.model, x, self.method, enc, reduction="none")
        totals = [r.total for r in reports]
        self.flops += sum(totals)
        for r in reports:
            self.parts["encoder"] += r.encoder
            self.parts["merge"] += r.breakdown["merge"]
            self.parts["decoder"] += r.breakdown["decoder"]
        if enc.tokens_left and b > 1:
            self.flops_padded += sum(r.total for r in flops_of_run(self.model, x, self.method, enc,
                                                                    reduction="none", padded=True))
        else:
            self.flops_padded += sum(totals)
        self.dense += self.dense_flops(hw) * b
        self.full.extend([n] * b)
        self.windows += b
        self.forwards += 1
        key = f"{hw[0]}x{hw[1]}"
        self.sizes[key] = self.sizes.get(key, 0) + b
        return totals

    def tokens(self, steps_info: list[dict]) -> dict:
        full = np.asarray(self.full, dtype=np.float64)
        out: dict[str, Any] = {
            "windows": self.windows,
            "image_tokens": _stats(full),
            "prefix_tokens": 1,
            "steps": [],
            "statistics_over": "all windows of the evaluated images (population std)",
        }
        if self.counts:
            allc = torch.cat(self.counts, 0).numpy()  # (windows, steps)
            for k in range(allc.shape[1]):
                entry = dict(steps_info[k]) if k < len(steps_info) else {"step": k}
                entry.update(_stats(allc[:, k]))
                entry["kept_fraction"] = float(np.mean(allc[:, k] / full)) if full.size else None
                out["steps"].append(entry)
        out["after_step_mean"] = [s["mean"] for s in out["steps"]]
        return out

    def gflops(self, n_images: int, batch_size: int) -> dict:
        w = max(self.windows, 1)
        return {
            "per_window": self.flops / w,
            "dense_per_window": self.dense / w,
            "ratio_to_dense": (self.flops / self.dense) if self.dense else None,
            "per_image": self.flops / max(n_images, 1),
            "dense_per_image": self.dense / max(n_images, 1),
            "padded_per_window": self.flops_padded / w,
            "breakdown_per_window": {k: v / w for k, v in self.parts.items()},
            "windows": self.windows,
            "window_sizes": dict(sorted(self.sizes.items())),
            "windows_per_forward": batch_size,
            "convention": "1 multiply-add = 2 FLOPs; matmul-type ops only (fvcore x 2); per window from "
                          "the window's own token counts (mpm.models.flops.flops_of_run), averaged; "
                          "padded_per_window: what padded batches execute (every window of a forward at "
                          "the batch's largest count)",
        }


def _stats(a: np.ndarray) -> dict:
    if a.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def _prefetch(load, n: int, workers: int) -> Iterator:
    """``load(i)`` for i = 0..n-1 in order, computed ``workers`` threads ahead (0: inline)."""
    if workers <= 0:
        for i in range(n):
            yield load(i)
        return
    with futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mpm-eval-read") as pool:
        pending: list[futures.Future] = []
        nxt = 0
        try:
            for _ in range(n):
                while nxt < n and len(pending) < 2 * workers:
                    pending.append(pool.submit(load, nxt))
                    nxt += 1
                yield pending.pop(0).result()
        finally:
            for f in pending:
                f.cancel()


def _resolve_dtype(dtype: str | torch.dtype) -> tuple[torch.dtype, str]:
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in DTYPES.items()}
        if dtype not in names:
            raise ConfigError(f"unsupported dtype {dtype}; expected one of {', '.join(DTYPES)}")
        return dtype, names[dtype]
    key = str(dtype).lower().replace("torch.", "")
    key = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(key, key)
    if key not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[key], key


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(
    model,
    split: SegmentationSplit,
    *,
    method: str | MergeMethod | None = "none",
    schedule: Sequence[int] = (),
    method_kwargs: Mapping[str, Any] | None = None,
    batch_policy: str = "exact",
    backend: str = "math",
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    limit: int | None = None,
    progress: bool = True,
    crop: int | None = None,
    stride: int | None = None,
    test_scale: Sequence[int] | None = None,
    checkpoint: str | os.PathLike | None = None,
    workers: int = 1,
    resize_backend: str | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``split`` with a merge method; see the module docstring.

    Args:
        model: a :class:`~mpm.models.segmenter.Segmenter`; it is moved to ``device`` and
            cast to ``dtype`` (in place) and put in eval mode.
        split: a prepared split (:func:`mpm.data.datasets.load_split`); its spec gives
            classes, ignore index, test scale, crop and stride, its reader applies
            ``reduce_zero_label``.
        method: merge method name (``none``, ``mpm``, ``tome``, ``algm``) or a built
            :class:`~mpm.merging.base.MergeMethod` (then ``schedule``, ``method_kwargs``
            and ``batch_policy`` are ignored).
        schedule: blocks (0-based) with a merge site, e.g. ``(2, 5)``.
        method_kwargs: extra parameters of the method (ToMe's ``r``).
        batch_policy: ``exact`` or ``batch-min`` (see the README).
        backend: attention backend (``math``, ``sdpa``, ``fa2``, ``flash-attn``).
        dtype: ``float32``, ``float16`` or ``bfloat16`` (logits are accumulated in float32).
        device: ``cpu``, ``cuda``, ``cuda:1``...
        batch_size: windows per forward pass (windows of several images are stacked).
        limit: evaluate only the first ``limit`` images; the result says ``partial: true``
            whenever fewer than all images of the split were evaluated.
        progress: show a tqdm bar (only when stderr is a terminal).
        crop, stride, test_scale: override the protocol (default: :func:`eval_protocol`).
        checkpoint: the file the model came from, recorded with its sha256.
        workers: threads reading, decoding and resizing images ahead (0: inline).
        resize_backend: see :func:`mpm.evaluation.sliding.resize_keep_ratio`.
    Returns:
        :class:`EvalResult`; ``result.record`` is the JSON of schema ``mpm.eval/1`` with the
        keys ``schema, complete, partial, limit, created_utc, started_utc, finished_utc, dataset, images, checkpoint,
        model, method, protocol, run, metrics, tokens, gflops, wall_time_s, images_per_s,
        device, dtype, backend, environment, confusion_matrix``.
    """
    from mpm.environment import describe_environment
    from mpm.models.attention import check_backend

    t_start = time.perf_counter()
    started_utc = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    spec = split.spec
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: no usable CUDA GPU on this machine; use device='cpu'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch_dtype, dtype_name = _resolve_dtype(dtype)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if len(split) == 0:
        raise DatasetError(f"{spec.name}/{split.split} under {split.root} holds no images")
    check_backend(backend, device, torch_dtype)
    if isinstance(method, MergeMethod):
        merge = method
    else:
        merge = build_method(method or "none", schedule, depth=model.config.depth, batch_policy=batch_policy, **dict(method_kwargs or {}))
    config = model.config
    merge.validate(config.depth)
    if config.num_classes != spec.num_classes:
        raise ConfigError(f"the model predicts {config.num_classes} classes, dataset {spec.name} has "
                          f"{spec.num_classes} ({', '.join(spec.class_names[:5])}...)")
    proto = eval_protocol(spec, config, crop=crop, stride=stride, test_scale=test_scale)
    ckpt = checkpoint_info(checkpoint) if checkpoint is not None else None
    split.check_sizes(None if limit is None else int(limit))  # every pair it will read, from file headers

    model = model.to(device=device, dtype=torch_dtype).eval()
    mean = torch.tensor(proto.mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.tensor(proto.std, dtype=torch.float32, device=device).view(3, 1, 1)
    k = config.num_classes
    total = len(split)
    n = total if limit is None else min(int(limit), total)
    cm = ConfusionMatrix(k, spec.ignore_index, strict=True)
    stats = _Stats(model, merge)
    image_gflops: list[float] = []

    # pending windows, grouped by size: (image, window position)
    queues: dict[tuple[int, int], list[tuple[_Image, int]]] = {}
    in_flight: dict[int, _Image] = {}

    def finish(img: _Image) -> None:
        logits = (img.logits / img.count)[None]
        logits = resize_logits(logits, img.size)[0]
        pred = logits.argmax(dim=0)
        cm.update(pred, img.label, name=img.name)
        del in_flight[img.index]

    def absorb(img: _Image) -> None:
        """Add the window logits that are next in raster order to the accumulators."""
        while img.next_window in img.outputs:
            y1, y2, x1, x2 = img.windows[img.next_window]
            out = img.outputs.pop(img.next_window)
            if img.logits is None:
                h, w = img.x.shape[-2:]
                img.logits = torch.zeros((k, h, w), dtype=torch.float32, device=device)
                img.count = torch.zeros((1, h, w), dtype=torch.float32, device=device)
            img.logits[:, y1:y2, x1:x2] += out
            img.count[:, y1:y2, x1:x2] += 1
            img.next_window += 1
        if img.next_window == len(img.windows):
            finish(img)

    def run_batch(key: tuple[int, int], jobs: list[tuple[_Image, int]]) -> None:
        crops = []
        for img, pos in jobs:
            y1, y2, x1, x2 = img.windows[pos]
            crops.append(img.x[:, y1:y2, x1:x2])
        xb = torch.stack(crops, 0)
        logits, enc = model(xb, method=merge, backend=backend, return_encoder=True)
        if tuple(logits.shape) != (len(jobs), k, key[0], key[1]):
            raise ConfigError(f"model returned logits of shape {tuple(logits.shape)} for windows "
                              f"{tuple(xb.shape)}; expected {(len(jobs), k, key[0], key[1])}")
        flops = stats.add(xb, enc)
        logits = logits.float()
        touched = []
        for j, (img, pos) in enumerate(jobs):
            img.outputs[pos] = logits[j]
            image_gflops[img.index] += flops[j]
            touched.append(img)
        for img in dict.fromkeys(touched):  # unique, in order
            absorb(img)

    def drain(force: bool) -> None:
        for key in list(queues):
            q = queues[key]
            while len(q) >= batch_size or (force and q):
                chunk, queues[key] = q[:batch_size], q[batch_size:]
                q = queues[key]
                run_batch(key, chunk)
            if not q:
                del queues[key]

    bar = None
    if progress and sys.stderr.isatty() and n:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"eval {spec.name}/{split.split} {merge.name}", unit="img", leave=False)
    def load(i: int):  # read, decode and resize (in reader threads)
        sample = split[i]
        return sample, resize_keep_ratio(sample.image, proto.test_scale, backend=resize_backend)

    samples = _prefetch(load, n, workers)
    try:
        for i, (sample, resized) in enumerate(samples):
            h, w = sample.image.shape[:2]
            x = torch.from_numpy(np.ascontiguousarray(resized)).to(device).permute(2, 0, 1).float()
            x = ((x - mean) / std).to(torch_dtype)
            wins = slide_windows(x.shape[-2], x.shape[-1], proto.crop, proto.stride)
            img = _Image(i, sample.name, sample.label, (h, w), x, wins)
            in_flight[i] = img
            image_gflops.append(0.0)
            for pos, (y1, y2, x1, x2) in enumerate(wins):
                queues.setdefault((y2 - y1, x2 - x1), []).append((img, pos))
            done_before = cm.num_images
            drain(force=False)
            if bar is not None:
                bar.update(cm.num_images - done_before)
        done_before = cm.num_images
        drain(force=True)
        if bar is not None:
            bar.update(cm.num_images - done_before)
    finally:
        if bar is not None:
            bar.close()
        samples.close()
    _sync(device)
    if in_flight or cm.num_images != n:  # pragma: no cover - internal invariant
        raise RuntimeError(f"evaluation finished with {len(in_flight)} image(s) unaccounted for")
    wall = time.perf_counter() - t_start

    metrics = cm.compute()
    class_names = list(spec.class_names)
    steps_info = []
    if stats.counts:
        first = torch.cat(stats.counts, 0).mean(0).tolist()
        for s in merge_steps(config, merge, first, proto.crop):
            steps_info.append({"step": s.index, "block": s.block, "site": s.site})
    n_params = sum(p.numel() for p in model.parameters())
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "complete": True,
        "partial": n < total,
        "limit": limit,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "started_utc": started_utc,  # the job's start and end (ms), e.g. for its MLflow run
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "dataset": {
            "name": spec.name,
            "split": split.split,
            "root": str(Path(split.root).resolve()),
            "num_classes": spec.num_classes,
            "class_names": class_names,
            "ignore_index": spec.ignore_index,
            "reduce_zero_label": spec.reduce_zero_label,
            "synthetic": bool(spec.synthetic or split.manifest.get("synthetic")),
        },
        "images": {"evaluated": n, "total": total, "limit": limit, "partial": n < total},
        "checkpoint": ckpt,
        "model": {
            "name": f"Seg-{config.size_name}/{config.patch_size}-{config.decoder}",
            "size": config.size_name,
            "parameters": n_params,
            "config": config.to_dict(),
        },
        "method": merge.describe(),
        "protocol": proto.to_dict(),
        "run": {"batch_size": batch_size, "forwards": stats.forwards, "windows": stats.windows,
                "workers": workers},
        "metrics": {**metrics.to_dict(class_names), "unit": "percent"},
        "tokens": stats.tokens(steps_info),
        "gflops": stats.gflops(n, batch_size),
        "wall_time_s": wall,
        "images_per_s": n / wall if wall > 0 else None,
        "device": str(device),
        "dtype": dtype_name,
        "backend": backend,
        "environment": describe_environment(device, backend, dtype_name),
        "confusion_matrix": cm.mat.tolist(),
    }
    if image_gflops:
        record["gflops"]["per_image_std"] = float(np.std(image_gflops))
    return EvalResult(metrics=metrics, confusion=cm.mat.copy(), class_names=class_names, record=record)
