"""GPU time of each step of MPM's merge: the Triton kernels against their PyTorch twins.

The merged forward's overhead over the slice oracle is these steps (``speed.py``'s ``share``);
this study says which of them costs what, at the token counts of Seg-T/S/B (512 px, 1024 tokens)
and Seg-L (640 px, 1600 tokens), batch 1 and 32, fp16, on random rows with about 80% of the
tokens left per image (MPM's counts at block 2 on photographs). Each step is timed as a loop of
``LOOP`` calls between CUDA events (median over repeats), so a step that is launch-bound shows
its launch cost, one that is GPU-bound its GPU time; the Triton steps also as the same calls
replayed in one CUDA graph (``graph ms``: GPU time, what a graphed forward pays).

    python benchmarks/merge_kernels.py --out /tmp/merge_kernels.json
    python benchmarks/merge_kernels.py --sweep --out /tmp/tiles.json   # the best-partner kernel's tilings
    python benchmarks/merge_kernels.py --sweep --sweep-set small --rows results/reference/h200/small/tiles.json \
        --out - --best-out results/reference/h200/small/small_tiles.json   # a committed sweep's table, no GPU

``--sweep`` times the best-partner search under each tiling of :data:`SWEEP`
(``tk.TileConfig``), as ``LOOP`` calls captured in one CUDA graph (GPU time, no launch
cost), on the same rows, and checks every tiling's partners: each attains its row's
maximum cosine (float64 reference, fp16 tolerance 2e-3) and the share equal to the
current tiling's. It prints the fastest tiling per feature width and batch size.
``--sweep-set symmetric`` times each width's row kernel (:data:`tk.TILES`) against the
symmetric kernel's tilings (:data:`SYMMETRIC_SWEEP`: each pair of token blocks multiplied once).
``--sweep-set small`` times it against the small batches' candidates (:data:`SMALL_SWEEP`: smaller
tiles, more column ranges; ``--batches 1,4``), for :data:`tk.SMALL_TILES`. Every tiling is timed as
MPM's plan runs it: the inverse-norm pre-pass, the search, the combine where more partials than the
mutual plan folds (:data:`tk.FOLD_PARTS`), and the mutual plan. ``--best-out`` writes per width
the fastest tiling whose checks hold: at the largest batch, or (``small``) at every swept batch.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpm.io import write_text_atomic  # noqa: E402
from mpm.merging import triton_kernels as tk  # noqa: E402
from mpm.merging.maps import gather_mean, row_sources, rows_to_padded  # noqa: E402
from mpm.merging.mpm import best_partners, partner_cosines, plan_from_partners, plan_rows  # noqa: E402

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


def graph_ms(fn, repeats: int = 10) -> float:
    """Median GPU ms per call of ``fn`` over ``repeats`` replays of one CUDA graph of ``LOOP`` calls."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(LOOP):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        graph.replay()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e) / LOOP)
    return statistics.median(out)


#: tilings of the best-partner kernel that ``--sweep`` times (the first is the kernel's tiling before the sweep)
SWEEP = (
    tk.TileConfig(64, 64, 64, 4, 3, False),
    tk.TileConfig(64, 64, 64, 4, 3, True),
    tk.TileConfig(128, 64, 64, 4, 3, True),
    tk.TileConfig(128, 64, 64, 8, 3, True),
    tk.TileConfig(128, 128, 64, 8, 3, True),
    tk.TileConfig(64, 128, 64, 4, 3, True),
    tk.TileConfig(128, 64, 32, 4, 4, True),
    tk.TileConfig(64, 64, 32, 4, 4, True),
    tk.TileConfig(128, 128, 32, 8, 4, True),
    tk.TileConfig(128, 64, 128, 8, 2, True),
    tk.TileConfig(256, 64, 64, 8, 3, True),
    tk.TileConfig(128, 32, 64, 4, 3, True),
)


#: tilings of the symmetric kernel that ``--sweep --sweep-set symmetric`` times beside each width's row kernel
SYMMETRIC_SWEEP = (
    tk.TileConfig(64, 64, 64, 4, 3, True, True),
    tk.TileConfig(64, 64, 32, 4, 4, True, True),
    tk.TileConfig(128, 128, 64, 8, 3, True, True),
    tk.TileConfig(128, 128, 32, 8, 4, True, True),
    tk.TileConfig(128, 128, 64, 4, 3, True, True),
    tk.TileConfig(64, 64, 128, 4, 2, True, True),
)


#: tilings of the best-partner search at small batches that ``--sweep --sweep-set small`` times beside each
#: width's row kernel (:data:`tk.TILES`, which small batches took until then)
SMALL_SWEEP = (
    tk.SMALL_BASE_TILES,
    tk.TileConfig(64, 64, 64, 4, 3, True, split_tiles=2),
    tk.TileConfig(64, 64, 64, 4, 3, False, split_tiles=1),
    tk.TileConfig(64, 128, 64, 4, 3, True, split_tiles=1),
    tk.TileConfig(128, 64, 64, 4, 3, True, split_tiles=1),
    tk.TileConfig(128, 64, 64, 8, 3, True, split_tiles=1),
    tk.TileConfig(32, 64, 64, 4, 3, True, split_tiles=1),
    tk.TileConfig(64, 64, 32, 4, 4, True, split_tiles=1),
    tk.TileConfig(64, 64, 128, 4, 2, True, split_tiles=1),
    tk.TileConfig(128, 128, 64, 8, 3, True, split_tiles=1),
    tk.TileConfig(64, 64, 64, 4, 3, True, True),
    tk.TileConfig(32, 32, 64, 4, 3, True, True),
)


def tilings_for(size: str, sweep_set: str) -> tuple[tk.TileConfig, ...]:
    """``all``: :data:`SWEEP`; ``symmetric`` / ``small``: the width's row kernel (:data:`tk.TILES`), then
    :data:`SYMMETRIC_SWEEP` / :data:`SMALL_SWEEP`."""
    if sweep_set == "all":
        return SWEEP
    return (tk.tile_config(SHAPES[size][0]), *(SYMMETRIC_SWEEP if sweep_set == "symmetric" else SMALL_SWEEP))


def partner_check(x: torch.Tensor, start: torch.Tensor, n: torch.Tensor, slots: int, best: torch.Tensor) -> float:
    """Share of real rows whose partner attains the row's maximum cosine (float64, tolerance 2e-3)."""
    top, got, valid = partner_cosines(rows_to_padded(x, start + 1, slots), best, n)
    ok = ((top - got).abs() <= 2e-3) | ~torch.isfinite(top)
    return int(ok[valid].sum()) / int(valid.sum())  # exact: a float32 mean of ones can round below 1


def sweep(size: str, batch: int, tilings=SWEEP) -> list[dict]:
    """One row per tiling: GPU ms of the best-partner kernel alone at (model, batch), and its checks."""
    dim, tokens = SHAPES[size]
    x, start, n = rows_of(batch, dim, tokens, batch * 7 + dim, "cuda", torch.float16)
    slots = int(n.max())
    base = tk.best_partners_rows(x, start, n, 1, slots, tiles=tilings[0])[0]
    rows = []
    for tiles in tilings:
        try:
            best = tk.best_partners_rows(x, start, n, 1, slots, tiles=tiles)[0]
            ms = graph_ms(lambda: tk.mutual_plan(*tk.best_partners_rows(x, start, n, 1, slots, tiles=tiles,
                                                                          combine=False), n))
        except Exception as err:  # a tiling that does not compile or fit (shared memory) is reported, not fatal
            rows.append({"model": f"Seg-{size}/16", "batch_size": batch, "tiles": tiles.label(),
                         "error": f"{type(err).__name__}: {str(err)[:200]}"})
            continue
        valid = torch.arange(slots, device=x.device)[None, :] < n[:, None]
        rows.append({"model": f"Seg-{size}/16", "dim": dim, "batch_size": batch, "tiles": tiles.label(),
                     "config": asdict(tiles), "ms": ms,
                     "attains_row_max": partner_check(x, start, n, slots, best),
                     "equal_to_first": int((best == base)[valid].sum()) / int(valid.sum())})
    return rows


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
            steps["plan, fused best-partner kernel"] = lambda: _with_switch(
                "fused_best_partner", True, lambda: plan_rows(x, start, n, 1, slots))
            steps["best partner kernel alone"] = lambda: tk.best_partners_rows(x, start, n, 1, slots)
            steps["best partner kernel alone, one column range"] = lambda: tk.best_partners_rows(
                x, start, n, 1, slots, splits=1)
            steps["best partner, row kernel (TILES)"] = lambda: tk.best_partners_rows(
                x, start, n, 1, slots, tiles=tk.tile_config(dim))
            steps["plan in one launch"] = lambda: _with_switch(
                "one_launch_plan", "always", lambda: plan_rows(x, start, n, 1, slots))
            steps["plan in kernels (one launch off)"] = lambda: _with_switch(
                "one_launch_plan", "never", lambda: plan_rows(x, start, n, 1, slots))
            steps["plan as the runner, small-batch tiles off"] = lambda: _with_switch(
                "small_batch_tiles", False, lambda: plan_rows(x, start, n, 1, slots))
            steps[f"inverse norms {tk.norm_tiling(int(x.shape[0]), dim, x.device)}"] = lambda: tk.inv_norms(x)
            steps["inverse norms (64, 64)"] = lambda: tk.inv_norms(x, (64, 64))
        else:
            steps["best partner alone (padded view + bmm + max)"] = lambda: best_partners(
                rows_to_padded(x, start + 1, slots), n)
            steps["plan from partners alone"] = lambda: plan_from_partners(*best_partners(feats, n), n)
        for step, fn in steps.items():
            rows.append({"model": f"Seg-{size}/16", "dim": dim, "tokens": tokens, "batch_size": batch,
                         "path": "triton" if use_triton else "pytorch", "step": step, "ms": loop_ms(fn, device),
                         "graph_ms": graph_ms(fn) if use_triton and device == "cuda" else None})
    tk.enabled = True
    return rows


def _with_switch(name: str, value, fn):
    """``fn()`` with the kernel switch ``tk.<name>`` set to ``value`` (``fused_best_partner``: MPM's plan
    takes the fused best-partner kernel; ``small_batch_tiles`` off: :data:`tk.TILES` at every batch size;
    ``one_launch_plan``: ``"always"`` / ``"never"`` the plan in one launch)."""
    before = getattr(tk, name)
    setattr(tk, name, value)
    try:
        return fn()
    finally:
        setattr(tk, name, before)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="T,S,B,L")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--sweep", action="store_true", help="time the best-partner kernel's tilings (SWEEP)")
    ap.add_argument("--sweep-set", choices=("all", "symmetric", "small"), default="all",
                    help="--sweep: the row kernel's tilings (SWEEP), or each width's row kernel against the "
                         "symmetric kernel's (SYMMETRIC_SWEEP) or the small batches' (SMALL_SWEEP)")
    ap.add_argument("--best-out", default=None, help="--sweep: write the fastest checked tiling per width (at the "
                                                      "largest batch; small: per batch) here (JSON for "
                                                      "MPM_TRITON_TILES, ..._SYMMETRIC_TILES or ..._SMALL_TILES)")
    ap.add_argument("--rows", default=None, help="--sweep: no timing; report (and --best-out) a committed sweep's "
                                                  "rows from this tiles.json (no GPU needed)")
    args = ap.parse_args()
    if args.sweep and args.rows:
        return report_sweep(json.loads(Path(args.rows).read_text())["rows"], args.sweep_set, args.best_out)
    if not torch.cuda.is_available() or not tk.available(torch.empty(1, device="cuda")):
        print("merge_kernels.py: needs CUDA and Triton", file=sys.stderr)
        return 2
    if args.sweep:
        return main_sweep(args)
    rows = []
    with torch.inference_mode():
        for size in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                rows.extend(study(size, batch))
    write_text_atomic(args.out, json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                            "loop": LOOP, "rows": rows}, indent=1))
    print(f"{'model':9s} {'bs':>3s} {'path':8s} {'step':52s} {'ms':>8s} {'graph ms':>8s}")
    for r in rows:
        g = "-" if r["graph_ms"] is None else f"{r['graph_ms']:.4f}"
        print(f"{r['model']:9s} {r['batch_size']:3d} {r['path']:8s} {r['step']:52s} {r['ms']:8.3f} {g:>8s}")
    print("(ms: a loop of eager calls, launch cost included; graph ms: the same calls replayed in one CUDA graph)")
    return 0


def main_sweep(args) -> int:
    rows = []
    with torch.inference_mode():
        for size in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                rows.extend(sweep(size, batch, tilings_for(size, args.sweep_set)))
                print(f"[sweep] Seg-{size}/16 batch {batch} done", file=sys.stderr, flush=True)
    write_text_atomic(args.out, json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                            "loop": LOOP, "timing": "CUDA graph replay", "rows": rows}, indent=1))
    return report_sweep(rows, args.sweep_set, args.best_out)


def report_sweep(rows: list[dict], sweep_set: str, best_out: str | None) -> int:
    """Print a sweep's rows and its fastest checked tilings; ``best_out``: write them as a table."""
    print(f"{'model':9s} {'bs':>3s} {'tiles':28s} {'ms':>7s} {'vs first':>8s} {'row max':>8s} {'equal':>6s}")
    first: dict[tuple, float] = {}
    for r in rows:
        if "error" in r:
            print(f"{r['model']:9s} {r['batch_size']:3d} {r['tiles']:28s} {r['error'][:60]}")
            continue
        key = (r["model"], r["batch_size"])
        first.setdefault(key, r["ms"])
        print(f"{r['model']:9s} {r['batch_size']:3d} {r['tiles']:28s} {r['ms']:7.4f} {first[key] / r['ms']:8.2f} "
              f"{r['attains_row_max']:8.5f} {r['equal_to_first']:6.3f}")
    best: dict[str, dict] = {}
    largest = max(r["batch_size"] for r in rows)
    for key in first:
        ok = [r for r in rows if (r["model"], r["batch_size"]) == key and "error" not in r
              and r["attains_row_max"] == 1.0]
        if ok:
            fast = min(ok, key=lambda r: r["ms"])
            print(f"fastest {key[0]} batch {key[1]}: {fast['tiles']} {fast['ms']:.4f} ms "
                  f"({first[key] / fast['ms']:.2f}x the first tiling)")
            if sweep_set == "small":  # {width: {batch: tiling}}: a tiling per swept batch
                best.setdefault(str(fast["dim"]), {})[str(key[1])] = fast["config"]
            elif key[1] == largest:  # the table follows the largest batch
                best[str(fast["dim"])] = fast["config"]
    if best_out:  # JSON for tk.load_tiles (MPM_TRITON_TILES, ..._SYMMETRIC_TILES; small: ..._SMALL_TILES, per_batch)
        write_text_atomic(best_out, json.dumps(best, indent=1))
        print(f"wrote {best_out}: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
