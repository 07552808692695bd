"""H100 study: Seg-T/S/B/L x methods x batch sizes x FA2 on/off, fp16.

Weights are random-initialised (no checkpoint can be downloaded on the GPU
host) and images come from the synthetic demo set: the timings are real, the
token counts are those of random weights on synthetic images, so they are not
the paper's. Writes one JSON per point under ``--out`` and prints a table last.

    python benchmarks/h100_study.py --images DIR --out DIR [--models T,S,B,L] [--batches 1,32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpm.benchmarking.bench import BenchSpec, run_point  # noqa: E402

#: name -> (method, schedule builder(depth), kwargs, batch policy)
METHODS = {
    "none": ("none", lambda d: (), {}, "exact"),
    "tome": ("tome", lambda d: tuple(range(d)), {"r": None}, "exact"),  # r filled per model below
    # ALGM's published layers (tue-mps/algm-segmenter: --selected-layers 1 5, ViT-L 1 7; 1-based)
    "algm": ("algm", lambda d: (0, 4) if d == 12 else (0, 6), {}, "exact"),
    "mpm-2-5": ("mpm", lambda d: (2, 5), {}, "exact"),
    "mpm-2-5-bmin": ("mpm", lambda d: (2, 5), {}, "batch-min"),
    "mpm-5": ("mpm", lambda d: (5,), {}, "exact"),
    "mpm-1-3-5": ("mpm", lambda d: (1, 3, 5), {}, "exact"),
    "mpm-2-5-8": ("mpm", lambda d: (2, 5, 8), {}, "exact"),
}
DEPTH = {"T": 12, "S": 12, "B": 12, "L": 24}
CROP = {"T": 512, "S": 512, "B": 512, "L": 640}
BACKENDS = {"fa2-off": "math", "fa2-on": "fa2"}


def tome_r(size: str) -> int:
    """ToMe's r per layer: removes about 1/3 of the tokens' compute over the encoder."""
    n = (CROP[size] // 16) ** 2
    return max(1, round(n / (2.5 * DEPTH[size])))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="T,S,B,L")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--backends", default="fa2-off,fa2-on")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    for size in args.models.split(","):
        for mname in args.methods.split(","):
            method, sched, kwargs, policy = METHODS[mname]
            kwargs = dict(kwargs)
            if "r" in kwargs:
                kwargs["r"] = tome_r(size)
            for bs in (int(b) for b in args.batches.split(",")):
                for bname in args.backends.split(","):
                    spec = BenchSpec(
                        images=args.images, model=size, num_classes=150, crop=(CROP[size],) * 2,
                        method=method, schedule=sched(DEPTH[size]), method_kwargs=kwargs,
                        batch_policy=policy, batch_size=bs, backend=BACKENDS[bname],
                        dtype=args.dtype, device="cuda", warmup=args.warmup, iters=args.iters,
                        breakdown_iters=5, pool_batches=2 if bs >= 32 else 8,
                    )
                    key = f"seg-{size}_{mname}_bs{bs}_{bname}"
                    t0 = time.time()
                    try:
                        res = run_point(spec)
                        res["point"] = key
                        results.append(res)
                        rows.append((key, res["timing"]["images_per_s"], res["timing"]["per_image_ms"],
                                     res["gflops"], res["tokens"]["after_step_mean"], res["breakdown_ms"]["merge_ms"]))
                    except Exception as err:  # keep going: one failing point must not lose the others
                        traceback.print_exc()
                        rows.append((key, float("nan"), float("nan"), None, f"ERROR {type(err).__name__}: {err}", None))
                    print(f"{key}: {time.time() - t0:.1f}s", flush=True)
    (out / "points.json").write_text(json.dumps(results, indent=1))
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'point':42s} {'img/s':>9s} {'ms/img':>8s} {'GFLOPs':>8s} {'merge ms':>8s} tokens")
    for key, ips, ms, gf, tok, mm in rows:
        gfs = f"{gf:8.1f}" if isinstance(gf, (int, float)) else f"{'-':>8s}"
        mms = f"{mm:8.2f}" if isinstance(mm, (int, float)) else f"{'-':>8s}"
        tks = tok if isinstance(tok, str) else ",".join(f"{t:.0f}" for t in tok)
        print(f"{key:42s} {ips:9.1f} {ms:8.2f} {gfs} {mms} {tks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
