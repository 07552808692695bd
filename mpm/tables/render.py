"""Write tables as Markdown, LaTeX and CSV, and figures as PNG and PDF — all atomically."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from mpm.io import write_bytes_atomic, write_text_atomic
from mpm.tables.bench import to_markdown
from mpm.tables.results import Table


def write_table(table: Table, folder: str | Path) -> list[Path]:
    """``NAME.md``, ``NAME.tex`` and ``NAME.csv`` under ``folder``."""
    folder = Path(folder)
    notes = "".join(f"\n{n}" for n in table.notes)
    md = f"**{table.caption}**\n\n{to_markdown(table.frame)}{notes}\n"
    latex = table.frame.to_latex(index=False, float_format=lambda v: f"{v:.2f}", na_rep="--",
                                 caption=table.caption + (" " + " ".join(table.notes) if table.notes else ""),
                                 label=f"tab:{table.name}")
    buf = io.StringIO()
    table.frame.to_csv(buf, index=False)
    return [write_text_atomic(folder / f"{table.name}.md", md), write_text_atomic(folder / f"{table.name}.tex", latex),
            write_text_atomic(folder / f"{table.name}.csv", buf.getvalue())]


def write_figure(fig, folder: str | Path, name: str) -> list[Path]:
    """``NAME.png`` and ``NAME.pdf`` under ``folder``."""
    out = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight")
        out.append(write_bytes_atomic(Path(folder) / f"{name}.{ext}", buf.getvalue()))
    return out


def frame_summary(frame: pd.DataFrame) -> dict:
    return {"rows": int(len(frame)), "columns": list(map(str, frame.columns))}
