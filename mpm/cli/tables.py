"""``mpm tables``: the paper's tables and figures from result JSONs."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tables", help="build the paper's tables (Markdown, LaTeX, CSV) and figures from result JSONs",
        description="Join evaluation (mpm.eval/1) and benchmark (mpm.bench/1) results into the main table per "
                    "dataset and model, the cross-platform table and the schedule ablation, plus Pareto and "
                    "tokens-per-block figures. Folders are searched for *.json.")
    p.add_argument("--eval-results", nargs="*", default=[], metavar="PATH", help="evaluation result files or folders")
    p.add_argument("--bench-results", nargs="*", default=[], metavar="PATH", help="benchmark result files or folders")
    p.add_argument("--manifest", default=None, metavar="FILE", help="a file listing result paths, one per line")
    p.add_argument("--out-tables", default="results/tables")
    p.add_argument("--out-figures", default="results/figures")
    p.add_argument("--gpu-target", default=None, help="target whose FA2 off/on throughput fills the tables")
    p.add_argument("--cpu-target", default=None, help="target whose batch 1/2 latency fills the cross-platform table")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the throughput columns")
    p.add_argument("--index", default=None, metavar="FILE", help="JSON index of what was written (default OUT_TABLES/index.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mpm.errors import ConfigError
    from mpm.tables.build import build_all

    paths = list(args.eval_results) + list(args.bench_results)
    if args.manifest:
        try:
            paths += [line.strip() for line in Path(args.manifest).read_text().splitlines() if line.strip()]
        except OSError as err:
            raise ConfigError(f"--manifest {args.manifest}: {err.strerror or err}") from None
    if not paths:
        raise ConfigError("no result files given (--eval-results, --bench-results or --manifest)")
    index = args.index or str(Path(args.out_tables) / "index.json")
    written = build_all(paths, args.out_tables, args.out_figures, gpu_target=args.gpu_target or None,
                        cpu_target=args.cpu_target or None, batch_size=args.batch_size, index=index)
    print(f"{len(written['tables'])} tables, {len(written['figures'])} figures "
          f"from {written['inputs']['eval']} evaluations and {written['inputs']['bench']} benchmarks -> {index}")
    return 0
