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
from dataclasses import dataclass, field, replace
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
from mpm.merging.base import MergeMethod, build_method
from mpm.methods import MethodIdentity
from mpm.models.flops import flops_of_run, merge_steps, segmenter_flops
from mpm.records import EVAL_SCHEMA, EvalRecord, model_name_of, resolve_names

__all__ = [
    "DTYPES",
    "SCHEMA",
    "EvalOptions",
    "EvalProtocol",
    "EvalResult",
    "checkpoint_info",
    "eval_protocol",
    "evaluate",
    "result_filename",
]

SCHEMA = EVAL_SCHEMA
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
        record = EvalRecord(self.record).validate(out)  # before any file is written
        if per_class_csv is not None:
            csv_path = write_per_class_csv(per_class_csv, self.metrics, self.class_names)
            record["per_class_csv"] = str(Path(csv_path).resolve())
        return record.write(out)

    def summary_line(self) -> str:
        """One line: mIoU, GFLOPs (vs dense), tokens after each step, images, wall time."""
        r = self.record
        g = r["gflops"]
        tok = r["tokens"]
        steps = tok["steps"]
        tokens = "dense" if not steps else " -> ".join(
            f"{s['mean']:.1f}" for s in steps) + f" of {tok['image_tokens']['mean']:.0f} tokens"
        name = EvalRecord(r).names.method_schedule
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


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate` runs (every field has the default of a plain ``evaluate(model, split)``).

    Attributes:
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
        names: the config's names of the job (:mod:`mpm.records.names`: dataset, model, method,
            schedule); what is not given is derived (the dataset, the checkpoint's name, the method,
            the schedule's blocks).
    """

    method: str | MergeMethod | None = "none"
    schedule: Sequence[int] = ()
    method_kwargs: Mapping[str, Any] | None = None
    batch_policy: str = "exact"
    backend: str = "math"
    dtype: str | torch.dtype = "float32"
    device: str | torch.device = "cpu"
    batch_size: int = 1
    limit: int | None = None
    progress: bool = True
    crop: int | None = None
    stride: int | None = None
    test_scale: Sequence[int] | None = None
    checkpoint: str | os.PathLike | None = None
    workers: int = 1
    resize_backend: str | None = None
    names: Mapping[str, str] | None = None


@dataclass
class _Setup:
    """What :func:`_prepare` checked and resolved before any image is read."""

    device: torch.device
    dtype: torch.dtype
    dtype_name: str
    merge: MergeMethod
    proto: EvalProtocol
    checkpoint: dict | None
    n: int  # images to evaluate
    started_utc: str
    t_start: float


def _utc_ms() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: no usable CUDA GPU on this machine; use device='cpu'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _prepare(model, split: SegmentationSplit, opts: EvalOptions) -> _Setup:
    """Check every option, the model against the dataset and the split's files; nothing is run yet."""
    from mpm.models.attention import check_backend

    t_start = time.perf_counter()
    started_utc = _utc_ms()
    spec = split.spec
    device = _resolve_device(opts.device)
    torch_dtype, dtype_name = _resolve_dtype(opts.dtype)
    if opts.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {opts.batch_size}")
    if opts.limit is not None and opts.limit < 1:
        raise ConfigError(f"limit must be >= 1, got {opts.limit}")
    if len(split) == 0:
        raise DatasetError(f"{spec.name}/{split.split} under {split.root} holds no images")
    check_backend(opts.backend, device, torch_dtype)
    if isinstance(opts.method, MergeMethod):
        merge = opts.method
    else:
        merge = build_method(opts.method or "none", opts.schedule, depth=model.config.depth,
                             batch_policy=opts.batch_policy, **dict(opts.method_kwargs or {}))
    config = model.config
    merge.validate(config.depth)
    if config.num_classes != spec.num_classes:
        raise ConfigError(f"the model predicts {config.num_classes} classes, dataset {spec.name} has "
                          f"{spec.num_classes} ({', '.join(spec.class_names[:5])}...)")
    proto = eval_protocol(spec, config, crop=opts.crop, stride=opts.stride, test_scale=opts.test_scale)
    ckpt = checkpoint_info(opts.checkpoint) if opts.checkpoint is not None else None
    split.check_sizes(None if opts.limit is None else int(opts.limit))  # every pair it will read, from file headers
    n = len(split) if opts.limit is None else min(int(opts.limit), len(split))
    return _Setup(device, torch_dtype, dtype_name, merge, proto, ckpt, n, started_utc, t_start)


class _SlidingRun:
    """The sliding-window loop: windows of several images share forwards; logits accumulate in raster order."""

    def __init__(self, model, setup: _Setup, backend: str, batch_size: int, ignore_index: int) -> None:
        self.model, self.setup, self.backend, self.batch_size = model, setup, backend, batch_size
        self.k = model.config.num_classes
        self.cm = ConfusionMatrix(self.k, ignore_index, strict=True)
        self.stats = _Stats(model, setup.merge)
        self.image_gflops: list[float] = []
        self.queues: dict[tuple[int, int], list[tuple[_Image, int]]] = {}  # by window size: (image, position)
        self.in_flight: dict[int, _Image] = {}
        dev = setup.device
        self.mean = torch.tensor(setup.proto.mean, dtype=torch.float32, device=dev).view(3, 1, 1)
        self.std = torch.tensor(setup.proto.std, dtype=torch.float32, device=dev).view(3, 1, 1)

    def add(self, i: int, sample, resized: np.ndarray) -> None:
        """Queue the windows of image ``i`` and run every full batch."""
        s = self.setup
        h, w = sample.image.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(resized)).to(s.device).permute(2, 0, 1).float()
        x = ((x - self.mean) / self.std).to(s.dtype)
        wins = slide_windows(x.shape[-2], x.shape[-1], s.proto.crop, s.proto.stride)
        img = _Image(i, sample.name, sample.label, (h, w), x, wins)
        self.in_flight[i] = img
        self.image_gflops.append(0.0)
        for pos, (y1, y2, x1, x2) in enumerate(wins):
            self.queues.setdefault((y2 - y1, x2 - x1), []).append((img, pos))
        self.drain(force=False)

    def drain(self, force: bool) -> None:
        """Run every batch of ``batch_size`` windows of one size (``force``: the rest too)."""
        for key in list(self.queues):
            q = self.queues[key]
            while len(q) >= self.batch_size or (force and q):
                chunk, self.queues[key] = q[:self.batch_size], q[self.batch_size:]
                q = self.queues[key]
                self._run_batch(key, chunk)
            if not q:
                del self.queues[key]

    def _run_batch(self, key: tuple[int, int], jobs: list[tuple[_Image, int]]) -> None:
        crops = []
        for img, pos in jobs:
            y1, y2, x1, x2 = img.windows[pos]
            crops.append(img.x[:, y1:y2, x1:x2])
        xb = torch.stack(crops, 0)  # (B, 3, h, w)
        logits, enc = self.model(xb, method=self.setup.merge, backend=self.backend, return_encoder=True)
        if tuple(logits.shape) != (len(jobs), self.k, key[0], key[1]):
            raise ConfigError(f"model returned logits of shape {tuple(logits.shape)} for windows "
                              f"{tuple(xb.shape)}; expected {(len(jobs), self.k, key[0], key[1])}")
        flops = self.stats.add(xb, enc)
        logits = logits.float()
        touched = []
        for j, (img, pos) in enumerate(jobs):
            img.outputs[pos] = logits[j]
            self.image_gflops[img.index] += flops[j]
            touched.append(img)
        for img in dict.fromkeys(touched):  # unique, in order
            self._absorb(img)

    def _absorb(self, img: _Image) -> None:
        """Add the window logits that are next in raster order to the accumulators."""
        while img.next_window in img.outputs:
            y1, y2, x1, x2 = img.windows[img.next_window]
            out = img.outputs.pop(img.next_window)
            if img.logits is None:
                h, w = img.x.shape[-2:]
                img.logits = torch.zeros((self.k, h, w), dtype=torch.float32, device=self.setup.device)
                img.count = torch.zeros((1, h, w), dtype=torch.float32, device=self.setup.device)
            img.logits[:, y1:y2, x1:x2] += out
            img.count[:, y1:y2, x1:x2] += 1
            img.next_window += 1
        if img.next_window == len(img.windows):
            self._finish(img)

    def _finish(self, img: _Image) -> None:
        logits = resize_logits((img.logits / img.count)[None], img.size)[0]  # (K, H, W)
        self.cm.update(logits.argmax(dim=0), img.label, name=img.name)
        del self.in_flight[img.index]


def _run(run: _SlidingRun, split: SegmentationSplit, opts: EvalOptions) -> None:
    """Read (``workers`` threads ahead), queue and evaluate the first ``setup.n`` images, with a progress bar."""
    setup = run.setup
    bar = None
    if opts.progress and sys.stderr.isatty() and setup.n:
        from tqdm import tqdm

        bar = tqdm(total=setup.n, desc=f"eval {split.spec.name}/{split.split} {setup.merge.name}", unit="img",
                   leave=False)

    def load(i: int):  # read, decode and resize (in reader threads)
        sample = split[i]
        return sample, resize_keep_ratio(sample.image, setup.proto.test_scale, backend=opts.resize_backend)

    samples = _prefetch(load, setup.n, opts.workers)
    try:
        for i, (sample, resized) in enumerate(samples):
            done_before = run.cm.num_images
            run.add(i, sample, resized)
            if bar is not None:
                bar.update(run.cm.num_images - done_before)
        done_before = run.cm.num_images
        run.drain(force=True)
        if bar is not None:
            bar.update(run.cm.num_images - done_before)
    finally:
        if bar is not None:
            bar.close()
        samples.close()
    _sync(setup.device)
    if run.in_flight or run.cm.num_images != setup.n:  # pragma: no cover - internal invariant
        raise RuntimeError(f"evaluation finished with {len(run.in_flight)} image(s) unaccounted for")


def _dataset_section(split: SegmentationSplit) -> dict[str, Any]:
    spec = split.spec
    return {
        "name": spec.name,
        "split": split.split,
        "root": str(Path(split.root).resolve()),
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "ignore_index": spec.ignore_index,
        "reduce_zero_label": spec.reduce_zero_label,
        "synthetic": bool(spec.synthetic or split.manifest.get("synthetic")),
    }


def _model_section(model) -> dict[str, Any]:
    config = model.config
    return {
        "name": f"Seg-{config.size_name}/{config.patch_size}-{config.decoder}",
        "size": config.size_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": config.to_dict(),
    }


def _steps_info(run: _SlidingRun, model) -> list[dict]:
    """Step, block and site of every merge step (from the first window's token counts)."""
    if not run.stats.counts:
        return []
    first = torch.cat(run.stats.counts, 0).mean(0).tolist()
    return [{"step": s.index, "block": s.block, "site": s.site}
            for s in merge_steps(model.config, run.setup.merge, first, run.setup.proto.crop)]


def _build_record(model, split: SegmentationSplit, opts: EvalOptions, run: _SlidingRun, metrics: SegMetrics,
                  wall: float) -> EvalRecord:
    """The ``mpm.eval/1`` record of a finished run (see :func:`evaluate`)."""
    from mpm.environment import describe_environment

    s, total, stats = run.setup, len(split), run.stats
    names = resolve_names(opts.names, dataset=split.spec.name, model=model_name_of(opts.checkpoint),
                          method=s.merge.name, schedule=s.merge.describe()["schedule"])
    record = EvalRecord({
        "schema": SCHEMA,
        "complete": True,
        "partial": s.n < total,
        "limit": opts.limit,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "started_utc": s.started_utc,  # the job's start and end (ms), e.g. for its MLflow run
        "finished_utc": _utc_ms(),
        "names": names.to_dict(),
        "dataset": _dataset_section(split),
        "images": {"evaluated": s.n, "total": total, "limit": opts.limit, "partial": s.n < total},
        "checkpoint": s.checkpoint,
        "model": _model_section(model),
        "method": s.merge.describe(),
        "protocol": s.proto.to_dict(),
        "run": {"batch_size": opts.batch_size, "forwards": stats.forwards, "windows": stats.windows,
                "workers": opts.workers},
        "metrics": {**metrics.to_dict(list(split.spec.class_names)), "unit": "percent"},
        "tokens": stats.tokens(_steps_info(run, model)),
        "gflops": stats.gflops(s.n, opts.batch_size),
        "wall_time_s": wall,
        "images_per_s": s.n / wall if wall > 0 else None,
        "device": str(s.device),
        "dtype": s.dtype_name,
        "backend": opts.backend,
        "environment": describe_environment(s.device, opts.backend, s.dtype_name),
        "confusion_matrix": run.cm.mat.tolist(),
    })
    if run.image_gflops:
        record["gflops"]["per_image_std"] = float(np.std(run.image_gflops))
    return record


@torch.no_grad()
def evaluate(model, split: SegmentationSplit, options: EvalOptions | None = None, **overrides: Any) -> EvalResult:
    """Evaluate ``model`` on ``split`` with a merge method; see the module docstring.

    Args:
        model: a :class:`~mpm.models.segmenter.Segmenter`; it is moved to ``device`` and
            cast to ``dtype`` (in place) and put in eval mode.
        split: a prepared split (:func:`mpm.data.datasets.load_split`); its spec gives
            classes, ignore index, test scale, crop and stride, its reader applies
            ``reduce_zero_label``.
        options: an :class:`EvalOptions`; ``overrides`` replace its fields by name
            (``evaluate(model, split, method="mpm", schedule=(2, 5))``).
    Returns:
        :class:`EvalResult`; ``result.record`` is the :class:`~mpm.records.EvalRecord` (schema
        ``mpm.eval/1``) with the keys ``schema, complete, partial, limit, created_utc, started_utc,
        finished_utc, names, dataset, images, checkpoint, model, method, protocol, run, metrics, tokens,
        gflops, wall_time_s, images_per_s, device, dtype, backend, environment, confusion_matrix``.
    """
    try:
        opts = replace(options or EvalOptions(), **overrides)
    except TypeError as err:
        raise ConfigError(f"evaluate: {err}") from None
    setup = _prepare(model, split, opts)
    model = model.to(device=setup.device, dtype=setup.dtype).eval()
    run = _SlidingRun(model, setup, opts.backend, opts.batch_size, split.spec.ignore_index)
    _run(run, split, opts)
    wall = time.perf_counter() - setup.t_start
    metrics = run.cm.compute()
    record = _build_record(model, split, opts, run, metrics, wall)
    return EvalResult(metrics=metrics, confusion=run.cm.mat.copy(), class_names=list(split.spec.class_names),
                      record=record)
