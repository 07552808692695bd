"""benchmarks/speed.py on the CPU, tiny: every row holds what issue 10 asks, its ratios agree with its times."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ROW_KEYS = ("model", "method", "batch_size", "backend", "mode", "device", "images", "dense_img_s", "oracle_img_s",
            "method_img_s", "speedup", "oracle_speedup", "ideal_speedup", "merge_unmerge_share")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image (the photographs) missing")
def test_speed_rows_on_the_cpu(tmp_path):
    out = tmp_path / "speed.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--device", "cpu", "--models", "T",
           "--threads", "1", "--repeats", "2", "--methods", "mpm,tome", "--images", "photos", "--crop", "256",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["model"], r["method"], r["batch_size"], r["threads"]) for r in rows] == [
        ("Seg-T/16", "mpm", 1, 1), ("Seg-T/16", "tome", 1, 1)]
    assert not (tmp_path / "speed.partial.json").exists()
    for r in rows:
        assert all(key in r for key in ROW_KEYS), [k for k in ROW_KEYS if k not in r]
        assert r["backend"] == "math" and r["mode"] == "eager" and r["device"] == "cpu"
        assert r["images"] == "skimage-photos" and r["dtype"] == "float32"
        assert r["crop"] == 256 and r["tokens_full"] == 256  # --crop 256: 16 x 16 patches
        times = r["repeat_ms"]
        assert sorted(times) == ["dense", "method", "oracle"] and all(len(v) == 2 for v in times.values())
        lo, hi = r["speedup_range"]
        assert lo <= r["speedup"] <= hi and r["speedup_significant"] == (not lo <= 1.0 <= hi)
        assert r["method_img_s"] == pytest.approx(1000.0 / r["method_ms"])
        assert r["ideal_speedup"] > 1.0 and 0.0 < r["merge_unmerge_share"] < 1.0
        assert r["tokens_after_site"] and all(t < r["tokens_full"] for t in r["tokens_after_site"])
    assert "speedups over dense" in done.stdout and "2 rows in" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image (the photographs) missing")
def test_speed_rows_with_and_without_speculation(tmp_path):
    """--speculate both: one row per setting; a pool of 2 distinct batches, so a guess must hold both."""
    out = tmp_path / "speed.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--device", "cpu", "--models", "T",
           "--threads", "1", "--repeats", "2", "--methods", "mpm", "--images", "photos", "--batches", "2",
           "--pool-batches", "2", "--speculate", "both", "--crop", "256", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["method"], r["batch_size"], r["speculative"]) for r in rows] == [("mpm", 2, False), ("mpm", 2, True)]
    exact, guessed = rows
    assert exact["respeculated"] == 0
    assert exact["image_source"]["images_used"] == 4 and not exact["image_source"]["repeated"]
    assert guessed["pad_share"] >= exact["pad_share"]  # a guess holds the larger batch's counts
    assert "mpm+s" in done.stdout and "speculate_settings" not in rows[0]


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image (the photographs) missing")
def test_speed_refuses_a_pool_larger_than_the_photos(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--device", "cpu", "--models", "T",
           "--batches", "32", "--pool-batches", "3", "--images", "photos", "--out", str(tmp_path / "s.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "photos images for batch 32 x 3" in done.stderr and "too few for 96 distinct images" in done.stderr
    assert not (tmp_path / "s.json").exists()


def test_readme_grid_is_what_speed_table_prints_from_the_committed_rows():
    """The README's grid of the newest H200 MPM rows is `speed_table.py --grid`'s output on the committed JSON
    (no figure typed by hand), and its batch-1 line takes the faster dense of the same call."""
    rows_file = REPO / "results" / "reference" / "h200" / "one_launch" / "speed.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed_table.py"), "--grid", str(rows_file)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == (rows_file.parent / "GRID.md").read_text()
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 16 + 2 and table[1].startswith("| photos, batch 32, FA2 on, eager (+s) | ")
    assert table[-1].startswith("| FLOP-ideal, synthetic, batch 32 / batch 1 | ")
    readme = (REPO / "README.md").read_text()
    assert all(line in readme for line in table[1:]), "a grid line of the README differs from the command's"
    rows = json.loads(rows_file.read_text())
    b1 = [r for r in rows if (r["images"], r["batch_size"], r["mode"], r["model"]) == ("synthetic", 1, "graphs", "Seg-B/16")]
    dense = max(b1, key=lambda r: r["dense_img_s"])
    want = f"Seg-B {max(r['method_img_s'] for r in b1) / dense['dense_img_s']:.2f} (oracle"
    assert want in done.stdout.splitlines()[-1], "the synthetic batch-1 line: the faster MPM over the faster dense"
