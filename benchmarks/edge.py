"""Edge-runtime study: MPM in ONNX Runtime beside PyTorch on a CPU, batch 1, fp32.

For each model (default Seg-T/16 and Seg-S/16 at 512 px) and thread count (default 1
and 4), six variants are timed *interleaved in one process*: dense, oracle and
MPM(2,5), each in PyTorch and in ONNX Runtime (the dense model as one graph, MPM as
segments between its merge sites: ``mpm.benchmarking.onnx_export``). The oracle is
MPM's own token counts at zero merge cost (a slice where MPM merges, same segments;
``mpm.benchmarking.oracle``). Every variant first runs ``--warmup`` untimed forwards;
then each round makes ``--iters`` passes over the images, and on each image runs every
variant once, back to back, in an order that rotates from image to image (a slow
spell of a shared machine then hits the variants alike); a round's time is the mean
over its forwards, each ratio the median of its per-round ratios, its spread the per-round minimum and
maximum, and a ratio whose spread contains 1.0 is marked not significant.

Before timing, ONNX Runtime is checked against PyTorch on every image: the merge maps
(``maps_equal``) and the logits (``max_abs_diff_vs_torch``). Each thread count runs in
its own process (ORT's shared thread pool is sized once per process), fed by one export.

Weights are random-initialised (seed 0, 150 classes) unless ``--checkpoint``; images
are the synthetic demo set's generator (``mpm.data.synthetic``) unless ``--images``
(``photos``: scikit-image's bundled photographs, flipped and cropped; or a folder):
token counts are those of these weights on these images, not the paper's.
``--int8`` adds ONNX Runtime's dynamic int8 quantisation (weights of the MatMul/Gemm
of segments, dense graph and decoder; the score graphs stay fp32) as a further
runtime, beyond the paper. Every ORT graph has its plain attention fused into ORT's
``MultiHeadAttention`` (the dense graph's too); ``--unfused`` adds a runtime with the
attention as exported, to measure what the fusion gives.

Writes ``DIR/edge.json`` atomically (rows of other machines already in it are kept),
and prints a table. Needs torch, timm, numpy, pillow, onnx, onnxruntime and this
source tree only:

    python benchmarks/edge.py --out DIR [--models T,S] [--threads 1,4] [--rounds 5] [--iters 1] [--int8] [--unfused]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEMA = "mpm.edge/1"
MODEL_NAMES = {"T": "Seg-T/16", "S": "Seg-S/16", "B": "Seg-B/16", "L": "Seg-L/16"}
VARIANTS = ("dense", "oracle", "method")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for edge.json (created)")
    ap.add_argument("--models", default="T,S", help="ViT sizes, comma-separated (default T,S)")
    ap.add_argument("--threads", default="1,4", help="thread counts, comma-separated (default 1,4)")
    ap.add_argument("--crop", type=int, default=512, help="square input side in pixels (default 512)")
    ap.add_argument("--schedule", default="2,5", help="MPM schedule (default 2,5)")
    ap.add_argument("--num-classes", type=int, default=150, help="classes of the random-init model (150)")
    ap.add_argument("--checkpoint", default=None, help="a Segmenter checkpoint instead of random weights "
                                                        "(then --models must name its size)")
    ap.add_argument("--images", default=None,
                    help="'photos' (scikit-image's photographs) or an image folder (default: synthetic, generated)")
    ap.add_argument("--num-images", type=int, default=4, help="distinct images cycled through (default 4)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--iters", type=int, default=1,
                    help="timed passes over every image per variant per round (default 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards per variant before the rounds (default 1)")
    ap.add_argument("--backend", default="math", choices=("math", "sdpa"),
                    help="attention of the PyTorch variants and of the export (default math)")
    ap.add_argument("--int8", action="store_true", help="also time ORT dynamic int8 quantisation (beyond the paper)")
    ap.add_argument("--unfused", action="store_true",
                    help="also time ORT with the attention as exported, not fused into MultiHeadAttention")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return args
    try:
        args.model_list = [m.strip().upper() for m in args.models.split(",") if m.strip()]
        args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
        args.schedule_list = [int(b) for b in args.schedule.split(",") if b.strip()]
    except ValueError as err:
        ap.error(f"--threads/--schedule: {err}")
    bad = [m for m in args.model_list if m not in MODEL_NAMES]
    if bad or not args.model_list:
        ap.error(f"--models: unknown size(s) {bad}; expected some of {', '.join(MODEL_NAMES)}")
    if not args.thread_list or min(args.thread_list) < 1:
        ap.error("--threads: give thread counts >= 1")
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (a spread needs rounds)")
    if args.iters < 1 or args.warmup < 0 or args.num_images < 1 or args.crop % 16:
        ap.error("--iters >= 1, --warmup >= 0, --num-images >= 1 and --crop a multiple of 16, please")
    if args.checkpoint and len(args.model_list) != 1:
        ap.error("--checkpoint: name its one size with --models")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        ap.error(f"--checkpoint {args.checkpoint}: no such file")
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        ap.error(f"needs the {' and '.join(missing)} package(s): pip install onnx onnxruntime")
    return args


# --------------------------------------------------------------------------- #
# statistics
# --------------------------------------------------------------------------- #


def ratio_stats(num: list[float], den: list[float]) -> dict:
    """Median of the per-round ratios ``num / den``, their min-max spread, and whether it excludes 1
    (:func:`mpm.benchmarking.timing.ratio_stats`), with the per-round ratios."""
    from mpm.benchmarking.timing import ratio_stats as ratio

    r = ratio(num, den)
    return {"median": r.median, "spread": [r.low, r.high], "significant": r.significant,
            "per_round": [a / b for a, b in zip(num, den)]}


# --------------------------------------------------------------------------- #
# parent: images, export, one worker per thread count, edge.json
# --------------------------------------------------------------------------- #


def images_label(images: str | None) -> str:
    """The rows' ``images``: ``synthetic``, ``skimage-photos`` or the folder given."""
    if not images:
        return "synthetic"
    return "skimage-photos" if images in ("photos", "skimage:photos") else str(images)


def make_images(args, crop: int):
    """(n, 3, crop, crop) uint8 tensor and a description of where the images came from."""
    import numpy as np
    import torch

    if args.images:
        from mpm.benchmarking.images import PHOTOS_SOURCE, load_batch_images

        source = PHOTOS_SOURCE if args.images == "photos" else args.images
        return load_batch_images(source, args.num_images, (crop, crop))
    from mpm.data.synthetic import make_sample

    rng = np.random.default_rng(args.seed)
    arrays = [make_sample(rng, crop, crop)[0] for _ in range(args.num_images)]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return batch, {"source": "synthetic (mpm.data.synthetic.make_sample)", "seed": args.seed,
                   "images_used": args.num_images, "crop": [crop, crop]}


def build(size: str, args):
    """The model of one size (random-init with the seed, or the checkpoint)."""
    import torch

    from mpm.models import SegmenterConfig, build_segmenter

    if args.checkpoint:
        from mpm.models.checkpoints import load_segmenter

        return load_segmenter(args.checkpoint).float().eval(), {"weights": "checkpoint", "checkpoint": args.checkpoint}
    torch.manual_seed(args.seed)
    config = SegmenterConfig.preset(size, args.num_classes, image_size=(args.crop, args.crop))
    return build_segmenter(config).float().eval(), {"weights": "random-init", "seed": args.seed}


def quantize_folder(src: Path, dst: Path) -> None:
    """Dynamic int8 copies of the dense graph, the segments and the decoder; score graphs copied as they are."""
    import logging
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, once per graph

    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.name.startswith(("segment", "decoder", "dense")) and path.suffix == ".onnx":
            quantize_dynamic(str(path), str(dst / path.name), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"],
                             # shape inference stops at ORT's MultiHeadAttention: its outputs are float32
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        else:
            shutil.copy(path, dst / path.name)


def export_all(args, work: Path) -> dict:
    import torch

    from mpm.benchmarking.onnx_export import export_dense, export_segments
    from mpm.merging import build_method

    images, source = make_images(args, args.crop)
    torch.save(images, work / "images.pt")
    info = {"image_source": source, "models": {}}
    for size in args.model_list:
        model, weights = build(size, args)
        example = model.normalize(images[:1].float())
        folder = work / size
        t0 = time.perf_counter()
        export_segments(model, build_method("mpm", args.schedule_list), example, folder, args.backend)
        export_dense(model, example, folder / "dense.onnx", args.backend)
        export_s = time.perf_counter() - t0
        if args.int8:
            quantize_folder(folder, work / f"{size}-int8")
        if args.unfused:  # the same graphs with their attention as exported (no MultiHeadAttention)
            export_segments(model, build_method("mpm", args.schedule_list), example, work / f"{size}-unfused",
                            args.backend, fuse=False)
            export_dense(model, example, work / f"{size}-unfused" / "dense.onnx", args.backend, fuse=False)
        info["models"][size] = {"weights": weights, "export_s": round(export_s, 1)}
        print(f"[edge] exported {MODEL_NAMES[size]} ({export_s:.1f} s)", file=sys.stderr, flush=True)
    return info


def machine() -> dict:
    from mpm.environment import cpu_model, git_commit, package_version

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu_model(), "cpu_count": usable, "machine": platform.machine(), "hostname": platform.node(),
            "python": platform.python_version(), "torch": package_version("torch"), "timm": package_version("timm"),
            "numpy": package_version("numpy"), "onnx": package_version("onnx"),
            "onnxruntime": package_version("onnxruntime"), "git_commit": git_commit(ROOT)}


def run_workers(args, work: Path) -> list[dict]:
    rows: list[dict] = []
    for threads in args.thread_list:
        job = work / f"worker{threads}.json"
        out = work / f"rows{threads}.json"
        job.write_text(json.dumps({**{k: v for k, v in vars(args).items() if k != "worker"}, "work": str(work),
                                   "threads_now": threads, "rows_out": str(out)}))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--out", args.out, "--worker",
                               str(job)], env=env)
        if done.returncode != 0:
            raise SystemExit(f"edge.py: the worker for {threads} thread(s) failed (exit {done.returncode}); "
                             f"{Path(args.out) / 'edge.json'} is unchanged")
        rows.extend(json.loads(out.read_text()))
    return rows


def row_key(row: dict) -> tuple:
    return (row["cpu"], row.get("cpu_count"), row.get("images", "synthetic"), row["runtime"], row["model"],
            row["method"], row["threads"])


def run_id(machine_info: dict, started_utc: str) -> str:
    """The name a run's rows give it: ``<cpu> @ <commit>, <start time>``."""
    return f"{machine_info.get('cpu')} @ {str(machine_info.get('git_commit'))[:12]}, {started_utc}"


def merge_rows(old: dict | None, rows: list[dict], run: dict) -> dict:
    """The edge.json of ``old`` (or nothing) with ``rows`` added: earlier rows with the same
    (cpu, cpu_count, images, runtime, model, method, threads) are replaced, the others kept.
    Every row names its run (``run``, the run's ``id``); a run no row names any more is dropped."""
    new_keys = {row_key(r) for r in rows}
    kept = [r for r in (old or {}).get("rows", []) if row_key(r) not in new_keys]
    named = {r.get("run") for r in kept + rows}
    runs = [r for r in (old or {}).get("runs", []) if r.get("id") in named]
    return {
        "schema": SCHEMA,
        "description": "Batch 1, fp32 (and an optional int8 runtime), CPU: dense / oracle (the method's token counts "
                       "at zero merge cost) / method, in PyTorch and ONNX Runtime, timed interleaved in one process "
                       "(every variant back to back on each image, in a rotating order; a round = one pass over "
                       "the images); ratios are medians of per-round ratios, spread = [min, max] over rounds, "
                       "significant = the spread excludes 1.0; ideal_speedup = dense GFLOPs / method GFLOPs at the "
                       "measured counts. Produced by benchmarks/edge.py (see runs[].command).",
        "rows": kept + rows,
        "runs": [*runs, run],
    }


def read_existing(path: Path) -> dict | None:
    """An edge.json already at ``path`` (its rows of other machines are kept), checked before any work."""
    if not path.exists():
        return None
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict) or old.get("schema") != SCHEMA or not isinstance(old.get("rows"), list):
            raise ValueError(f"no {SCHEMA} object with rows")
    except (OSError, ValueError) as err:
        raise SystemExit(f"edge.py: {path} exists but is not an edge.json ({err}); move it away first")
    return old


def write_result(args, old: dict | None, rows: list[dict], info: dict, started: float) -> Path:
    from mpm.io import write_json_atomic

    path = Path(args.out) / "edge.json"
    machine_info = machine()
    started_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.perf_counter() - started)))
    run = {"id": run_id(machine_info, started_utc), "command": "python benchmarks/edge.py " + " ".join(sys.argv[1:]),
           "machine": machine_info,
           "image_source": info["image_source"], "models": info["models"], "rounds": args.rounds,
           "iters": args.iters, "warmup": args.warmup, "wall_s": round(time.perf_counter() - started, 1)}
    rows = [{**r, "run": run["id"]} for r in rows]
    write_json_atomic(path, merge_rows(old, rows, run))
    return path


def print_table(rows: list[dict]) -> None:
    """One line per row: times (ms), speedup and oracle speedup with their spreads, FLOP-ideal,
    method / oracle, ORT-over-PyTorch for the method, and the checks against PyTorch."""
    print(f"{'cpu':24s} {'images':8s} {'runtime':19s} {'model':9s} {'thr':>3s} {'dense':>7s} {'oracle':>7s} "
          f"{'method':>7s} {'merge':>6s} {'speedup':>17s} {'oracle':>17s} {'ideal':>5s} {'m/o':>5s} {'vs pt':>5s} {'maps':>5s} "
          f"{'diff':>8s}")
    mark = lambda sig: " " if sig else "*"  # noqa: E731
    for r in rows:
        sp, osp = r["spread"]["speedup"], r["spread"]["oracle_speedup"]
        vs = r.get("vs_torch", {}).get("method", {}).get("ratio")
        diff = r["max_abs_diff_vs_torch"]
        merge = r.get("sections_ms", {}).get("merge_ms")
        print(f"{r['cpu'][:24]:24s} {r.get('images', 'synthetic')[:8]:8s} {r['runtime']:19s} {r['model']:9s} "
              f"{r['threads']:3d} {r['dense_ms']:7.1f} {r['oracle_ms']:7.1f} {r['method_ms']:7.1f} "
              f"{'-' if merge is None else f'{merge:.1f}':>6s} {r['speedup']:5.2f} [{sp[0]:.2f},{sp[1]:.2f}]{mark(r['significant']['speedup'])} "
              f"{r['oracle_speedup']:5.2f} [{osp[0]:.2f},{osp[1]:.2f}]{mark(r['significant']['oracle_speedup'])} "
              f"{r['ideal_speedup']:5.2f} {r['speedup_over_oracle_speedup']:5.2f} "
              f"{'-' if vs is None else f'{vs:.2f}':>5s} {maps_label(r):>5s} "
              f"{'-' if diff is None else f'{diff:.1e}':>8s}")
    print("(* = spread contains 1.0: not significant; merge = ORT MPM's merge sites (score graph + NumPy step), "
          "ms per forward, timed after the rounds; m/o = oracle ms / method ms; "
          "vs pt = PyTorch method ms / this runtime's; maps = images whose merge maps equal PyTorch's)")
    for r in rows:
        for i, same in enumerate(r.get("maps_equal_per_image") or []):
            if not same:
                print(f"  {r['runtime']} {r['model']} {r['threads']} thr, image {i}: maps differ; smallest "
                      "best/second-best cosine gap per site in PyTorch: "
                      + ", ".join(f"{m:.1e}" for m in r["partner_margins"][i]))


def maps_label(row: dict) -> str:
    """``equal/images`` for a runtime's merge maps against PyTorch's, ``-`` for PyTorch itself."""
    per_image = row.get("maps_equal_per_image")
    return "-" if per_image is None else f"{sum(per_image)}/{len(per_image)}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(Path(args.worker).read_text()))
    out = Path(args.out)
    try:  # check the output before the long work
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".edge-check-"):
            pass
    except OSError as err:
        raise SystemExit(f"edge.py: --out {out}: not writable: {err.strerror or err}")
    old = read_existing(out / "edge.json")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mpm-edge-") as tmp:
        work = Path(tmp)
        info = export_all(args, work)
        rows = run_workers(args, work)
    path = write_result(args, old, rows, info, started)
    print_table(rows)
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0


# --------------------------------------------------------------------------- #
# worker: one thread count, every model, interleaved rounds
# --------------------------------------------------------------------------- #


def worker(job: dict) -> int:
    import numpy as np
    import torch

    from mpm.benchmarking.onnx_runtime import Graph, SegmentedModel, session_options, shared_thread_pool
    from mpm.benchmarking.margins import site_margins
    from mpm.benchmarking.oracle import SliceOracle
    from mpm.benchmarking.timing import SectionTimer, interleaved
    from mpm.merging import build_method
    from mpm.models.flops import flops_of_run

    threads = int(job["threads_now"])
    torch.set_num_threads(threads)
    shared = shared_thread_pool(threads)
    args = argparse.Namespace(**job)
    work = Path(job["work"])
    images = torch.load(work / "images.pt")
    env = machine()
    rows: list[dict] = []
    for size in job["model_list"]:
        model, _ = build(size, args)
        method = build_method("mpm", job["schedule_list"])
        oracle = SliceOracle(method)
        inputs = [model.normalize(images[i:i + 1].float()) for i in range(images.shape[0])]
        arrays = [np.ascontiguousarray(x.numpy()) for x in inputs]
        with torch.inference_mode():
            ref = [model(x, method=method, backend=job["backend"], return_encoder=True) for x in inputs]
            ref_dense = [model(x, backend=job["backend"]) for x in inputs]
        counts = [[int(t[0]) for t in enc.tokens_left] for _, enc in ref]
        # per image and site, the smallest best / second-best cosine gap: where the maps of two
        # runtimes differ, a gap below their rounding difference (~1e-6) says it is a tie flipped
        margins = [site_margins(model, x, job["schedule_list"], job["backend"]) for x in inputs]
        dense_gf = flops_of_run(model, (job["crop"], job["crop"]), None, []).total
        runtimes = {"onnxruntime": work / size}
        if job["int8"]:
            runtimes["onnxruntime-int8"] = work / f"{size}-int8"
        if job["unfused"]:
            runtimes["onnxruntime-unfused"] = work / f"{size}-unfused"
        variants: dict[tuple[str, str], object] = {}

        def torch_variant(kind):
            def run(i):
                with torch.inference_mode():
                    if kind == "dense":
                        return model(inputs[i], backend=job["backend"])
                    if kind == "oracle":
                        return model(inputs[i], method=oracle, backend=job["backend"])
                    return model(inputs[i], method=method, backend=job["backend"])
            return run

        for kind in VARIANTS:
            variants[("torch", kind)] = torch_variant(kind)
        checks: dict[str, dict] = {}
        seg_models: dict[str, SegmentedModel] = {}
        for name, folder in runtimes.items():
            options = session_options(threads, shared=shared)
            dense = Graph(folder / "dense.onnx", options, ["CPUExecutionProvider"])
            seg = seg_models[name] = SegmentedModel.load(folder, threads=threads)
            outs = [seg(a) for a in arrays]
            per_image = [bool(np.array_equal(o.index, enc.index.numpy())) for o, (_, enc) in zip(outs, ref)]
            maps_equal = all(per_image)
            diff = max(float(np.abs(o.logits - r.numpy()).max()) for o, (r, _) in zip(outs, ref))
            dense_diff = max(float(np.abs(dense(images=a)["logits"] - r.numpy()).max())
                             for a, r in zip(arrays, ref_dense))
            agree = float(np.mean([np.mean(o.logits.argmax(1) == r.numpy().argmax(1)) for o, (r, _) in zip(outs, ref)]))
            ort_counts = [[int(t[0]) for t in o.tokens_left] for o in outs]
            checks[name] = {"maps_equal": maps_equal, "maps_equal_per_image": per_image,
                            "max_abs_diff_vs_torch": diff,
                            "dense_max_abs_diff_vs_torch": dense_diff, "argmax_agreement_vs_torch": agree,
                            "tokens_left": ort_counts, "thread_pool": seg.thread_pool}
            # the oracle keeps the ORT run's own counts (equal to PyTorch's when the maps are)
            variants[(name, "dense")] = (lambda d: lambda i: d(images=arrays[i]))(dense)
            variants[(name, "oracle")] = (lambda s, o: lambda i: s.oracle(arrays[i], o[i].tokens_left, o[i].index))(
                seg, outs)
            variants[(name, "method")] = (lambda s: lambda i: s(arrays[i]))(seg)

        n_img = len(arrays)

        def on_image(run):  # call i: image i mod n, the PyTorch oracle at that image's counts
            def call(i):
                oracle.set_counts(counts[i % n_img])
                return run(i % n_img)
            return call

        t_start = time.perf_counter()

        def progress(rnd: int) -> None:
            print(f"[edge] {MODEL_NAMES[size]} threads={threads} round {rnd + 1}/{job['rounds']} "
                  f"({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)

        # per round: every image, every variant back to back on it, the order rotating (per-round means)
        times = interleaved({k: on_image(v) for k, v in variants.items()}, torch.device("cpu"),
                            iters=job["iters"] * n_img, repeats=job["rounds"], warmup=job["warmup"],
                            per_call=True, on_round=progress)

        # after the timed rounds: ORT MPM's own sections (segments, merge sites = score graph + NumPy step,
        # decoder), mean ms per forward over two passes of the images
        sections: dict[str, dict] = {}
        for name in runtimes:
            timer = SectionTimer(torch.device("cpu"))
            for _ in range(2):
                for a in arrays:
                    seg_models[name](a, timer)
                    timer.calls += 1
            sections[name] = {f"{k}_ms": v / timer.calls for k, v in sorted(timer.totals.items())}

        method_name = f"mpm({','.join(map(str, job['schedule_list']))})"
        for name in ("torch", *runtimes):
            t = {v: times[(name, v)] for v in VARIANTS}
            speed = ratio_stats(t["dense"], t["method"])
            osp = ratio_stats(t["dense"], t["oracle"])
            of_oracle = ratio_stats(t["oracle"], t["method"])
            run_counts = counts if name == "torch" else checks[name]["tokens_left"]
            method_gf = statistics.fmean(flops_of_run(model, (job["crop"], job["crop"]), method, c).total
                                         for c in run_counts)
            row = {
                "runtime": name,
                "model": MODEL_NAMES[size],
                "method": method_name,
                "threads": threads,
                "cpu": env["cpu"],
                "cpu_count": env["cpu_count"],
                "machine": env["machine"],
                "images": images_label(job.get("images")),
                "dense_ms": statistics.median(t["dense"]),
                "oracle_ms": statistics.median(t["oracle"]),
                "method_ms": statistics.median(t["method"]),
                "speedup": speed["median"],
                "oracle_speedup": osp["median"],
                "spread": {"speedup": speed["spread"], "oracle_speedup": osp["spread"],
                           "speedup_over_oracle_speedup": of_oracle["spread"]},
                "significant": {"speedup": speed["significant"], "oracle_speedup": osp["significant"]},
                "ideal_speedup": dense_gf / method_gf,
                "dense_gflops": dense_gf,
                "method_gflops": method_gf,
                "speedup_over_oracle_speedup": of_oracle["median"],
                "within_5pct_of_oracle": of_oracle["median"] >= 0.95,
                "max_abs_diff_vs_torch": None,
                "maps_equal": None,
                "per_round_ms": t,
                "tokens": {"full": int(ref[0][1].index.shape[1]), "after_step": counts},
                "partner_margins": margins,
                "batch_size": 1,
                "dtype": "float32" if name != "onnxruntime-int8" else "int8 weights (dynamic), fp32 activations",
                "crop": [job["crop"], job["crop"]],
                "backend": job["backend"],
                "ort_attention": None if name == "torch" else (
                    "as exported (MatMul, Softmax, MatMul)" if name == "onnxruntime-unfused"
                    else "fused (com.microsoft.MultiHeadAttention)"),
                "weights": "checkpoint" if job.get("checkpoint") else "random-init",
            }
            if name != "torch":
                row.update({k: v for k, v in checks[name].items() if k != "tokens_left"})
                row["tokens"]["after_step_ort"] = checks[name]["tokens_left"]
                row["sections_ms"] = sections[name]
                row["merge_share"] = sections[name].get("merge_ms", 0.0) / row["method_ms"]
                vs = {v: ratio_stats(times[("torch", v)], t[v]) for v in VARIANTS}
                row["vs_torch"] = {v: {"ratio": s["median"], "spread": s["spread"], "significant": s["significant"]}
                                   for v, s in vs.items()}
            rows.append(row)
    Path(job["rows_out"]).write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
