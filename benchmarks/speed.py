"""Wall-clock speed of MPM, ToMe and ALGM against the dense model and the slice oracle.

One run per device. Every row compares, in one process and interleaved
(:func:`mpm.benchmarking.timing.interleaved`: on the GPU a block of calls per variant
in turn; on the CPU the variants back to back on each image, in a rotating order),
three variants of the same model on the same images in the same execution mode:

* **dense**: no merging;
* **oracle**: a static slice of every image to the method's measured per-site
  token counts (:class:`mpm.benchmarking.bench.SliceOracle`): no similarity, no
  averaging, counts known on the host; the cost floor at those counts;
* **method**: the method itself, through :class:`mpm.models.segmenter.SegmenterRunner`.

Each ratio is reported with its median and spread (min, max) over the repeats;
a ratio whose spread crosses 1.0 is marked not significant (``*`` in the table).
``ideal`` is dense GFLOPs / method GFLOPs at the measured counts; ``share`` is
merge + unmerge time over the whole forward (CUDA events around those sections
in eager mode; under graphs, from graphs cut around them, whose cuts add their own
idle time and copies); ``kshare`` (CUDA) is merge + unmerge *kernel* time over all kernel
time of the forward, from a profiled pass of the uncut runner, markers inside its graphs
(:class:`mpm.benchmarking.timing.KernelSections`); each row's ``kernel_breakdown_ms.top``
lists the merge and unmerge sections' costliest kernels.

Weights are random (seed 0; no checkpoint can be downloaded on the GPU host):
the timings are real, the token counts are those of random weights, on
scikit-image's bundled photographs (``photos``) or on the synthetic demo set
(``synthetic``). Writes a JSON list (one object per row) and prints the table last.

    python benchmarks/speed.py --device cuda --out results/reference/h200/speed.json
    python benchmarks/speed.py --device cpu --out results/reference/cpu/speed.json
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # speed_table, beside this script

from mpm.benchmarking.bench import SliceOracle  # noqa: E402
from mpm.benchmarking.images import PHOTOS_SOURCE, load_batch_images  # noqa: E402
from mpm.benchmarking.timing import MarkerMismatch, SectionTimer, interleaved, profile_kernels, ratio_stats  # noqa: E402
from mpm.environment import cpu_model, describe_environment  # noqa: E402
from mpm.errors import DatasetError  # noqa: E402
from mpm.io import write_json_atomic  # noqa: E402
from mpm.merging import build_method  # noqa: E402
from mpm.merging.base import NoMerge  # noqa: E402
from mpm.models import SegmenterConfig, build_segmenter  # noqa: E402
from mpm.models.flops import FlopReport, flops_of_run  # noqa: E402
from speed_table import method_label  # noqa: E402

DEPTH = {"T": 12, "S": 12, "B": 12, "L": 24}
CROP = {"T": 512, "S": 512, "B": 512, "L": 640}
#: timed forwards per repeat and variant (a multiple of the image pool's batches), by (model, batch size)
ITERS = {("T", 32): 6, ("S", 32): 4, ("B", 32): 2, ("L", 32): 1}
#: images per pool: batch 32 -> ``--pool-batches`` batches of 32 distinct images; batch 1 -> this many single images
POOL_BATCH1 = 16
#: --speculate: the runner's option per row (None: its default, SegmenterRunner.speculates)
SPECULATE = {"default": (None,), "on": (True,), "off": (False,), "both": (False, True)}
POOL_CPU = 2


def methods_for(size: str) -> dict:
    """The compared methods at their published or customary settings (as benchmarks/h100_study.py)."""
    n = (CROP[size] // 16) ** 2
    depth = DEPTH[size]
    return {
        "mpm": build_method("mpm", (2, 5)),
        "tome": build_method("tome", tuple(range(depth)), r=max(1, round(n / (2.5 * depth)))),
        # ALGM's published layers (--selected-layers 1 5, ViT-L 1 7; 1-based), default threshold
        "algm": build_method("algm", (0, 4) if depth == 12 else (0, 6)),
    }


def image_pool(kind: str, count: int, crop: int, synthetic_dir: Path) -> tuple[torch.Tensor, dict, str]:
    if kind == "photos":
        pool, source = load_batch_images(PHOTOS_SOURCE, count, (crop, crop))
        return pool, source, "skimage-photos"
    folder = synthetic_dir / "ADEChallengeData2016" / "images" / "validation"
    if not folder.is_dir():
        from mpm.data.synthetic import generate

        generate(synthetic_dir, 0, 32, 512)
    pool, source = load_batch_images(folder, count, (crop, crop))
    return pool, source, "synthetic"


def gflops(model, batches, method, encs) -> float:
    reports = []
    for batch, enc in zip(batches, encs):
        reports.extend(flops_of_run(model, batch, method, enc, reduction="none"))
    return FlopReport.combine(reports, "mean").total


def breakdown(model, method, backend: str, mode: str, inputs, device, passes: int = 2,
              speculate: bool | None = None) -> tuple[dict, dict | None]:
    """Mean ms per forward of the sections (merge, unmerge, ...): elapsed (CUDA events; graphs cut around
    them under ``graphs``), and on CUDA also the sections' kernel time (:class:`KernelSections`, one
    profiled pass of a runner as the timed one: under graphs its markers are captured inside the same
    graphs, uncut), with the merge and unmerge sections' costliest kernels (``top``). Returns
    (elapsed, kernels or None)."""
    runner = model.runner(method, backend, mode, split=mode == "graphs", speculate=speculate)
    for i in range(len(inputs)):  # capture / warm up
        runner(inputs[i])
    sections = SectionTimer(device)
    for _ in range(passes):
        for x in inputs:
            runner(x, timer=sections)
            sections.calls += 1
    out, kernel_out = sections.breakdown(), None
    del runner
    _release(device)
    if device.type == "cuda":
        runner = model.runner(method, backend, mode, speculate=speculate)
        try:
            kernels = profile_kernels(lambda i, timer: runner(inputs[i], timer=timer), len(inputs), device)
            kernel_out = {**kernels.breakdown(),
                          "top": {s: kernels.top_kernels(s) for s in ("merge", "unmerge")}}
        except MarkerMismatch as err:  # the stream's markers did not match: no kernel share for this row
            print(f"speed.py: no kernel breakdown: {err}", file=sys.stderr)
        del runner
        _release(device)
    return out, kernel_out


def kernel_share(kernels: dict | None) -> float | None:
    """Merge + unmerge kernel time over all kernel time of the forward (None: not profiled, or no kernel
    fell inside the merge and unmerge sections)."""
    if not kernels or kernels["kernel_ms"] <= 0 or kernels["merge_ms"] + kernels["unmerge_ms"] <= 0:
        return None
    return (kernels["merge_ms"] + kernels["unmerge_ms"]) / kernels["kernel_ms"]


def run_group(model, size: str, images: str, pool_u8: torch.Tensor, source: dict, batch: int, backend: str,
              mode: str, method_names: list[str], device: torch.device, dtype: torch.dtype, repeats: int,
              extra: dict) -> list[dict]:
    """All rows of one (images, model, batch size, backend, mode): per method, dense, its oracle and the
    method timed interleaved. Only the dense runner outlives a method's row: every graphed runner holds
    its own memory pool (at Seg-L batch 32, 3.9 GB of logits alone), and seven at once overflow an H200."""
    inputs = [model.normalize(b.to(device=device, dtype=dtype)) for b in pool_u8.split(batch)]
    per_batch = -(-ITERS.get((size, batch), 1) // len(inputs)) if batch > 1 else 1  # about ITERS forwards a repeat
    iters = len(inputs) * per_batch
    methods = methods_for(size)
    rows = []
    with torch.inference_mode():
        dense = model.runner(NoMerge(), backend, mode)
        dense_encs = [dense(x, return_encoder=True)[1] for x in inputs]
        dense_gf = gflops(model, inputs, NoMerge(), dense_encs)
        del dense_encs
        for name in method_names:
            for speculate in extra["speculate_settings"]:
                rows.append(method_row(model, size, images, source, batch, backend, mode, name, methods[name],
                                       dense, dense_gf, inputs, iters, device, repeats,
                                       {**extra, "speculate": speculate}))
    del dense
    _release(device)
    return rows


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_method(model, method, dense, backend: str, mode: str, inputs: list[torch.Tensor], iters: int,
                device: torch.device, repeats: int, speculate: bool | None = None) -> dict:
    """Dense, the slice oracle at the method's own counts and the method, timed interleaved; the method's
    and the oracle's runners (and their graph pools) are freed on return. ``speculate``: the method's
    runner option (None: its default, :meth:`SegmenterRunner.speculates`)."""
    runner = model.runner(method, backend, mode, speculate=speculate)
    counts, encs = [], []
    for x in inputs:  # the method's own counts per batch (also captures its graphs)
        _, enc = runner(x, return_encoder=True)
        counts.append([t.tolist() for t in enc.tokens_left])
        encs.append(type(enc)(enc.tokens, enc.prefix, enc.grid, enc.index.clone(),
                              [t.clone() for t in enc.tokens_left]))
    method_gf = gflops(model, inputs, method, encs)
    del encs
    oracle = SliceOracle(method)
    orunner = model.runner(oracle, backend, mode)

    def run_oracle(i: int):
        oracle.counts = counts[i % len(inputs)]
        return orunner(inputs[i % len(inputs)])

    variants = {"dense": lambda i: dense(inputs[i % len(inputs)]), "oracle": run_oracle,
                "method": lambda i: runner(inputs[i % len(inputs)])}
    t0 = time.time()
    cpu_times: dict[str, list[float]] = {}
    times = interleaved(variants, device, iters, repeats, warmup=len(inputs), cpu_ms=cpu_times)
    pads = runner.pad_stats
    return {"counts": counts, "gflops": method_gf, "times": times, "cpu_times": cpu_times,
            "timing_s": time.time() - t0, "respeculated": runner.respeculated,
            "speculative": runner.speculates(inputs[0].shape[0]),
            "pad_share": (sum(c - r for r, c in pads) / sum(r for r, _ in pads)) if pads else 0.0,
            "graphs": runner._graphs.num_graphs if runner._graphs is not None else 0}


def method_row(model, size: str, images: str, source: dict, batch: int, backend: str, mode: str, name: str,
               method, dense, dense_gf: float, inputs: list[torch.Tensor], iters: int, device: torch.device,
               repeats: int, extra: dict) -> dict:
    """One row: :func:`time_method`, then the merge/unmerge breakdown once the timed runners are freed."""
    timed = time_method(model, method, dense, backend, mode, inputs, iters, device, repeats,
                        speculate=extra.get("speculate"))
    _release(device)
    times, counts, cpu_times = timed["times"], timed["counts"], timed["cpu_times"]
    bd, kernels = breakdown(model, method, backend, mode, inputs, device, speculate=extra.get("speculate"))
    total = sum(v for v in bd.values() if v is not None)
    share = (bd["merge_ms"] + bd["unmerge_ms"]) / total if total > 0 else None
    med = {k: statistics.median(v) for k, v in times.items()}
    speed, ospeed, vs_oracle = three_ratios(times)
    per_site = [statistics.fmean(c for batch_counts in counts for c in batch_counts[k])
                for k in range(len(counts[0]))] if counts and counts[0] else []
    return {
        "model": f"Seg-{size}/16", "method": name, "batch_size": batch,
        "backend": backend, "mode": mode, "device": extra["device"], "images": images,
        "dense_img_s": 1000.0 * batch / med["dense"],
        "oracle_img_s": 1000.0 * batch / med["oracle"],
        "method_img_s": 1000.0 * batch / med["method"],
        "speedup": speed.median, "oracle_speedup": ospeed.median,
        "ideal_speedup": dense_gf / timed["gflops"],
        "merge_unmerge_share": share, "merge_unmerge_kernel_share": kernel_share(kernels),
        "speedup_range": [speed.low, speed.high], "speedup_significant": speed.significant,
        "oracle_speedup_range": [ospeed.low, ospeed.high], "oracle_speedup_significant": ospeed.significant,
        "vs_oracle": vs_oracle.median, "vs_oracle_range": [vs_oracle.low, vs_oracle.high],
        "dense_ms": med["dense"], "oracle_ms": med["oracle"], "method_ms": med["method"],
        "repeat_ms": times,
        **(_cpu_time_ratios(cpu_times) if cpu_times else {}),
        "breakdown_ms": bd, "kernel_breakdown_ms": kernels, "pad_share": timed["pad_share"], "graphs": timed["graphs"],
        "speculative": timed["speculative"], "respeculated": timed["respeculated"],
        "crop": CROP[size], "tokens_full": (CROP[size] // 16) ** 2, "tokens_after_site": per_site,
        "dense_gflops": dense_gf, "method_gflops": timed["gflops"],
        "method_config": method.describe(), "weights": "random-init (seed 0)",
        "image_source": source, "repeats": repeats, "iters": iters, "timing_s": timed["timing_s"],
        **{k: v for k, v in extra.items() if k != "speculate_settings"},
    }


def three_ratios(ms: dict[str, list[float]]) -> tuple:
    """Speedup (dense / method), oracle speedup (dense / oracle) and method over oracle (oracle / method)
    of one interleaving's per-repeat times, each a :class:`~mpm.ratios.Ratio`."""
    return (ratio_stats(ms["dense"], ms["method"]), ratio_stats(ms["dense"], ms["oracle"]),
            ratio_stats(ms["oracle"], ms["method"]))


def _cpu_time_ratios(cpu_ms: dict[str, list[float]]) -> dict:
    """Process-CPU-time ratios (CPU rows): what the forward costs in CPU work, robust to other processes."""
    speed, ospeed, vs = three_ratios(cpu_ms)
    return {"cpu_time_speedup": speed.to_dict(), "cpu_time_oracle_speedup": ospeed.to_dict(),
            "cpu_time_vs_oracle": vs.to_dict(), "repeat_cpu_ms": cpu_ms}


def fmt_ratio(value: float, rng: list[float], significant: bool) -> str:
    return f"{value:.2f}{'' if significant else '*'} [{rng[0]:.2f},{rng[1]:.2f}]"


def print_table(rows: list[dict]) -> None:
    print("\n" + "speedups over dense, same run and mode: median [min,max] over repeats; * = spread crosses 1.0 "
          "(not significant); share = merge+unmerge of the forward (kshare: of its kernel time); pad = capacity rows over real rows; "
          "+s = speculative capacities")
    head = (f"{'images':8s} {'model':9s} {'bs':>3s} {'backend':7s} {'mode':6s} {'thr':>3s} {'method':6s} "
            f"{'dense/s':>8s} {'oracle/s':>8s} {'method/s':>8s} {'speedup':>20s} {'oracle':>20s} {'ideal':>5s} "
            f"{'m/orc':>5s} {'share':>5s} {'kshare':>6s} {'pad':>5s}")
    print(head)
    for r in rows:
        share = f"{r['merge_unmerge_share']:.3f}" if r["merge_unmerge_share"] is not None else "  -  "
        kshare = r.get("merge_unmerge_kernel_share")
        kshare = f"{kshare:6.3f}" if kshare is not None else "   -  "
        print(f"{r['images'][:8]:8s} {r['model']:9s} {r['batch_size']:3d} {r['backend']:7s} {r['mode']:6s} "
              f"{r.get('threads') or '-':>3} {method_label(r):6s} {r['dense_img_s']:8.1f} {r['oracle_img_s']:8.1f} "
              f"{r['method_img_s']:8.1f} {fmt_ratio(r['speedup'], r['speedup_range'], r['speedup_significant']):>20s} "
              f"{fmt_ratio(r['oracle_speedup'], r['oracle_speedup_range'], r['oracle_speedup_significant']):>20s} "
              f"{r['ideal_speedup']:5.2f} {r['vs_oracle']:5.2f} {share} {kshare} {r['pad_share']:5.3f}")
        if "cpu_time_speedup" in r:
            c, o, v = r["cpu_time_speedup"], r["cpu_time_oracle_speedup"], r["cpu_time_vs_oracle"]
            print(f"{'':8s} {'':9s} {'':3s} {'':7s} {'cpu-t':6s} {'':3s} {'':6s} {'':8s} {'':8s} {'':8s} "
                  f"{fmt_ratio(c['median'], [c['low'], c['high']], c['significant']):>20s} "
                  f"{fmt_ratio(o['median'], [o['low'], o['high']], o['significant']):>20s} {'':5s} "
                  f"{v['median']:5.2f}")


def keep_freed_memory() -> bool:
    """glibc: serve large blocks from the heap and never trim it, so the (1, 150, 512, 512) logits
    and other large buffers are reused instead of being mapped and page-faulted in again each forward
    (on the shared 2-core machine a fresh 157 MB buffer took up to 1.2 s). Same for every variant."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 30) and libc.mallopt(-1, (1 << 31) - 1))  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--out", required=True, help="JSON list of rows (written when the run is complete)")
    ap.add_argument("--models", default=None, help="default T,S,B,L (cuda) / T,S (cpu)")
    ap.add_argument("--batches", default=None, help="default 32,1 (cuda) / 1 (cpu)")
    ap.add_argument("--backends", default=None, help="default fa2,math (cuda) / math (cpu)")
    ap.add_argument("--batch1-backends", default="fa2", help="backends timed at batch 1 (default fa2)")
    ap.add_argument("--modes", default=None, help="default eager,graphs (cuda) / eager (cpu)")
    ap.add_argument("--methods", default=None, help="default mpm,tome,algm (cuda) / mpm (cpu)")
    ap.add_argument("--images", default="photos,synthetic", help="photos and/or synthetic")
    ap.add_argument("--synthetic-methods", default="mpm", help="methods timed on the synthetic set too")
    ap.add_argument("--synthetic-batches", default="32", help="batch sizes timed on the synthetic set")
    ap.add_argument("--synthetic-dir", default=None, help="synthetic set root (generated if missing)")
    ap.add_argument("--threads", default="1,4", help="cpu: torch threads per row")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--speculate", default="default", choices=tuple(SPECULATE),
                    help="the method runner's speculative capacities (no host read of the counts inside a forward): "
                         "its default (packed batches > 1, batch 1 under graphs), on or off everywhere, or both "
                         "(two rows per method)")
    ap.add_argument("--pool-batches", type=int, default=1,
                    help="distinct batches of batch size > 1 in the image pool (photos: at most 2 at batch 32); "
                         "with more than one, a speculative capacity must hold every batch's counts")
    ap.add_argument("--crop", type=int, default=None,
                    help="image side in pixels for every model (a multiple of 16; default 512, Seg-L 640)")
    args = ap.parse_args()
    if args.crop is not None:
        if args.crop < 32 or args.crop % 16:
            print(f"speed.py: --crop must be a multiple of 16 of at least 32, got {args.crop}", file=sys.stderr)
            return 2
        CROP.update({size: args.crop for size in CROP})
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("speed.py: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    models = (args.models or ("T,S,B,L" if cuda else "T,S")).split(",")
    batches = [int(b) for b in (args.batches or ("32,1" if cuda else "1")).split(",")]
    backends = (args.backends or ("fa2,math" if cuda else "math")).split(",")
    modes = (args.modes or ("eager,graphs" if cuda else "eager")).split(",")
    methods = (args.methods or ("mpm,tome,algm" if cuda else "mpm")).split(",")
    image_kinds = args.images.split(",")
    threads = [int(t) for t in args.threads.split(",")] if not cuda else [None]
    device = torch.device(args.device)
    dtype = torch.float16 if cuda else torch.float32
    malloc_kept = keep_freed_memory() if not cuda else None
    synth = Path(args.synthetic_dir or Path(tempfile.gettempdir()) / "mpm-speed-synth")
    env = describe_environment(device, None, str(dtype).removeprefix("torch."))
    env["git_commit"] = env.get("git_commit") or os.environ.get("MPM_GIT_COMMIT")
    if cuda:  # which merge kernels ran (A/B runs switch them by environment variable)
        from mpm.merging import triton_kernels as tk

        env["merge_kernels"] = {"triton": tk.enabled, "fused_best_partner": tk.fused_best_partner,
                                "symmetric_best_partner": tk.symmetric_best_partner,
                                "one_launch_plan": tk.one_launch_plan}
        from mpm.models import segmenter

        env["fuse_speculative"] = segmenter.FUSE_SPECULATIVE
    # groups in order of priority (a run cut short keeps the most important rows):
    # real photos first, FA2 before math, batch 32 before batch 1, eager before graphs
    groups = []
    for kind in image_kinds:
        for batch in batches:
            if kind == "synthetic" and str(batch) not in args.synthetic_batches.split(","):
                continue
            for backend in backends:
                if batch == 1 and cuda and backend not in args.batch1_backends.split(","):
                    continue
                for size in models:
                    for mode in modes:
                        for thr in threads:
                            names = [m for m in methods if kind == "photos" or m in args.synthetic_methods.split(",")]
                            groups.append((kind, batch, backend, size, mode, thr, names))
    order = {"photos": 0, "synthetic": 1}
    groups.sort(key=lambda g: (order[g[0]], g[2] != "fa2", g[1] == 1, models.index(g[3]), modes.index(g[4])))
    if args.pool_batches < 1:
        print(f"speed.py: --pool-batches must be at least 1, got {args.pool_batches}", file=sys.stderr)
        return 2
    def pool_size(batch: int) -> int:
        return batch * args.pool_batches if batch > 1 else (POOL_BATCH1 if cuda else POOL_CPU)

    pools: dict[tuple, tuple] = {}
    for kind, batch, _, size, *_ in groups:  # every image pool before any timing (a bad source fails here)
        count = pool_size(batch)
        if (kind, count, CROP[size]) not in pools:
            try:
                pools[(kind, count, CROP[size])] = image_pool(kind, count, CROP[size], synth)
            except DatasetError as err:
                print(f"speed.py: {kind} images for batch {batch} x {args.pool_batches}: {err}", file=sys.stderr)
                return 2
    rows: list[dict] = []
    t_start = time.time()
    built: dict[str, torch.nn.Module] = {}
    for kind, batch, backend, size, mode, thr, names in groups:
        if size not in built:
            torch.manual_seed(0)
            config = SegmenterConfig.preset(size, 150, image_size=(CROP[size], CROP[size]))
            built[size] = build_segmenter(config).to(device=device, dtype=dtype).eval()
        model = built[size]
        pool, source, label = pools[(kind, pool_size(batch), CROP[size])]
        if thr:
            torch.set_num_threads(thr)
        extra = {"device": env["device_name"] if cuda else "cpu", "device_name": env["device_name"],
                 "cpu": cpu_model(), "threads": thr, "dtype": str(dtype).removeprefix("torch."),
                 "torch": torch.__version__, "git_commit": env["git_commit"], "cpu_count": os.cpu_count(),
                 "malloc_keep_freed": malloc_kept, "speculate_settings": SPECULATE[args.speculate],
                 **({"merge_kernels": env["merge_kernels"], "fuse_speculative": env["fuse_speculative"]}
                    if cuda else {})}
        t0 = time.time()
        group = run_group(model, size, label, pool, source, batch, backend, mode, names, device, dtype,
                          args.repeats, extra)
        rows.extend(group)
        print(f"[{time.time() - t_start:6.0f}s] {label} Seg-{size} bs{batch} {backend} {mode} thr={thr}: "
              f"{time.time() - t0:.1f}s  " + "  ".join(
                  f"{method_label(r)} {r['speedup']:.2f} (oracle {r['oracle_speedup']:.2f}, m/o {r['vs_oracle']:.2f}, "
                  f"share {r['merge_unmerge_share'] or 0:.3f})" for r in group), flush=True)
        write_json_atomic(out.with_name(out.stem + ".partial.json"), rows)  # a failure loses nothing
    write_json_atomic(out, rows)
    out.with_name(out.stem + ".partial.json").unlink(missing_ok=True)
    print_table(rows)
    print(f"\n{len(rows)} rows in {time.time() - t_start:.0f}s -> {out}; device {env['device_name']}, "
          f"torch {torch.__version__}, commit {env['git_commit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
