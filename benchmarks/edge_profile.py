"""Where the time of a batch-1 CPU forward goes, per operator: ONNX Runtime against PyTorch.

For one model and thread count, the dense model and MPM(2,5) run ``--iters`` forwards each on
the same images in ONNX Runtime (the dense graph; the segmented export with ORT's own profiler
on in every session) and in PyTorch (``torch.profiler``, CPU). The table adds up the operators
by kind — ORT's node types (``MatMul``, ``Softmax``, ``Resize``, ...), PyTorch's aten ops — as ms
per forward, beside the wall-clock ms per forward of each variant measured without a profiler
(the same images, interleaved call by call). It says which kind of operator makes one runtime
slower than the other at a thread count (``benchmarks/edge.py`` gives the ratios).

Random weights (seed 0, 150 classes), scikit-image photographs (or synthetic images):

    python benchmarks/edge_profile.py --model T --threads 4 --out DIR
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


POOLS = ("shared", "per-session", "per-session-nospin")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for edge_profile.json (created)")
    ap.add_argument("--model", default="T", choices=("T", "S", "B", "L"))
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--images", default="photos", help="'photos' or 'synthetic' (default photos)")
    ap.add_argument("--num-images", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3, help="forwards per variant per image (default 3)")
    ap.add_argument("--pool", default="shared", choices=POOLS,
                    help="ORT intra-op threads: one pool shared by all sessions (default), or a pool per "
                         "session, spinning or not")
    ap.add_argument("--top", type=int, default=12, help="operator kinds listed per variant (default 12)")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.iters < 1 or args.num_images < 1 or args.crop % 16:
        ap.error("--threads, --iters, --num-images >= 1 and --crop a multiple of 16, please")
    return args


def ort_op_totals(paths: list[str]) -> dict[str, float]:
    """Total µs per ORT node type over the profiler files ``paths`` (their ``*_kernel_time`` events)."""
    totals: dict[str, float] = collections.defaultdict(float)
    for path in paths:
        for event in json.loads(Path(path).read_text()):
            if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
                totals[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
    return dict(totals)


def torch_op_totals(prof) -> dict[str, float]:
    """Self CPU µs per aten op of a ``torch.profiler`` run."""
    return {e.key: float(e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0}


def ort_alone(variants: dict, arrays, calls: int) -> dict[str, float]:
    """Median ms per forward of the ORT ``variants`` alone (no PyTorch forward yet in this
    process), call by call, the order rotating."""
    for fn in variants.values():
        fn(0)
    wall: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for j in range(calls):
        shift = j % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            variants[name](j % len(arrays))
            wall[name].append((time.perf_counter() - t0) * 1000.0)
    return {v: statistics.median(t) for v, t in wall.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch

    from mpm.benchmarking.onnx_export import export_dense, export_segments
    from mpm.benchmarking.onnx_runtime import Graph, SegmentedModel, session_options, shared_thread_pool
    from mpm.environment import cpu_model, git_commit
    from mpm.io import write_json_atomic
    from mpm.merging import build_method
    from mpm.models import SegmenterConfig, build_segmenter

    edge = _edge_module()
    torch.set_num_threads(args.threads)
    shared = args.pool == "shared" and shared_thread_pool(args.threads)
    spinning = args.pool != "per-session-nospin"
    images, source = edge.make_images(argparse.Namespace(images=None if args.images == "synthetic" else args.images,
                                                         num_images=args.num_images, seed=0), args.crop)
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.preset(args.model, 150, image_size=(args.crop, args.crop))).float().eval()
    method = build_method("mpm", (2, 5))
    inputs = [model.normalize(images[i:i + 1].float()) for i in range(images.shape[0])]
    arrays = [np.ascontiguousarray(x.numpy()) for x in inputs]
    n = len(inputs)
    with tempfile.TemporaryDirectory(prefix="mpm-edge-profile-") as tmp:
        work = Path(tmp)
        export_segments(model, method, inputs[0], work, "math")
        export_dense(model, inputs[0], work / "dense.onnx", "math")

        def options(prefix: str | None):
            opts = session_options(args.threads, spinning=spinning, shared=shared)
            if prefix:
                opts.enable_profiling = True
                opts.profile_file_prefix = str(work / prefix)
            return opts

        plain = {"ort dense": Graph(work / "dense.onnx", options(None), ["CPUExecutionProvider"]),
                 "ort mpm": SegmentedModel.load(work, options=options(None))}
        variants = {
            "torch dense": lambda i: model(inputs[i], backend="math"),
            "torch mpm": lambda i: model(inputs[i], method=method, backend="math"),
            "ort dense": lambda i: plain["ort dense"](images=arrays[i]),
            "ort mpm": lambda i: plain["ort mpm"](arrays[i]),
        }
        alone = ort_alone({k: v for k, v in variants.items() if k.startswith("ort")}, arrays, args.iters * n)
        wall: dict[str, list[float]] = {k: [] for k in variants}
        with torch.inference_mode():
            for fn in variants.values():  # warm-up
                fn(0)
            names = list(variants)
            for j in range(args.iters * n):  # call by call, rotating, as edge.py does
                shift = j % len(names)
                for name in names[shift:] + names[:shift]:
                    t0 = time.perf_counter()
                    variants[name](j % n)
                    wall[name].append((time.perf_counter() - t0) * 1000.0)
            # the profiled passes, one variant at a time
            ops: dict[str, dict[str, float]] = {}
            for kind in ("dense", "mpm"):
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    for j in range(args.iters * n):
                        variants[f"torch {kind}"](j % n)
                ops[f"torch {kind}"] = torch_op_totals(prof)
            dense = Graph(work / "dense.onnx", options("dense"), ["CPUExecutionProvider"])
            seg = SegmentedModel.load(work, options=options("mpm"))
            for j in range(args.iters * n):
                dense(images=arrays[j % n])
                seg(arrays[j % n])
            ops["ort dense"] = ort_op_totals([dense.session.end_profiling()])
            ops["ort mpm"] = ort_op_totals([g.session.end_profiling() for g in seg.graphs()])
    forwards = args.iters * n
    per_forward = {v: {op: us / 1000.0 / forwards for op, us in t.items()} for v, t in ops.items()}
    result = {"model": f"Seg-{args.model}/16", "threads": args.threads, "ort_pool": args.pool, "cpu": cpu_model(),
              "cpu_count": len(os.sched_getaffinity(0)), "git_commit": git_commit(ROOT), "images": source,
              "weights": "random-init (seed 0)", "forwards_per_variant": forwards,
              "wall_ms": {v: statistics.median(t) for v, t in wall.items()},
              "ort_alone_wall_ms": alone,
              "op_ms_per_forward": per_forward}
    path = out / "edge_profile.json"
    write_json_atomic(path, result)
    print(f"{result['model']} {args.threads} thread(s) on {result['cpu']} ({result['cpu_count']} usable): "
          "wall ms per forward (median, no profiler): "
          + ", ".join(f"{v} {ms:.1f}" for v, ms in result["wall_ms"].items()))
    print(f"ORT alone (before any PyTorch forward; pool {args.pool}): "
          + ", ".join(f"{v} {ms:.1f}" for v, ms in alone.items()))
    for v, table in per_forward.items():
        top = sorted(table.items(), key=lambda kv: -kv[1])[:args.top]
        print(f"{v:12s} profiled total {sum(table.values()):8.1f} ms: "
              + ", ".join(f"{op} {ms:.1f}" for op, ms in top))
    print(f"wrote {path}")
    return 0


def _edge_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_bench", ROOT / "benchmarks" / "edge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main())
