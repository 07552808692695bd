"""Result JSONs shaped like the ones ``mpm eval`` (mpm.eval/1) and ``mpm bench`` (mpm.bench/1) write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

ENV = {
    "hostname": "node-1", "platform": "Linux-6.1-x86_64", "machine": "x86_64", "cpu_model": "Test CPU",
    "cpu_count": 2, "torch_threads": 2, "python": "3.11.7", "torch": "2.14.1", "timm": "1.0.0",
    "mpm": "0.1.0", "flash_attn": None, "onnxruntime": None, "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "device": "cpu", "attention_backend": "math", "dtype": "float32", "device_name": "Test CPU",
}


def eval_record(folder: Path, *, miou: float = 38.1, limit: int | None = 8, method: str = "mpm",
                schedule=(2, 5), batch_size: int = 1, git_commit: str | None = None, csv_name: str = "per_class.csv",
                dataset: str = "ade20k") -> dict:
    """A complete mpm.eval/1 record; writes its per-class CSV into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / csv_name
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_index", "class_name", "IoU", "Acc", "gt_pixels", "pred_pixels"])
        w.writerow([0, "wall", miou, 80.0, 100, 90])
        w.writerow([1, "building", miou / 2, 60.0, 50, 40])
    env = dict(ENV)
    if git_commit:
        env["git_commit"] = git_commit
    steps = [{"step": 0, "block": schedule[0], "site": "before_block", "mean": 700.0, "std": 12.0,
              "min": 650.0, "max": 760.0, "kept_fraction": 0.68},
             {"step": 1, "block": schedule[1], "site": "before_block", "mean": 520.5, "std": 20.0,
              "min": 480.0, "max": 570.0, "kept_fraction": 0.51}] if method != "none" else []
    return {
        "schema": "mpm.eval/1", "complete": True, "partial": limit is not None, "limit": limit,
        "created_utc": "2026-01-01T00:00:00Z",
        "dataset": {"name": dataset, "split": "val", "root": "/data/ade20k", "num_classes": 2,
                    "class_names": ["wall", "building"], "ignore_index": 255, "reduce_zero_label": True,
                    "synthetic": False},
        "images": {"evaluated": limit or 2000, "total": 2000, "limit": limit, "partial": limit is not None},
        "checkpoint": {"path": "/ckpt/seg_tiny_mask/checkpoint.pth", "sha256": "ab" * 32, "bytes": 1234},
        "model": {"name": "Seg-T/16-mask", "size": "T", "parameters": 6_000_000,
                  "config": {"depth": 12, "embed_dim": 192, "num_heads": 3, "patch_size": 16,
                             "image_size": [512, 512], "decoder": "mask", "num_classes": 150}},
        "method": {"method": method, "schedule": list(schedule) if method != "none" else [],
                   "batch_policy": "exact"},
        "protocol": {"test_scale": [2048, 512], "crop": [512, 512], "stride": [480, 480], "source": "dataset",
                     "mean": [127.5] * 3, "std": [127.5] * 3, "mode": "slide"},
        "run": {"batch_size": batch_size, "forwards": 10, "windows": 20, "workers": 1},
        "metrics": {"mIoU": miou, "aAcc": 75.0, "mAcc": 50.0, "num_classes": 2, "IoU": [miou, miou / 2],
                    "Acc": [80.0, 60.0], "unit": "percent"},
        "tokens": {"windows": 20, "image_tokens": {"mean": 1024.0, "std": 0.0, "min": 1024.0, "max": 1024.0},
                   "prefix_tokens": 1, "steps": steps, "after_step_mean": [s["mean"] for s in steps]},
        "gflops": {"per_window": 7.5, "dense_per_window": 10.0, "ratio_to_dense": 0.75, "per_image": 15.0,
                   "dense_per_image": 20.0, "padded_per_window": 7.9,
                   "breakdown_per_window": {"encoder": 6.0, "merge": 0.1, "decoder": 1.4}},
        "wall_time_s": 12.5, "images_per_s": 0.64, "device": "cpu", "dtype": "float32", "backend": "math",
        "environment": env,
        "confusion_matrix": [[90, 10], [5, 45]],
        "per_class_csv": str(csv_path.resolve()),
    }


def bench_record(*, median_ms: float = 40.0, batch_size: int = 32, target=None, method: str = "mpm") -> dict:
    """A complete mpm.bench/1 record (as mpm.benchmarking.bench.run_point returns; valid by bench.schema.json)."""
    rec = {
        "schema": "mpm.bench/1",
        "spec": {"images": "data/bench", "model": "T", "num_classes": 150, "crop": None, "method": method,
                 "schedule": [2, 5], "method_kwargs": {}, "batch_policy": "exact", "batch_size": batch_size,
                 "backend": "sdpa", "dtype": "float16", "device": "cuda", "threads": None, "warmup": 10,
                 "iters": 50, "breakdown_iters": 10, "pool_batches": 4, "seed": 0},
        "method": {"method": method, "schedule": [2, 5], "batch_policy": "exact"},
        "model": {"weights": "random-init", "seed": 0, "size": "T",
                  "config": {"depth": 12, "embed_dim": 192, "num_heads": 3, "num_classes": 150, "patch_size": 16,
                             "image_size": [512, 512]}},
        "environment": {**ENV, "device": "cuda:0", "device_name": "NVIDIA H100", "cuda": "12.8",
                        "soc_temp_before_c": 41.0, "soc_temp_after_c": 55.5, "throttled": None},
        "timing": {"iterations": 50, "median_ms": median_ms, "mean_ms": median_ms + 1, "p10_ms": median_ms - 2,
                   "p90_ms": median_ms + 3, "min_ms": median_ms - 3, "max_ms": median_ms + 9,
                   "batch_size": batch_size, "images_per_s": 1000.0 * batch_size / median_ms,
                   "per_image_ms": median_ms / batch_size},
        "breakdown_ms": {"embed_and_encoder_ms": 30.0, "merge_ms": 2.0, "unmerge_ms": 0.5, "decoder_ms": 7.5},
        "tokens": {"full": 1024, "after_step_mean": [700.0, 520.0], "after_step_std": [10.0, 15.0],
                   "after_step_min": [650.0, 480.0], "after_step_max": [760.0, 570.0]},
        "gflops": 3.21,
        "image_source": {"source": "data/bench", "images_available": 8, "images_used": 128, "repeated": True,
                         "crop": [512, 512], "file_list_sha256_16": "cd" * 8},
        "wall_s": 5.0,
    }
    if target is not None:
        rec["target"] = target
    return rec


def write(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True))
    return path
