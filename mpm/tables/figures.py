"""Figures: speed–accuracy Pareto fronts and tokens left per encoder block (matplotlib, Agg)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated when both coordinates are better larger (x: speed, y: mIoU), by x."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def pareto_figure(ev: pd.DataFrame, speed: dict | None, title: str, xlabel: str):
    """mIoU against speed (images/s) or, without timings, against 1 / GFLOPs-style cost (GFLOPs, reversed)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    pts = []
    for row in ev.itertuples():
        x = speed.get((row.model_key, row.method_key)) if speed else row.GFLOPs
        if x is None or pd.isna(x):
            continue
        ax.scatter(x, row.mIoU, zorder=3)
        ax.annotate(row.method, (x, row.mIoU), fontsize=7, xytext=(3, 3), textcoords="offset points")
        pts.append((x if speed else -x, row.mIoU))
    front = pareto_front(pts)
    if front:
        xs = [p[0] if speed else -p[0] for p in front]
        ax.plot(xs, [p[1] for p in front], "--", color="grey", zorder=2, label="Pareto front")
        ax.legend(fontsize=7)
    if not speed:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def tokens_per_block(schedule: list[int], tokens_after: list[float], full: float, depth: int, site: str) -> list[float]:
    """Image tokens each encoder block's MLP sees, from the tokens left after each merge step."""
    out, current, steps = [], full, dict(zip(sorted(schedule), tokens_after))
    for block in range(depth):
        if block in steps:
            current = steps[block]
        out.append(current)
    return out


def tokens_figure(ev: pd.DataFrame, title: str):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row in ev.itertuples():
        depth = int(row.depth or 12)
        full = row.full_tokens or (row.tokens[0] if row.tokens else None)
        if full is None:
            continue
        method = json.loads(row.method_key)[0]
        counts = tokens_per_block(row.schedule, row.tokens, full, depth, method)
        ax.step(range(depth), counts, where="post", label=row.method)
    ax.set_xlabel("encoder block")
    ax.set_ylabel("image tokens into each block's MLP (mean)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return fig
