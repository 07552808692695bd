"""Build every table and figure of a pipeline run, and an index of what was written."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib.pyplot as plt

from mpm.io import write_json_atomic
from mpm.tables.figures import pareto_figure, tokens_figure
from mpm.tables.render import frame_summary, write_figure, write_table
from mpm.tables.results import (
    ablation_table,
    bench_rows,
    cross_platform_table,
    eval_frame,
    main_tables,
    read_records,
    _throughput,
    _slug,
)


def build_all(results: Iterable[str | Path], out_tables: str | Path, out_figures: str | Path, *,
              gpu_target: str | None = None, cpu_target: str | None = None, batch_size: int = 32,
              index: str | Path | None = None) -> dict:
    """Tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) from result files or folders."""
    evals, benches = read_records(results)
    ev, bench = eval_frame(evals), bench_rows(benches)
    out_tables, out_figures = Path(out_tables), Path(out_figures)
    out_figures.mkdir(parents=True, exist_ok=True)
    tables = main_tables(ev, bench, gpu_target, batch_size) if not ev.empty else []
    for extra in (cross_platform_table(ev, bench, gpu_target, cpu_target, batch_size),
                  ablation_table(ev, bench, gpu_target, batch_size) if not ev.empty else None):
        if extra is not None:
            tables.append(extra)
    written: dict = {"tables": [], "figures": [], "inputs": {"eval": len(evals), "bench": len(benches)}}
    for t in tables:
        files = write_table(t, out_tables)
        written["tables"].append({"name": t.name, "caption": t.caption, "notes": t.notes,
                                  "files": [str(f) for f in files], **frame_summary(t.frame)})
    speed, xlabel = None, "GFLOPs per image (lower is faster)"
    if gpu_target and not bench.empty and ((bench["target"] == gpu_target) & (bench["backend"] == "math")).any():
        ips, _, where = _throughput(bench, gpu_target, "math", batch_size)
        speed, xlabel = dict(ips.items()), f"images/s ({where}, FA2 off, batch {batch_size})"
    if not ev.empty:
        for (dataset, _model_key), g in ev.groupby(["dataset", "model_key"], sort=False):
            name = f"{dataset}_{_slug(g['checkpoint'].iloc[0] or g['model'].iloc[0])}"
            title = f"{g['model'].iloc[0]} on {dataset}" + (" (synthetic data)" if g["synthetic"].any() else "")
            for kind, fig in (("pareto", pareto_figure(g, speed, title, xlabel)), ("tokens", tokens_figure(g, title))):
                files = write_figure(fig, out_figures, f"{kind}_{name}")
                plt.close(fig)
                written["figures"].append({"name": f"{kind}_{name}", "files": [str(f) for f in files]})
    if index:
        write_json_atomic(index, written)
    return written
