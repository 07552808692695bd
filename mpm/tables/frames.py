"""Frames of the paper's tables: one row per evaluation record, one per benchmark record, keyed alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from mpm.methods import method_order
from mpm.records import BenchRecord, EvalRecord, Record
from mpm.tables.bench import bench_target
from mpm.tables.labels import _ckpt_id, _method_fields, _model_text, _path_key

EVAL_COLUMNS = [
    "file", "dataset", "split", "synthetic", "model", "size", "model_name", "model_key", "model_id", "crop", "depth",
    "method_name", "schedule", "method_key", "method", "schedule_text", "schedule_name", "label",
    "batch_policy",
    "mIoU", "aAcc", "mAcc", "gflops", "dense_gflops", "tokens_after", "token_steps", "image_tokens",
    "partial", "evaluated", "total", "limit", "extent", "extent_key", "eval_device", "eval_dtype", "eval_backend",
    "eval_setup",
]


def _typed(cls: type[Record], records: Iterable[dict]) -> list:
    """The records as ``cls`` (those of :func:`~mpm.tables.results.load_results` already are, checked)."""
    return [r if isinstance(r, cls) else cls(r) for r in records]


def eval_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per evaluation record (lists stay Python lists in object columns)."""
    rows = []
    for r in _typed(EvalRecord, records):
        size, config, ckpt, crop = r.model_size, r.model_config, r.checkpoint_path, r.crop
        partial, evaluated, total, limit = r.partial, r.evaluated, r.total, r.limit
        device, dtype, backend = r.device_name, r.dtype, r.backend
        rows.append({
            "file": r.source,
            "dataset": r.dataset_name,
            "split": r.split,
            "synthetic": r.synthetic,
            "model": _model_text(size, config["patch_size"]),
            "size": size,
            "model_name": r.model_name,
            "model_key": _path_key(ckpt) if ckpt else f"{r.model_name}:{size}:{crop}",
            "model_id": _ckpt_id(ckpt) if ckpt else f"seg_{size}".lower(),
            "crop": crop,
            "depth": config["depth"],
            **_method_fields(r),
            "mIoU": r.miou,
            "aAcc": r.aacc,
            "mAcc": r.macc,
            "gflops": r.gflops_per_image,
            "dense_gflops": r.dense_gflops_per_image,
            "tokens_after": r.tokens_after,
            "token_steps": r.token_steps,
            "image_tokens": r.image_tokens,
            "partial": partial,
            "evaluated": evaluated,
            "total": total,
            "limit": limit,
            "extent": f"partial ({evaluated}/{total} images)" if partial else "full",
            "extent_key": f"partial:{limit if limit is not None else evaluated}:{evaluated}" if partial else "full",
            "eval_device": device,
            "eval_dtype": dtype,
            "eval_backend": backend,
            "eval_setup": ", ".join(str(v) for v in (device, dtype, backend) if v),
        })
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


TIMING_COLUMNS = [
    "file", "target", "target_source", "device", "device_kind", "weights", "model", "size", "crop", "model_key",
    "model_id", "method_name", "schedule", "method_key", "method", "schedule_text", "schedule_name", "label",
    "batch_policy",
    "batch_size", "backend", "dtype", "threads", "images_per_s", "per_image_ms", "p10_ms", "p90_ms", "gflops", "tokens_after",
]


def timing_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per benchmark record, keyed like :func:`eval_frame`, with its target."""
    rows = []
    for r in _typed(BenchRecord, records):
        target, source = bench_target(r)
        size, crop, ckpt, kind = r.model_size, r.crop, r.checkpoint_path, r.device_kind
        rows.append({
            "file": r.source,
            "target": target,
            "target_source": source,
            "device": r.device_name,
            "device_kind": kind,
            "weights": r.weights,
            "model": _model_text(size, r.model_config["patch_size"]),
            "size": size,
            "crop": crop,
            "model_key": _path_key(ckpt) if ckpt else f"random-init:{size}:{crop}",
            "model_id": _ckpt_id(ckpt) if ckpt else "random-init",
            **_method_fields(r),
            "batch_size": r.batch_size,
            "backend": r.backend,
            "dtype": r.dtype,
            "threads": r.threads if kind == "cpu" else None,  # a GPU's timing does not depend on them
            "images_per_s": r.images_per_s,
            "per_image_ms": r.per_image_ms,
            "p10_ms": r.p10_ms,
            "p90_ms": r.p90_ms,
            "gflops": r.gflops,
            "tokens_after": r.tokens_after,
        })
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def _method_sort_key(method_name: str, batch_policy: str, schedule: Sequence[int], method_key_: str) -> tuple:
    return (method_order(method_name), method_name, batch_policy != "exact",
            len(schedule), list(schedule), method_key_)
