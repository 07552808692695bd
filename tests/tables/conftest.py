"""Result records for the table tests, in the real layouts.

The evaluation base is a real ``mpm eval`` record (a tiny Seg-T/16 on a tiny synthetic set, made
once per session); the benchmark base is a real H100 record committed under results/reference/.
Factories copy them and change only what a test needs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mpm.records import schedule_name

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference" / "h100" / "points_TSB.json"
H100 = "NVIDIA H100 80GB HBM3"
PI = "Cortex-A76"


@pytest.fixture(scope="session")
def real_eval(tmp_path_factory) -> dict:
    """A real mpm.eval/1 record: ``mpm eval`` of a random Seg-T/16 (64 px, 8 classes) on 4 synthetic images."""
    import torch

    from mpm.cli import main
    from mpm.models import SegmenterConfig, build_segmenter, save_segmenter

    root = tmp_path_factory.mktemp("eval")
    assert main(["synth", "--root", str(root / "data"), "--n-train", "2", "--n-val", "4", "--size", "64",
                 "--prepare"]) == 0
    torch.manual_seed(0)
    save_segmenter(build_segmenter(SegmenterConfig.preset("T", num_classes=8, image_size=(64, 64))), root / "tiny.pth")
    assert main(["eval", "--data-root", str(root / "data"), "--dataset", "synthetic", "--checkpoint",
                 str(root / "tiny.pth"), "--method", "mpm", "--schedule", "2,5", "--out", str(root / "out") + "/",
                 "--no-progress", "--workers", "0"]) == 0
    (path,) = (root / "out").glob("*.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def real_bench() -> dict:
    return json.loads(REFERENCE.read_text())[0]


@pytest.fixture()
def make_eval(real_eval, tmp_path):
    """``make_eval(method, schedule, miou, gflops, ...)`` -> an mpm.eval/1 record of checkpoint ``ckpt``."""
    default_ckpt = tmp_path / "ckpt" / "seg_t_mask.pth"
    default_ckpt.parent.mkdir(exist_ok=True)
    default_ckpt.write_bytes(b"x")

    def make(method: str, schedule: list[int], miou: float, gflops: float, *, tokens: list[float] = (),
             limit: int | None = None, total: int = 60, dataset: str = "ade20k", synthetic: bool = False,
             ckpt: Path | str | None = None, device: str = H100, size: str = "T", crop: tuple[int, int] | None = None,
             **method_args) -> dict:
        r = copy.deepcopy(real_eval)
        r["dataset"].update(name=dataset, synthetic=synthetic)
        evaluated = min(limit, total) if limit else total
        partial = limit is not None and limit < total
        r["partial"], r["limit"] = partial, limit
        r["images"] = {"evaluated": evaluated, "total": total, "limit": limit, "partial": partial}
        r["checkpoint"]["path"] = str(ckpt or default_ckpt)
        r["model"]["size"] = size
        if crop:
            r["protocol"]["crop"] = list(crop)
            r["model"]["config"]["image_size"] = list(crop)
        r["method"] = {"method": method, "schedule": list(schedule), "batch_policy": "exact", **method_args}
        r["names"].update(method=method, schedule=schedule_name(schedule))  # the base's names are MPM(2,5)'s
        r["metrics"]["mIoU"] = miou
        r["gflops"].update(per_image=gflops, dense_per_image=25.28)
        r["tokens"]["after_step_mean"] = list(tokens)
        r["tokens"]["image_tokens"] = {"mean": 1024.0, "max": 1024.0, "min": 1024.0, "std": 0.0}
        site = "before_block" if method in ("none", "mpm") else "after_attention"
        r["tokens"]["steps"] = [{"step": i, "block": b, "site": site, "mean": t}
                                for i, (b, t) in enumerate(zip(schedule, tokens))]
        r["environment"]["device_name"] = device
        return r

    make.ckpt = default_ckpt
    return make


@pytest.fixture()
def make_bench(real_bench, make_eval):
    """``make_bench(method, schedule, backend, ips, ...)`` -> an mpm.bench/1 record."""

    def make(method: str, schedule: list[int], backend: str, ips: float, *, batch: int = 32, target="h100",
             target_where: str = "top", target_type: str = "slurm", device: str = H100, dtype: str = "float16", ckpt: Path | str | None = None,
             weights: str = "checkpoint", kind: str = "cuda", threads: int = 16, spread: float = 0.01,
             **method_args) -> dict:
        r = copy.deepcopy(real_bench)
        ckpt = str(ckpt or make_eval.ckpt)
        r["spec"].update(method=method, schedule=list(schedule), batch_size=batch, backend=backend, dtype=dtype,
                         model=ckpt if weights == "checkpoint" else "T", device=kind, method_kwargs=method_args)
        r["method"] = {"method": method, "schedule": list(schedule), "batch_policy": "exact", **method_args}
        r["model"]["weights"] = weights
        if weights == "checkpoint":
            r["model"]["checkpoint"] = ckpt
        r["environment"].update(device_name=device, dtype=dtype, device=kind, attention_backend=backend,
                                torch_threads=threads)
        # a timing distribution around the new median: p10 / p90 at -/+ ``spread`` of it
        median = 1000.0 / ips * batch
        r["timing"].update(median_ms=median, mean_ms=median, p10_ms=median * (1 - spread), p90_ms=median * (1 + spread),
                           min_ms=median * (1 - 2 * spread), max_ms=median * (1 + 2 * spread),
                           images_per_s=ips, per_image_ms=1000.0 / ips, batch_size=batch)
        if target_where == "top":
            r["target"] = {"name": target, "type": target_type, "device": kind}
        elif target_where == "top-string":  # no runner writes it: the schema refuses it
            r["target"] = target
        return r

    return make


@pytest.fixture()
def write(tmp_path):
    """``write(records, folder="res")`` -> the JSON files written, one record each."""
    counter = iter(range(10_000))

    def put(records: list[dict], folder: str = "res") -> list[Path]:
        out = []
        for rec in records:
            path = tmp_path / folder / f"{next(counter):03d}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec))
            out.append(path)
        return out

    return put
