"""GPU time of each step of MPM's merge: the Triton kernels against their PyTorch twins.

The merged forward's overhead over the slice oracle is these steps (``speed.py``'s ``share``);
this study says which of them costs what, at the token counts of Seg-T/S/B (512 px, 1024 tokens)
and Seg-L (640 px, 1600 tokens), batch 1 and 32, fp16, on random rows with about 80% of the
tokens left per image (MPM's counts at block 2 on photographs). Each step is timed as a loop of
``LOOP`` calls between CUDA events (median over repeats), so a step that is launch-bound shows
its launch cost, one that is GPU-bound its GPU time.

    python benchmarks/merge_kernels.py --out /tmp/merge_kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpm.merging import triton_kernels as tk  # noqa: E402
from mpm.merging.maps import gather_mean, row_sources, rows_to_padded  # noqa: E402
from mpm.merging.mpm import best_partners, plan_from_partners, plan_rows  # noqa: E402

LOOP = 20
SHAPES = {"T": (192, 1024), "S": (384, 1024), "B": (768, 1024), "L": (1024, 1600)}


def loop_ms(fn, device: str, repeats: int = 15) -> float:
    """Median ms per call of ``fn`` over ``repeats`` loops of ``LOOP`` calls (CUDA events on the GPU)."""
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(LOOP):
                fn()
            e.record()
            torch.cuda.synchronize()
            out.append(s.elapsed_time(e) / LOOP)
        else:
            t0 = time.perf_counter()
            for _ in range(LOOP):
                fn()
            out.append((time.perf_counter() - t0) * 1000.0 / LOOP)
    return statistics.median(out)


def rows_of(batch: int, dim: int, tokens: int, seed: int, device: str,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed rows of ``batch`` images (one prefix row each, 75-85% of ``tokens`` left)."""
    g = torch.Generator(device=device).manual_seed(seed)
    n = torch.randint(int(0.75 * tokens), int(0.85 * tokens), (batch,), device=device, generator=g)
    lens = n + 1
    start = lens.cumsum(0) - lens
    x = torch.randn(int(lens.sum()), dim, device=device, generator=g).to(dtype)
    return x, start, n


def study(size: str, batch: int, device: str = "cuda", paths: tuple[bool, ...] = (True, False)) -> list[dict]:
    """Rows of ms per step at one (model, batch size); ``paths``: Triton on, off."""
    dim, tokens = SHAPES[size]
    dtype = torch.float16 if device == "cuda" else torch.float32
    x, start, n = rows_of(batch, dim, tokens, batch * 7 + dim, device, dtype)
    slots = int(n.max())
    rows = []
    for use_triton in paths:
        tk.enabled = use_triton
        feats = rows_to_padded(x, start + 1, slots)
        plan = plan_rows(x, start, n, 1, slots)
        kept = plan.kept
        src = row_sources(plan.dest, plan.partner, plan.survivor, n, start, kept, 1, True, slots, int(x.shape[0]))
        steps = {
            f"plan (similarity, argmax, mutual test){' as the runner' if use_triton else ''}": lambda: plan_rows(x, start, n, 1, slots),
            "sources (output layout)": lambda: row_sources(plan.dest, plan.partner, plan.survivor, n, start, kept, 1,
                                                           True, slots, int(x.shape[0])),
            "gather mean": lambda: gather_mean(x, src.src1, src.src2),
        }
        if use_triton:
            steps["plan, fused best-partner kernel"] = lambda: _fused(lambda: plan_rows(x, start, n, 1, slots))
            steps["best partner kernel alone"] = lambda: tk.best_partners_rows(x, start, n, 1, slots)
            steps["best partner kernel alone, one column range"] = lambda: tk.best_partners_rows(
                x, start, n, 1, slots, splits=1)
        else:
            steps["best partner alone (padded view + bmm + max)"] = lambda: best_partners(
                rows_to_padded(x, start + 1, slots), n)
            steps["plan from partners alone"] = lambda: plan_from_partners(*best_partners(feats, n), n)
        for step, fn in steps.items():
            rows.append({"model": f"Seg-{size}/16", "dim": dim, "tokens": tokens, "batch_size": batch,
                         "path": "triton" if use_triton else "pytorch", "step": step, "ms": loop_ms(fn, device)})
    tk.enabled = True
    return rows


def _fused(fn):
    """``fn()`` with MPM's plan taking the fused best-partner kernel (``tk.fused_best_partner``)."""
    before, tk.fused_best_partner = tk.fused_best_partner, True
    try:
        return fn()
    finally:
        tk.fused_best_partner = before


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="T,S,B,L")
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args()
    if not torch.cuda.is_available() or not tk.available(torch.empty(1, device="cuda")):
        print("merge_kernels.py: needs CUDA and Triton", file=sys.stderr)
        return 2
    rows = []
    with torch.inference_mode():
        for size in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                rows.extend(study(size, batch))
    Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                          "loop": LOOP, "rows": rows}, indent=1))
    print(f"{'model':9s} {'bs':>3s} {'path':8s} {'step':48s} {'ms':>8s}")
    for r in rows:
        print(f"{r['model']:9s} {r['batch_size']:3d} {r['path']:8s} {r['step']:48s} {r['ms']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
