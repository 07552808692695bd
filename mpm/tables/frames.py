"""Frames of the paper's tables: one row per evaluation record, one per benchmark record, keyed alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from mpm.methods import method_order
from mpm.records import record_class
from mpm.tables.bench import bench_target
from mpm.tables.labels import _ckpt_id, _crop, _method_fields, _model_text, _path_key
from mpm.tables.results import _get, _is_number

def _schedule_name(record: dict) -> str:
    """The config's name of the record's schedule (``2-5``; :attr:`mpm.records.EvalRecord.names`)."""
    return record_class(record["schema"])(record).names.schedule


EVAL_COLUMNS = [
    "file", "dataset", "split", "synthetic", "model", "size", "model_name", "model_key", "model_id", "crop", "depth",
    "method_name", "schedule", "method_key", "method", "schedule_text", "schedule_name", "label",
    "batch_policy",
    "mIoU", "aAcc", "mAcc", "gflops", "dense_gflops", "tokens_after", "token_steps", "image_tokens",
    "partial", "evaluated", "total", "limit", "extent", "extent_key", "eval_device", "eval_dtype", "eval_backend",
    "eval_setup",
]


def eval_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per evaluation record (lists stay Python lists in object columns)."""
    rows = []
    for r in records:
        ds, images, model, method = r["dataset"], r.get("images") or {}, r.get("model") or {}, r["method"]
        config = model.get("config") or {}
        ckpt = _get(r, "checkpoint", "path")
        evaluated, total = images.get("evaluated"), images.get("total")
        limit = images.get("limit", r.get("limit"))
        partial = bool(r.get("partial") or images.get("partial") or r.get("complete") is False
                       or (_is_number(evaluated) and _is_number(total) and evaluated < total))
        tokens = r.get("tokens") or {}
        steps = [(int(s["block"]), str(s.get("site", "before_block")), float(s["mean"]))
                 for s in tokens.get("steps") or [] if isinstance(s, dict) and _is_number(s.get("mean"))
                 and _is_number(s.get("block"))]
        env = r.get("environment") or {}
        device, dtype, backend = env.get("device_name") or r.get("device"), r.get("dtype"), r.get("backend")
        size = model.get("size")
        crop = _crop(_get(r, "protocol", "crop")) or _crop(config.get("image_size"))
        rows.append({
            "file": r.get("_file"),
            "dataset": ds["name"],
            "split": ds.get("split") or "",
            "synthetic": bool(ds.get("synthetic")),
            "model": _model_text(size, config.get("patch_size")),
            "size": size,
            "model_name": model.get("name"),
            "model_key": _path_key(ckpt) if ckpt else f"{model.get('name')}:{size}:{crop}",
            "model_id": _ckpt_id(ckpt) if ckpt else f"seg_{size}".lower(),
            "crop": crop,
            "depth": config.get("depth"),
            **_method_fields(method),
            "schedule_name": _schedule_name(r),
            "batch_policy": method.get("batch_policy", "exact"),
            "mIoU": float(r["metrics"]["mIoU"]),
            "aAcc": _get(r, "metrics", "aAcc"),
            "mAcc": _get(r, "metrics", "mAcc"),
            "gflops": _get(r, "gflops", "per_image"),
            "dense_gflops": _get(r, "gflops", "dense_per_image"),
            "tokens_after": [float(t) for t in tokens.get("after_step_mean") or []],
            "token_steps": steps,
            "image_tokens": _get(tokens, "image_tokens", "mean"),
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
    for r in records:
        spec, env, model, method = r["spec"], r["environment"], r["model"], r["method"]
        config = model.get("config") or {}
        target, source = bench_target(r)
        weights = model.get("weights") or ("checkpoint" if model.get("checkpoint") else "random-init")
        size = model.get("size") or spec.get("model")
        crop = _crop(spec.get("crop")) or _crop(config.get("image_size"))
        ckpt = model.get("checkpoint") or (spec.get("model") if weights == "checkpoint" else None)
        kind = str(env.get("device") or spec.get("device") or "")
        rows.append({
            "file": r.get("_file"),
            "target": target,
            "target_source": source,
            "device": env.get("device_name") or env.get("cpu_model") or kind or None,
            "device_kind": kind.split(":")[0],
            "weights": weights,
            "model": _model_text(size, config.get("patch_size")),
            "size": size,
            "crop": crop,
            "model_key": _path_key(ckpt) if ckpt else f"random-init:{size}:{crop}",
            "model_id": _ckpt_id(ckpt) if ckpt else "random-init",
            **_method_fields(method),
            "schedule_name": _schedule_name(r),
            "batch_policy": method.get("batch_policy", spec.get("batch_policy", "exact")),
            "batch_size": int(spec["batch_size"]),
            "backend": spec["backend"],
            "dtype": spec["dtype"],
            "threads": env.get("torch_threads") if kind.split(":")[0] == "cpu" else None,
            "images_per_s": float(r["timing"]["images_per_s"]),
            "per_image_ms": float(r["timing"]["per_image_ms"]),
            "p10_ms": float(r["timing"]["p10_ms"]),
            "p90_ms": float(r["timing"]["p90_ms"]),
            "gflops": r.get("gflops"),
            "tokens_after": [float(t) for t in _get(r, "tokens", "after_step_mean", default=[]) or []],
        })
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def _method_sort_key(method_name: str, batch_policy: str, schedule: Sequence[int], method_key_: str) -> tuple:
    return (method_order(method_name), method_name, batch_policy != "exact",
            len(schedule), list(schedule), method_key_)
