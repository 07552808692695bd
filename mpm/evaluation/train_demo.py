"""Train the offline demo model: a real Seg-T/16 on the synthetic demo set, on a CPU.

No pretrained weights, no internet: a Segmenter with the ViT-T/16 architecture
(``SegmenterConfig.preset("T")``, mask-transformer decoder) is trained from scratch
on the train split of the synthetic set (``mpm synth --prepare``) so that the
evaluation pipeline has a model whose dense mIoU means something and whose mIoU
drop under MPM schedules can be measured end to end without any download.

Deterministic by seed: the initial weights (``torch.manual_seed``), the data order
and the augmentation (one ``numpy`` generator) and the kernels
(``torch.use_deterministic_algorithms``) depend on ``seed`` alone, and training stops
after a fixed number of *steps*, never by the clock: an optional ``time_limit`` aborts
the run with :class:`TrainTimeLimit` and writes nothing. The same seed, thread count
and machine give identical weights; other machines and thread counts round floats
differently, so the recipe trains to a plateau (learning rate decayed to zero) where
such differences no longer move the mIoU (``benchmarks/demo_spread.py`` measures the
spread over seeds and CPUs).

Training recipe (defaults): images resized as at test time (keep-ratio to the
dataset's test scale), random ``train_crop`` (128) crops + horizontal flips, AdamW
(peak lr 6e-4, weight decay 0.01, betas 0.9/0.99, fused), 30 steps of linear warm-up
then cosine decay to zero (the end of training is a plateau), gradient norm clipped
to 1, cross-entropy with ``ignore_index`` 255, batch 8, 300 steps. The peak learning
rate stays well below where runs go astray (at 2e-3 some seeds ended 5-13 mIoU points
low; at 1e-3, 300 steps, one CPU ended 5 points below another), so that seeds and CPUs
land on the same figures. With ``train_crop`` smaller than the
dataset's crop, the model is trained at that size and its position embedding is
resampled (bicubic, as at test time) to the dataset's crop before saving, so the
saved model's ``image_size`` is the evaluation crop.

Output: the checkpoint (:func:`mpm.models.checkpoints.save_segmenter`) and a JSON
sidecar beside it (``<checkpoint>.json``) with the training configuration, steps,
a loss-curve summary, wall time and the statement that the data is synthetic.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from mpm.errors import ConfigError, MPMError
from mpm.records import TRAIN_SCHEMA, TrainRecord

__all__ = ["TrainDemoConfig", "TrainTimeLimit", "sidecar_path", "train_demo"]

SIDECAR_SCHEMA = TRAIN_SCHEMA


class TrainTimeLimit(MPMError, RuntimeError):
    """Training ran past its explicit ``time_limit``: aborted, nothing written."""


@dataclass(frozen=True)
class TrainDemoConfig:
    """Hyper-parameters of :func:`train_demo` (the defaults are the demo's recipe)."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 8
    train_crop: int = 128
    lr: float = 6e-4
    min_lr: float = 0.0
    weight_decay: float = 0.01
    beta2: float = 0.99
    warmup_steps: int = 30
    grad_clip: float = 1.0
    size: str = "T"
    backend: str = "math"
    threads: int | None = 2
    dataset: str = "synthetic"
    split: str = "train"
    limit_images: int | None = None
    log_every: int = 25

    def to_dict(self) -> dict:
        return asdict(self)


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>.json``: the training record beside a demo checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".json")


def _load_train_set(data_root, cfg: TrainDemoConfig):
    """All training images resized as at test time, as uint8 arrays, plus the spec."""
    from mpm.data.datasets import load_split
    from mpm.evaluation.sliding import resize_keep_ratio
    from PIL import Image

    split = load_split(data_root, cfg.dataset, cfg.split)
    if cfg.limit_images is not None:
        split = split[: cfg.limit_images]
    if len(split) == 0:
        raise ConfigError(f"{cfg.dataset}/{cfg.split} under {data_root} holds no images")
    spec = split.spec
    images, labels = [], []
    for sample in split:
        img = resize_keep_ratio(sample.image, spec.test_scale)
        h, w = img.shape[:2]
        lab = sample.label
        if lab.shape != (h, w):
            lab = np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
        if min(h, w) < cfg.train_crop:
            raise ConfigError(f"image {sample.name} is {h}x{w} after resizing, smaller than the "
                              f"training crop {cfg.train_crop}")
        images.append(np.ascontiguousarray(img))
        labels.append(np.ascontiguousarray(lab))
    return split, images, labels


def _batch(rng: np.random.Generator, order: list[int], images, labels, batch_size: int, crop: int):
    """Next batch: indices from the running permutation, random crop + horizontal flip."""
    xs, ys = [], []
    for _ in range(batch_size):
        if not order:
            order.extend(rng.permutation(len(images)).tolist())
        i = order.pop(0)
        img, lab = images[i], labels[i]
        h, w = lab.shape
        y0 = int(rng.integers(0, h - crop + 1))
        x0 = int(rng.integers(0, w - crop + 1))
        img, lab = img[y0:y0 + crop, x0:x0 + crop], lab[y0:y0 + crop, x0:x0 + crop]
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        xs.append(np.ascontiguousarray(img))
        ys.append(np.ascontiguousarray(lab))
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack(ys)).long()
    return x, y


def _check_writable(path: Path) -> None:
    """Fail now, not after training, when ``path``'s folder cannot take a new file."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.check."):
            pass
    except OSError as err:
        raise ConfigError(f"train_demo: cannot write the checkpoint {path}: {err.strerror or err}") from None
    if path.is_dir():
        raise ConfigError(f"train_demo: the checkpoint path {path} is a folder")


def _lr_at(step: int, cfg: TrainDemoConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def _resize_to(model, image_size: tuple[int, int]):
    """The same weights with ``config.image_size`` = ``image_size``: pos_embed resampled as at test time."""
    from timm.layers import resample_abs_pos_embed

    from mpm.models.segmenter import Segmenter

    cfg = model.config
    if tuple(cfg.image_size) == tuple(image_size):
        return model
    p = cfg.patch_size
    new = Segmenter(replace(cfg, image_size=tuple(image_size)))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    old_grid = [s // p for s in cfg.image_size]
    new_grid = [s // p for s in image_size]
    state["encoder.pos_embed"] = resample_abs_pos_embed(
        state["encoder.pos_embed"], new_size=new_grid, old_size=old_grid,
        num_prefix_tokens=model.encoder.num_prefix_tokens, interpolation=cfg.pos_embed_interpolation,
        antialias=False)
    new.load_state_dict(state)
    return new.eval()


def _loss_summary(losses: list[float], every: int) -> dict:
    a = np.asarray(losses, dtype=np.float64)
    if a.size == 0:
        return {}
    tail = max(1, a.size // 10)
    curve = [{"step": int(i), "loss": float(a[max(0, i - every + 1): i + 1].mean())}
             for i in range(every - 1, a.size, every)]
    if not curve or curve[-1]["step"] != a.size - 1:
        curve.append({"step": int(a.size - 1), "loss": float(a[-min(every, a.size):].mean())})
    return {
        "first": float(a[0]),
        "last": float(a[-1]),
        "min": float(a.min()),
        "mean_first_10pct": float(a[:tail].mean()),
        "mean_last_10pct": float(a[-tail:].mean()),
        "curve_every": every,
        "curve": curve,
    }


def _resolve_config(config: TrainDemoConfig | None, seed: int, steps: int | None, threads: int | None,
                    time_limit: float | None, overrides: dict[str, Any]) -> TrainDemoConfig:
    """The run's configuration, checked before anything is loaded."""
    fields: dict[str, Any] = dict(overrides)
    fields.update(seed=seed, threads=threads)
    if steps is not None:
        fields["steps"] = steps
    try:
        cfg = replace(config or TrainDemoConfig(), **fields)
    except TypeError as err:
        raise ConfigError(f"train_demo: {err}") from None
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.train_crop < 16:
        raise ConfigError(f"train_demo: invalid steps={cfg.steps}, batch_size={cfg.batch_size}, "
                          f"train_crop={cfg.train_crop}")
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"train_demo: time_limit={time_limit} must be a positive number of seconds")
    return cfg


def _check_train_set(spec, cfg: TrainDemoConfig) -> None:
    if cfg.train_crop > spec.crop_size:
        raise ConfigError(f"train_crop {cfg.train_crop} > the dataset's crop {spec.crop_size}")
    if spec.crop_size % 16 or cfg.train_crop % 16:
        raise ConfigError("train_crop and the dataset crop must be multiples of the patch size 16")


def _build(cfg: TrainDemoConfig, num_classes: int):
    """The seeded model (at the training crop) and its AdamW (no weight decay on norms, biases, embeddings)."""
    from mpm.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(cfg.seed)
    model_cfg = SegmenterConfig.preset(cfg.size, num_classes=num_classes, image_size=(cfg.train_crop, cfg.train_crop))
    model = build_segmenter(model_cfg).train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name.endswith(("pos_embed", "cls_token", "cls_emb")) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, cfg.beta2),
                            fused=True)
    return model, opt


@dataclass
class _Loop:
    """The optimisation loop: a fixed number of steps; a time limit aborts, it never shortens training."""

    cfg: TrainDemoConfig
    time_limit: float | None
    out_checkpoint: Path
    log: Callable[[str], None]
    progress: bool

    def run(self, model, opt, images, labels, ignore_index: int) -> tuple[list[float], float]:
        """Train; returns the per-step losses and the training wall time (s)."""
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, desc="train-demo", unit="step", leave=False)
        losses: list[float] = []
        order: list[int] = []
        t_train = time.perf_counter()
        try:
            for step in range(cfg.steps):
                x, y = _batch(rng, order, images, labels, cfg.batch_size, cfg.train_crop)
                losses.append(self._step(model, opt, step, x, y, ignore_index))
                self._after_step(step, losses, t_train, bar)
        finally:
            if bar is not None:
                bar.close()
        return losses, time.perf_counter() - t_train

    def _step(self, model, opt, step: int, x: torch.Tensor, y: torch.Tensor, ignore_index: int) -> float:
        cfg = self.cfg
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        logits = model(model.normalize(x), backend=cfg.backend)
        loss = F.cross_entropy(logits, y, ignore_index=ignore_index)
        if not torch.isfinite(loss):
            raise RuntimeError(f"train_demo: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return float(loss.detach())

    def _after_step(self, step: int, losses: list[float], t_train: float, bar) -> None:
        cfg = self.cfg
        if self.time_limit is not None and time.perf_counter() - t_train > self.time_limit:
            raise TrainTimeLimit(
                f"training passed the time limit of {self.time_limit:g} s after {step + 1} of "
                f"{cfg.steps} steps; aborted, {self.out_checkpoint} not written (training stops by steps "
                f"only: raise or drop the time limit)")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            window = losses[-cfg.log_every:]
            self.log(f"step {step + 1}/{cfg.steps}  loss {sum(window) / len(window):.4f}  "
                     f"lr {_lr_at(step, cfg):.2e}  {time.perf_counter() - t_train:.0f} s")


_NOTE = ("DEMO MODEL trained from scratch on SYNTHETIC data (mpm synth: textured Voronoi "
         "regions in ADE20K's layout). Its weights are trained on that synthetic set only "
         "and mean nothing on real images; it exists to exercise the evaluation pipeline "
         "offline.")


def _data_section(data_root, split, n_images: int) -> dict[str, Any]:
    spec = split.spec
    return {
        "root": str(Path(data_root).resolve()),
        "dataset": spec.name,
        "split": split.split,
        "images": n_images,
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "generator": split.manifest.get("generator"),
        "preprocessing": f"keep-ratio resize to test scale {list(spec.test_scale)} (as at test time)",
    }


def _model_section(model, cfg: TrainDemoConfig, crop_size: int) -> dict[str, Any]:
    return {
        "architecture": f"Seg-{model.config.size_name}/{model.config.patch_size} mask transformer",
        "config": model.config.to_dict(),
        "trained_image_size": [cfg.train_crop, cfg.train_crop],
        "pos_embed": ("resampled from the training grid to the evaluation crop (bicubic, no antialias)"
                      if cfg.train_crop != crop_size else "as trained"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "init": "random (timm defaults), torch.manual_seed(seed)",
    }


def _training_section(cfg: TrainDemoConfig, ignore_index: int) -> dict[str, Any]:
    return {
        **cfg.to_dict(),
        "optimizer": "AdamW",
        "schedule": "linear warm-up, cosine decay to min_lr",
        "betas": [0.9, cfg.beta2],
        "loss": f"cross-entropy, ignore_index={ignore_index}",
        "augmentation": f"random {cfg.train_crop}x{cfg.train_crop} crop + horizontal flip (p=0.5)",
        "deterministic_algorithms": True,
    }


def _train_record(cfg: TrainDemoConfig, model, out_checkpoint: Path, data_root, split, n_images: int,
                  losses: list[float], times: dict[str, float]) -> TrainRecord:
    """The ``mpm.train-demo/1`` record of a saved demo checkpoint."""
    from mpm.environment import package_version
    from mpm.evaluation.evaluate import checkpoint_info

    info = checkpoint_info(out_checkpoint)
    spec = split.spec
    return TrainRecord({
        "schema": SIDECAR_SCHEMA,
        "kind": "mpm-demo-model",
        "synthetic": True,
        "note": _NOTE,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checkpoint": {"path": str(out_checkpoint.resolve()), "sha256": info["sha256"], "bytes": info["bytes"]},
        "data": _data_section(data_root, split, n_images),
        "model": _model_section(model, cfg, spec.crop_size),
        "training": _training_section(cfg, spec.ignore_index),
        "steps_done": len(losses),
        "stopped_by": "steps",  # always: a time limit aborts, it never ends training early
        "deterministic": True,
        "loss": _loss_summary(losses, max(1, cfg.log_every)),
        "wall_time_s": {**times, "per_step": times["train"] / max(len(losses), 1)},
        "environment": {"torch": torch.__version__, "timm": package_version("timm"),
                        "python": platform.python_version(), "threads": torch.get_num_threads(),
                        "platform": platform.platform()},
    })


def train_demo(
    data_root: str | os.PathLike,
    out_checkpoint: str | os.PathLike,
    *,
    seed: int = 0,
    steps: int | None = None,
    time_limit: float | None = None,
    threads: int | None = 2,
    config: TrainDemoConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict:
    """Train the demo Seg-T/16 on the synthetic set and save it; returns the sidecar (a :class:`TrainRecord`).

    Args:
        data_root: root of the prepared synthetic set (``mpm synth --root DIR --prepare``).
        out_checkpoint: the checkpoint to write (``save_segmenter`` format); the sidecar
            goes to ``<out_checkpoint>.json``. Both are written atomically at the end.
        seed: seeds weights, data order and augmentation.
        steps: optimiser steps (default :attr:`TrainDemoConfig.steps`); training always
            runs all of them.
        time_limit: seconds of training wall time after which the run is *aborted* with
            :class:`TrainTimeLimit` and nothing is written (None: no limit). It never
            shortens training: a result does not depend on the machine's speed.
        threads: ``torch.set_num_threads`` during training (restored afterwards); None
            leaves it.
        config: a full :class:`TrainDemoConfig`; ``overrides`` replace single fields.
        progress: a tqdm bar on a terminal.
        log: where progress lines go (default: stderr when not a terminal, else nothing).
    """
    cfg = _resolve_config(config, seed, steps, threads, time_limit, overrides)
    out_checkpoint = Path(out_checkpoint)
    _check_writable(out_checkpoint)
    tty = sys.stderr.isatty()
    if log is None:
        log = (lambda msg: None) if (progress and tty) else (lambda msg: print(msg, file=sys.stderr, flush=True))
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.use_deterministic_algorithms(True, warn_only=True)
        return _train_and_save(cfg, data_root, out_checkpoint, _Loop(cfg, time_limit, out_checkpoint, log,
                                                                     progress and tty), log)
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_det_warn)


def _train_and_save(cfg: TrainDemoConfig, data_root, out_checkpoint: Path, loop: _Loop,
                    log: Callable[[str], None]) -> TrainRecord:
    """Load the data, train, save the checkpoint (resized to the dataset's crop), then its record."""
    from mpm.models.checkpoints import save_segmenter

    t_start = time.perf_counter()
    split, images, labels = _load_train_set(data_root, cfg)
    spec = split.spec
    data_s = time.perf_counter() - t_start
    _check_train_set(spec, cfg)
    model, opt = _build(cfg, spec.num_classes)
    losses, train_s = loop.run(model, opt, images, labels, spec.ignore_index)
    model.eval()
    model = _resize_to(model, (spec.crop_size, spec.crop_size))
    save_segmenter(model, out_checkpoint)
    times = {"total": time.perf_counter() - t_start, "train": train_s, "data": data_s}
    record = _train_record(cfg, model, out_checkpoint, data_root, split, len(images), losses, times)
    record.write(sidecar_path(out_checkpoint))
    log(f"saved {out_checkpoint} ({len(losses)} steps, {train_s:.0f} s, final loss "
        f"{record['loss'].get('mean_last_10pct', float('nan')):.4f})")
    return record
