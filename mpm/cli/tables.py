"""``mpm tables``: the paper's tables and figures from result JSONs."""

from __future__ import annotations

import sys
from pathlib import Path

from mpm.cli._args import count, input_file, output_dir, output_file


def _batch_sizes(text: str) -> list[int]:
    import argparse

    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive batch sizes, got {text!r}")
    return sizes


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tables", help="build the paper's tables (Markdown, LaTeX, CSV) and figures from result JSONs",
        description="Join evaluation (mpm.eval/1) and benchmark (mpm.bench/1) results into the main table per "
                    "dataset and model (mIoU, ΔmIoU, GFLOPs, images/s FA2 off/on, speedups), the cross-platform "
                    "table (GPU throughput, CPU-board latency) and the MPM schedule ablation, plus speed–accuracy "
                    "Pareto and tokens-per-block figures. Folders are searched recursively for *.json. Partial "
                    "evaluations are marked and never compared with full ones; a timing column whose results come "
                    "from different devices, dtypes or thread counts is refused (--allow-mixed marks it instead).")
    p.add_argument("--eval-results", nargs="*", default=[], metavar="PATH", type=input_file,
                   help="evaluation result files or folders")
    p.add_argument("--bench-results", nargs="*", default=[], metavar="PATH", type=input_file,
                   help="benchmark result files or folders")
    p.add_argument("--manifest", default=None, metavar="FILE", type=input_file,
                   help="a file listing result paths (files or folders), one per line, or a JSON list")
    p.add_argument("--out-tables", default="results/tables", metavar="DIR", type=output_dir)
    p.add_argument("--out-figures", default="results/figures", metavar="DIR", type=output_dir)
    p.add_argument("--gpu-target", nargs="?", default=None, const=None, metavar="NAME",
                   help="target whose FA2 off (math) / on (fa2) throughput fills the tables "
                        "(default: the only CUDA target among the results)")
    p.add_argument("--cpu-target", nargs="?", default=None, const=None, metavar="NAME",
                   help="target whose per-image latency fills the cross-platform table "
                        "(default: the only CPU target among the results)")
    p.add_argument("--batch-size", type=count(1), default=32,
                   help="batch size of the GPU throughput columns (default 32)")
    p.add_argument("--cpu-batch-sizes", type=_batch_sizes, default=[1, 2], metavar="B[,B...]",
                   help="batch sizes of the CPU latency columns (default 1,2)")
    p.add_argument("--cpu-backend", default="math", help="attention backend of the CPU columns (default math)")
    p.add_argument("--allow-mixed", action="store_true",
                   help="mark a timing column whose results come from different devices/dtypes instead of failing")
    p.add_argument("--no-figures", action="store_true", help="write the tables only")
    p.add_argument("--index", default=None, metavar="FILE", type=output_file,
                   help="JSON index of what was written (default OUT_TABLES/index.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpm.errors import ConfigError
    from mpm.tables.paper import build_paper

    paths = list(args.eval_results) + list(args.bench_results)
    if not paths and not args.manifest:
        raise ConfigError("no result files given (--eval-results, --bench-results or --manifest)")
    index = args.index or str(Path(args.out_tables) / "index.json")
    written = build_paper(paths, args.out_tables, args.out_figures, manifest=args.manifest,
                          gpu_target=args.gpu_target or None, cpu_target=args.cpu_target or None,
                          batch_size=args.batch_size, cpu_batch_sizes=args.cpu_batch_sizes,
                          cpu_backend=args.cpu_backend, allow_mixed=args.allow_mixed, index=index,
                          figures=not args.no_figures)
    for warning in written["warnings"]:
        print(f"mpm tables: warning: {warning}", file=sys.stderr)
    inputs = written["inputs"]
    print(f"{len(written['tables'])} tables, {len(written['figures'])} figures from {inputs['eval']} evaluations and "
          f"{inputs['bench']} benchmarks ({inputs['files']} files"
          + (f", {len(inputs['skipped'])} other JSON files skipped" if inputs["skipped"] else "") + f") -> {index}")
    for table in written["tables"]:
        print(f"  {table['name']}: {table['rows']} rows — {table['caption']}")
    return 0
