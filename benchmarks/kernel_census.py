"""Which GPU kernels a forward runs, for dense, the slice oracle and MPM side by side.

For each (model, batch size), on the same images in the same execution mode as ``speed.py``,
each variant is profiled over one pass of its image pool with the section markers inside its
CUDA graphs (:class:`mpm.benchmarking.timing.KernelSections`): kernel time and launches per
forward by section, every kernel by name, and the wall time per forward (CUDA events over the
same calls, unprofiled), so that ``wall - kernels`` is the GPU's idle time between kernels. The
table printed last lists, per model and batch size, the kernels whose time differs most
between the oracle and dense: where a merged model loses what its fewer tokens saved.

Random weights (seed 0), fp16; ``photos`` are scikit-image's bundled photographs.

    python benchmarks/kernel_census.py --models T,L --batches 1 --out census.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpm.benchmarking.bench import SliceOracle  # noqa: E402
from mpm.benchmarking.timing import MarkerMismatch, profile_kernels, time_block  # noqa: E402
from mpm.environment import describe_environment  # noqa: E402
from mpm.io import write_text_atomic  # noqa: E402
from mpm.merging.base import NoMerge  # noqa: E402
from mpm.models import SegmenterConfig, build_segmenter  # noqa: E402
from speed import CROP, POOL_BATCH1, image_pool, methods_for  # noqa: E402

_NOISE = re.compile(r"^void |at::native::|\(anonymous namespace\)::|at::cuda::|cutlass::")


def short(name: str, width: int = 72) -> str:
    """A kernel's name without its namespaces' noise, cut to ``width``."""
    return _NOISE.sub("", name)[:width]


#: kernel name -> category of the encoder's kernels (the first pattern that matches; else "other")
CATEGORIES = (("matrix products", re.compile(r"nvjet|gemm|cutlass|xmma|cublas", re.I)),
              ("attention", re.compile(r"flash|_flash_varlen", re.I)),
              ("norms", re.compile(r"layer_norm", re.I)),
              ("elementwise", re.compile(r"elementwise|gelu|CUDAFunctor|copy", re.I)))


def category(name: str) -> str:
    """The :data:`CATEGORIES` entry of kernel ``name``."""
    return next((label for label, pattern in CATEGORIES if pattern.search(name)), "other")


def census(runner, call, n: int, device: torch.device, timed_calls: int) -> dict:
    """Kernels per forward of ``call(i)`` (i < n) by section and by name, and the wall ms per forward."""
    sections = profile_kernels(call, n, device)
    for i in range(n):  # the unmarked graphs, for the wall time
        call(i, None)
    wall = time_block(lambda i: call(i % n, None), device, timed_calls)
    kernels: dict[str, list[float]] = {}
    per_section = {}
    encoder: dict[str, list[float]] = {}  # the encoder section's kernels by category: [ms, launches] per forward
    for name, (k_ms, k_n) in sections.by_kernel.get("encoder", {}).items():
        entry = encoder.setdefault(category(name), [0.0, 0.0])
        entry[0] += k_ms / n
        entry[1] += k_n / n
    for section, names in sections.by_kernel.items():
        ms = sum(v[0] for v in names.values()) / n
        launches = sum(v[1] for v in names.values()) / n
        per_section[section] = {"ms": ms, "launches": launches}
        for name, (k_ms, k_n) in names.items():
            entry = kernels.setdefault(short(name), [0.0, 0.0])
            entry[0] += k_ms / n
            entry[1] += k_n / n
    return {"wall_ms": wall, "kernel_ms": sections.kernel_ms / n,
            "launches": sum(v["launches"] for v in per_section.values()), "sections": per_section,
            "encoder_by_category": encoder,
            "kernels": dict(sorted(kernels.items(), key=lambda kv: -kv[1][0]))}


def token_ideal(counts: list[list[list[int]]], schedule, depth: int, full: int) -> float:
    """The encoder blocks' mean image-token count over the dense model's, over the pool: the share of a
    per-token cost (the linear layers') that the merged counts leave (1 = no saving)."""
    ratios = []
    for per_site in counts:  # one forward: per site, per image
        for b in range(len(per_site[0])):
            tokens, k = [], 0
            for block in range(depth):
                while k < len(schedule) and schedule[k] <= block:
                    k += 1
                tokens.append(full if k == 0 else per_site[k - 1][b])
            ratios.append(sum(tokens) / (depth * full))
    return sum(ratios) / len(ratios)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="T,S,B,L")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--backend", default="fa2")
    ap.add_argument("--mode", default="graphs", choices=("eager", "graphs"))
    ap.add_argument("--images", default="photos", choices=("photos", "synthetic"))
    ap.add_argument("--timed-calls", type=int, default=64)
    ap.add_argument("--top", type=int, default=12, help="kernels per table")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("kernel_census.py: needs a CUDA device", file=sys.stderr)
        return 2
    device, dtype = torch.device("cuda"), torch.float16
    env = describe_environment(device, None, "float16")
    out_rows = []
    for size in args.models.split(","):
        torch.manual_seed(0)
        config = SegmenterConfig.preset(size, 150, image_size=(CROP[size], CROP[size]))
        model = build_segmenter(config).to(device=device, dtype=dtype).eval()
        for batch in (int(b) for b in args.batches.split(",")):
            count = POOL_BATCH1 if batch == 1 else batch
            pool, source, label = image_pool(args.images, count, CROP[size], Path("/tmp/mpm-speed-synth"))
            inputs = [model.normalize(b.to(device=device, dtype=dtype)) for b in pool.split(batch)]
            method = methods_for(size)["mpm"]
            with torch.inference_mode():
                mpm = model.runner(method, args.backend, args.mode)
                counts = []
                for x in inputs:
                    _, enc = mpm(x, return_encoder=True)
                    counts.append([t.tolist() for t in enc.tokens_left])
                oracle = SliceOracle(method)
                variants = {"dense": model.runner(NoMerge(), args.backend, args.mode),
                            "oracle": model.runner(oracle, args.backend, args.mode), "mpm": mpm}
                row = {"model": f"Seg-{size}/16", "batch_size": batch, "backend": args.backend, "mode": args.mode,
                       "images": label, "image_source": source, "counts_per_site": counts,
                       "token_ideal": token_ideal(counts, method.schedule, config.depth,
                                                  model.encoder.patch_embed.num_patches),
                       "variants": {}}
                for name, runner in variants.items():
                    def call(i: int, timer, runner=runner, name=name):
                        if name == "oracle":
                            oracle.counts = counts[i]
                        return runner(inputs[i], timer=timer)
                    try:
                        row["variants"][name] = census(runner, call, len(inputs), device, args.timed_calls)
                    except MarkerMismatch as err:
                        print(f"kernel_census.py: {size} bs{batch} {name}: {err}", file=sys.stderr)
                del variants, mpm
                torch.cuda.empty_cache()
            out_rows.append(row)
        del model
        torch.cuda.empty_cache()
    write_text_atomic(args.out, json.dumps({"environment": env, "rows": out_rows}, indent=1))
    for row in out_rows:
        v = row["variants"]
        print(f"\n{row['model']} batch {row['batch_size']} {row['backend']} {row['mode']} ({row['images']}): "
              + "; ".join(f"{n} wall {d['wall_ms']:.3f} ms, kernels {d['kernel_ms']:.3f} ms in {d['launches']:.0f} "
                          f"launches (idle {d['wall_ms'] - d['kernel_ms']:.3f})" for n, d in v.items()))
        for n, d in v.items():
            print(f"  {n:6s} sections: " + ", ".join(f"{s} {x['ms']:.3f} ms / {x['launches']:.0f}"
                                                   for s, x in d["sections"].items()))
        if "dense" in v and "oracle" in v:
            cats = sorted(set(v["dense"]["encoder_by_category"]) | set(v["oracle"]["encoder_by_category"]))
            cat = lambda var, c: v.get(var, {}).get("encoder_by_category", {}).get(c, [0.0, 0.0])  # noqa: E731
            print(f"  encoder kernels by category, ms / launches per forward (oracle over dense; token-ideal "
                  f"{row['token_ideal']:.3f}):")
            for c in cats:
                d, o = cat("dense", c), cat("oracle", c)
                print(f"    {c:16s} " + " ".join(f"{var} {cat(var, c)[0]:7.4f}/{cat(var, c)[1]:<4.0f}"
                                                for var in ("dense", "oracle", "mpm"))
                      + (f"  oracle/dense {o[0] / d[0]:.3f}" if d[0] > 0 else ""))
            names = set(v["dense"]["kernels"]) | set(v["oracle"]["kernels"]) | set(v.get("mpm", {}).get("kernels", {}))
            get = lambda var, k: v.get(var, {}).get("kernels", {}).get(k, [0.0, 0.0])  # noqa: E731
            diff = sorted(names, key=lambda k: -abs(get("oracle", k)[0] - get("dense", k)[0]))[: args.top]
            print(f"  {'kernel (oracle - dense, most first)':72s} {'dense':>13s} {'oracle':>13s} {'mpm':>13s}")
            for k in diff:
                cells = " ".join(f"{get(var, k)[0]:7.4f}/{get(var, k)[1]:<5.0f}" for var in ("dense", "oracle", "mpm"))
                print(f"  {k:72s} {cells}")
    print(f"\n(ms / launches per forward; commit {env.get('git_commit')}, {env.get('device_name')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
