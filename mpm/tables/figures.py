"""Figures: speed–accuracy Pareto fronts and tokens left per encoder block (matplotlib, Agg).

:func:`speed_accuracy_figure`, :func:`tokens_layer_figure` and :func:`save_figure` serve
:mod:`mpm.tables.paper`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mpm.methods import available_methods, find_spec, is_dense, method_order  # noqa: E402


#: colour and marker of each method family, by its place in the method registry (:func:`mpm.methods.method_order`)
PALETTE = (("black", "s"), ("tab:blue", "o"), ("tab:orange", "^"), ("tab:green", "D"), ("tab:red", "v"),
           ("tab:purple", "P"))
_OTHER = ("tab:gray", "x")
#: colour map of each merging family's shades, by the same place (the dense baseline has none)
_CMAPS = (None, "Blues", "Oranges", "Greens", "Reds", "Purples")
#: least span of the mIoU axis (points): differences far below a point are noise on most benchmarks,
#: and an axis fitted to them would magnify them
MIN_MIOU_SPAN = 2.0


def style(method_name: str) -> tuple[str, str]:
    """(colour, marker) of a method family; grey crosses for a method the registry does not know."""
    order = method_order(method_name)
    return PALETTE[order] if find_spec(method_name) is not None and order < len(PALETTE) else _OTHER


def family_legend(method_name: str) -> str:
    """A family's legend entry: ``dense`` for the baseline, else the method's title; ``other`` if unknown."""
    spec = find_spec(method_name)
    if spec is None or style(method_name) == _OTHER:
        return "other"
    return "dense" if not spec.merges else spec.title


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated when both coordinates are better larger (x: speed, y: mIoU), by x."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def value_limits(values: Sequence[float], min_span: float, pad: float = 0.1) -> tuple[float, float] | None:
    """Axis limits covering ``values`` with ``pad`` (a fraction of the span) on each side, widened about
    their centre to at least ``min_span``; None without a finite value."""
    vals = [float(v) for v in values if not _nan(v) and math.isfinite(float(v))]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    margin = (hi - lo) * pad
    lo, hi = lo - margin, hi + margin
    if hi - lo < min_span:
        centre = (lo + hi) / 2
        lo, hi = centre - min_span / 2, centre + min_span / 2
    return lo, hi


#: label positions beside a point, in points: above right, then below right, then further up and down
_LABEL_SLOTS = ((4, 3), (4, -9), (4, 11), (4, -17))


def label_offsets(xs: list[float], ys: list[float], near: float = 0.1,
                  min_span_y: float = 0.0) -> list[tuple[int, int]]:
    """An offset per point for its label, so that points closer than ``near`` of the plotted spans (in
    x, and in y with at least ``min_span_y``) get different slots of :data:`_LABEL_SLOTS` and their
    labels do not overlap."""
    finite = [(x, y) for x, y in zip(xs, ys) if not (_nan(x) or _nan(y))]
    span_x = (max(p[0] for p in finite) - min(p[0] for p in finite)) if finite else 0.0
    span_y = max((max(p[1] for p in finite) - min(p[1] for p in finite)) if finite else 0.0, min_span_y)
    placed: list[tuple[float, float, int]] = []
    out = []
    for x, y in zip(xs, ys):
        taken = {slot for px, py, slot in placed
                 if abs(px - x) <= near * (span_x or 1.0) and abs(py - y) <= near * (span_y or 1.0)}
        slot = next((k for k in range(len(_LABEL_SLOTS)) if k not in taken), 0)
        placed.append((x, y, slot))
        out.append(_LABEL_SLOTS[slot])
    return out


def speed_accuracy_figure(data: pd.DataFrame, *, xlabel: str, title: str, lower_is_better: bool = False,
                          note: str | None = None):
    """mIoU against speed (``x``; images/s, or GFLOPs with ``lower_is_better``), one point per method and
    schedule, and the Pareto front of the full runs. The mIoU axis spans at least :data:`MIN_MIOU_SPAN`.

    ``data`` has the columns ``x``, ``mIoU``, ``label``, ``method_name``, ``partial`` and ``extent``.
    Partial runs (image limits) are drawn hollow and kept off the front, unless every run is partial
    with one extent — then the front is theirs and the title says so.
    """
    fig, ax = plt.subplots(figsize=(6, 4.2))
    pts = data[[not _nan(x) for x in data["x"]]]
    full, part = pts[~pts["partial"].astype(bool)], pts[pts["partial"].astype(bool)]
    front_from, suffix = full, ""
    if full.empty and not part.empty and part["extent"].nunique() == 1:
        front_from, suffix = part, f" — {part['extent'].iloc[0]}"
    seen: set[str] = set()
    offsets = label_offsets(list(pts["x"]), list(pts["mIoU"]), min_span_y=MIN_MIOU_SPAN)
    for row, offset in zip(pts.itertuples(), offsets):
        colour, marker = style(row.method_name)
        hollow = bool(row.partial) and front_from is not part
        family = family_legend(row.method_name)
        legend = None if family in seen else family
        seen.add(family)
        ax.scatter(row.x, row.mIoU, marker=marker, s=40, zorder=3, label=legend,
                   facecolors="none" if hollow else colour, edgecolors=colour)
        ax.annotate(row.label + (" (partial)" if hollow else ""), (row.x, row.mIoU), fontsize=7,
                    xytext=offset, textcoords="offset points")
    sign = -1.0 if lower_is_better else 1.0
    front = pareto_front([(sign * x, y) for x, y in zip(front_from["x"], front_from["mIoU"])])
    if len(front) > 1:
        ax.plot([sign * p[0] for p in front], [p[1] for p in front], "--", color="grey", zorder=2,
                label="Pareto front")
    if not part.empty and front_from is not part:
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="partial run (off the front)")
    if lower_is_better:
        ax.invert_xaxis()
    limits = value_limits(pts["mIoU"], MIN_MIOU_SPAN)
    if limits:
        ax.set_ylim(*limits)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title + suffix + (f"\n{note}" if note else ""), fontsize=9)
    ax.grid(alpha=0.3)
    if pts.empty:
        ax.text(0.5, 0.5, "no point with both mIoU and a speed", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="best")
    return fig


def tokens_entering_blocks(steps: Sequence[tuple[int, str, float]], full: float, depth: int) -> list[float]:
    """Image tokens entering each of ``depth`` encoder blocks.

    ``steps``: ``(block, site, tokens after the step)`` in the order they run. A ``before_block``
    step of block b changes what enters b; a step inside a block (``after_attention``) changes what
    enters b + 1.
    """
    out, current = [], float(full)
    for block in range(depth):
        for b, site, after in steps:
            if b == block and site == "before_block":
                current = float(after)
        out.append(current)
        for b, site, after in steps:
            if b == block and site != "before_block":
                current = float(after)
    return out


def _steps_of(row) -> list[tuple[int, str, float]]:
    steps = list(row.token_steps or [])
    if steps:
        return steps
    spec = find_spec(row.method_name)  # where the method merges when a record does not say
    site = spec.site if spec is not None else "before_block"
    return [(int(b), site, float(t)) for b, t in zip(sorted(row.schedule or []), row.tokens_after or [])]


def _family_shades(rows: pd.DataFrame) -> dict:
    """A shade of the family's colour for each merging row (index -> colour), darker for later rows."""
    out = {}
    for family in available_methods():
        order = method_order(family)
        cmap = _CMAPS[order] if order < len(_CMAPS) else None
        if cmap is None or is_dense(family):
            continue
        idx = [i for i, m in zip(rows.index, rows["method_name"]) if m == family]
        for k, i in enumerate(idx):
            out[i] = plt.get_cmap(cmap)(0.85 if len(idx) == 1 else 0.45 + 0.5 * k / (len(idx) - 1))
    return out


def tokens_layer_figure(rows: pd.DataFrame, *, title: str, note: str | None = None):
    """Image tokens entering each encoder block, one line per method and schedule, dense flat.

    ``rows`` are evaluation rows (:func:`mpm.tables.frames.eval_frame`): ``method_name``, ``label``,
    ``schedule``, ``tokens_after``, ``token_steps``, ``image_tokens``, ``depth``, ``partial``,
    ``method_key``. A partial run is drawn (dotted) only when no full run of the same method exists.
    """
    fig, ax = plt.subplots(figsize=(6, 4.2))
    full_keys = set(rows.loc[~rows["partial"].astype(bool), "method_key"])
    depth = max([int(d) for d in rows["depth"] if not _nan(d)] or [12])
    dense_drawn = False
    shades = _family_shades(rows)
    for row in rows.itertuples():
        if row.partial and row.method_key in full_keys:
            continue
        full = row.image_tokens
        if _nan(full):
            continue
        steps = _steps_of(row)
        if depth <= max((b for b, _, _ in steps), default=-1):
            depth = max(b for b, _, _ in steps) + 1
        counts = tokens_entering_blocks(steps, full, depth)
        colour, marker = style(row.method_name)
        if is_dense(row.method_name) or not steps:
            if dense_drawn:
                continue
            dense_drawn = True
            ax.plot(range(depth), counts, color="black", lw=1.5, label="none (dense)")
            continue
        ax.plot(range(depth), counts, drawstyle="steps-post", marker=marker, ms=3, color=shades.get(row.Index, colour),
                linestyle=":" if row.partial else "-", label=row.label + (" (partial)" if row.partial else ""))
    ax.set_xlabel("encoder block (0-based)")
    ax.set_ylabel("image tokens entering the block (mean)")
    ax.set_xticks(range(depth))
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=6, ncol=2)
    return fig


def save_figure(fig, folder: str | Path, name: str) -> list[Path]:
    """``NAME.png`` and ``NAME.pdf`` under ``folder``, each written atomically; closes ``fig``.

    The files carry no creation date, so the same figure gives the same bytes.
    """
    from mpm.io import write_bytes_atomic

    out = []
    try:
        for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
            out.append(write_bytes_atomic(Path(folder) / f"{name}.{ext}", buf.getvalue()))
    finally:
        plt.close(fig)
    return out
