"""The paper's tables and figures from the pipeline's result records.

- :mod:`mpm.tables.paper`   main table per dataset and model, cross-platform table, schedule
  ablation (Markdown, LaTeX, CSV) from ``mpm.eval/1`` and ``mpm.bench/1`` records;
  ``mpm tables`` on the command line
- :mod:`mpm.tables.results` reading result files, folders and manifests
- :mod:`mpm.tables.labels`  method, schedule, model and device texts
- :mod:`mpm.tables.frames`  one row per evaluation / benchmark record
- :mod:`mpm.tables.columns` timing columns (one target, backend and batch size)
- :mod:`mpm.tables.render`  a table as Markdown, LaTeX, CSV and HTML
- :mod:`mpm.tables.figures` speed–accuracy Pareto fronts, tokens entering each encoder block
- :mod:`mpm.tables.bench`   benchmark results alone (the H100 reference tables)

Names are imported lazily: ``import mpm.tables.bench`` does not load matplotlib.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "build_paper": "mpm.tables.paper",
    "load_results": "mpm.tables.results",
    "Paper": "mpm.tables.paper",
    "Results": "mpm.tables.results",
    "Table": "mpm.tables.render",
    "eval_frame": "mpm.tables.frames",
    "timing_frame": "mpm.tables.frames",
    "write_table": "mpm.tables.render",
    "render_markdown": "mpm.tables.render",
    "render_latex": "mpm.tables.render",
    "speed_accuracy_figure": "mpm.tables.figures",
    "tokens_layer_figure": "mpm.tables.figures",
    "tokens_entering_blocks": "mpm.tables.figures",
    "pareto_front": "mpm.tables.figures",
    "save_figure": "mpm.tables.figures",
}

__all__ = [
    "Paper",
    "Results",
    "Table",
    "build_paper",
    "eval_frame",
    "load_results",
    "pareto_front",
    "render_latex",
    "render_markdown",
    "save_figure",
    "speed_accuracy_figure",
    "timing_frame",
    "tokens_entering_blocks",
    "tokens_layer_figure",
    "write_table",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mpm.tables' has no attribute {name!r}")
