"""Tables and figures from result records (the real record layouts)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mpm.cli import main
from mpm.errors import ConfigError
from mpm.tables.build import build_all
from mpm.tables.figures import pareto_front, tokens_per_block

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference" / "h100" / "points_TSB.json"


def eval_record(method: str, schedule: list[int], miou: float, gflops: float, *, ckpt: str,
                tokens: list[float] = (), partial: bool = False, evaluated: int = 60) -> dict:
    return {
        "schema": "mpm.eval/1", "complete": True, "partial": partial, "limit": evaluated if partial else None,
        "dataset": {"name": "ade20k", "split": "val", "synthetic": False, "num_classes": 150},
        "images": {"evaluated": evaluated, "total": 60, "limit": evaluated if partial else None, "partial": partial},
        "checkpoint": {"path": ckpt, "sha256": "0" * 64, "bytes": 1},
        "model": {"name": "Seg-T/16-mask_transformer", "size": "T", "config": {"depth": 12}},
        "method": {"method": method, "schedule": schedule, "batch_policy": "exact"},
        "metrics": {"mIoU": miou, "aAcc": 80.0, "mAcc": 50.0},
        "tokens": {"after_step_mean": list(tokens), "image_tokens": {"max": 1024}},
        "gflops": {"per_image": gflops},
        "device": "cuda:0", "environment": {"device_name": "NVIDIA H100 80GB HBM3"},
    }


def bench_record(base: dict, method: str, schedule: list[int], *, ckpt: str, backend: str, ips: float,
                 batch: int = 32, target: str = "h100", device: str = "NVIDIA H100 80GB HBM3") -> dict:
    r = copy.deepcopy(base)
    r["spec"].update(method=method, schedule=schedule, batch_size=batch, backend=backend, model=ckpt)
    r["method"] = {"method": method, "schedule": schedule, "batch_policy": "exact"}
    r["model"].update(weights="checkpoint", checkpoint=ckpt)
    r["environment"]["device_name"] = device
    r["timing"].update(images_per_s=ips, per_image_ms=1000.0 / ips, batch_size=batch)
    r["target"] = {"name": target, "type": "slurm"}
    return r


@pytest.fixture()
def results(tmp_path):
    ckpt = tmp_path / "seg_t.pth"
    ckpt.write_bytes(b"x")
    base = json.loads(REFERENCE.read_text())[0]
    files = []
    evals = [eval_record("none", [], 38.0, 25.3, ckpt=str(ckpt)),
             eval_record("mpm", [2, 5], 37.5, 19.0, ckpt=str(ckpt), tokens=[800, 680]),
             eval_record("mpm", [5], 36.0, 22.0, ckpt=str(ckpt), tokens=[790], partial=True, evaluated=10)]
    benches = [bench_record(base, "none", [], ckpt=str(ckpt), backend="math", ips=100.0),
               bench_record(base, "none", [], ckpt=str(ckpt), backend="fa2", ips=300.0),
               bench_record(base, "mpm", [2, 5], ckpt=str(ckpt), backend="math", ips=125.0),
               bench_record(base, "mpm", [2, 5], ckpt=str(ckpt), backend="fa2", ips=360.0),
               bench_record(base, "none", [], ckpt=str(ckpt), backend="math", ips=1.0, batch=1, target="rpi5",
                            device="Raspberry Pi 5"),
               bench_record(base, "mpm", [2, 5], ckpt=str(ckpt), backend="math", ips=1.6, batch=1, target="rpi5",
                            device="Raspberry Pi 5")]
    for i, rec in enumerate(evals + benches):
        path = tmp_path / "res" / f"{i}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(rec))
        files.append(path)
    return tmp_path, files


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_main_table_deltas_speedups_and_partial_rows(results) -> None:
    tmp, files = results
    written = build_all(files, tmp / "tables", tmp / "figures", gpu_target="h100", cpu_target="rpi5", batch_size=32)
    assert {t["name"] for t in written["tables"]} == {"main_ade20k_seg_t", "cross_platform", "ablation_schedules"}
    rows = {r["method"]: r for r in _csv(tmp / "tables" / "main_ade20k_seg_t.csv")}
    assert float(rows["MPM(2,5)"]["ΔmIoU"]) == pytest.approx(-0.5)
    assert float(rows["MPM(2,5)"]["speedup FA2 off"]) == pytest.approx(1.25)
    assert float(rows["MPM(2,5)"]["speedup FA2 on"]) == pytest.approx(1.2)
    # a partial run is marked and never compared with the full dense run
    assert rows["MPM(5)"]["extent"] == "partial (10/60 images)"
    assert rows["MPM(5)"]["ΔmIoU"] == ""
    md = (tmp / "tables" / "main_ade20k_seg_t.md").read_text()
    assert "h100: NVIDIA H100 80GB HBM3" in md and "\\begin{table}" in (tmp / "tables" / "main_ade20k_seg_t.tex").read_text()
    cross = {r["method"]: r for r in _csv(tmp / "tables" / "cross_platform.csv")}
    assert float(cross["MPM(2,5)"]["rpi5 speedup b1"]) == pytest.approx(1.6)
    assert float(cross["MPM(2,5)"]["rpi5 ms/img b1"]) == pytest.approx(625.0)
    for fig in written["figures"]:
        for f in fig["files"]:
            assert Path(f).stat().st_size > 1000


def test_different_hardware_in_one_column_is_refused(results) -> None:
    tmp, files = results
    rec = json.loads(files[4].read_text())  # h100 dense math
    rec["environment"]["device_name"] = "NVIDIA A100"
    rec["method"]["schedule"] = rec["spec"]["schedule"] = [5]
    rec["method"]["method"] = rec["spec"]["method"] = "mpm"
    other = tmp / "res" / "other.json"
    other.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="several devices"):
        build_all(files + [other], tmp / "t2", tmp / "f2", gpu_target="h100", batch_size=32)


def test_cli_and_errors(results, capsys) -> None:
    tmp, files = results
    rc = main(["tables", "--eval-results", str(tmp / "res"), "--out-tables", str(tmp / "t3"),
               "--out-figures", str(tmp / "f3"), "--gpu-target", "h100", "--batch-size", "32"])
    assert rc == 0 and (tmp / "t3" / "index.json").exists()
    broken = tmp / "broken.json"
    broken.write_text("{not json")
    assert main(["tables", "--eval-results", str(broken), "--out-tables", str(tmp / "t4")]) == 2
    assert "broken.json" in capsys.readouterr().err


def test_pareto_front_and_tokens_per_block() -> None:
    assert pareto_front([(1, 5), (2, 4), (3, 1), (1.5, 3)]) == [(1, 5), (2, 4), (3, 1)]
    assert tokens_per_block([2, 5], [800, 680], 1024, 8, "mpm") == [1024, 1024, 800, 800, 800, 680, 680, 680]
