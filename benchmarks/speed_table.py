"""Markdown tables of `benchmarks/speed.py` results, with the paper's reported speedups beside.

    python benchmarks/speed_table.py results/reference/h200/speed.json results/reference/cpu/speed.json
    python benchmarks/speed_table.py --grid results/reference/h200/one_launch/speed.json   # the README's grid

One table per device and image set; a speedup marked ``*`` has a spread over the
repeats that crosses 1.0 (not significant); ``+s``: the method ran on speculative capacities. The paper's figures are from other
hardware (H100, Raspberry Pi 5) and trained weights: beside ours for orientation only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: the paper's speedups over dense (images/s ratios): (method, model, batch size, backend) -> (figure, where)
PAPER = {
    ("mpm", "Seg-T/16", 32, "math"): (831 / 660, "H100"),
    ("mpm", "Seg-B/16", 32, "math"): (177 / 133, "H100"),
    ("mpm", "Seg-L/16", 32, "math"): (74 / 47, "H100"),
    ("mpm", "Seg-L/16", 32, "fa2"): (456 / 375, "H100"),
    ("tome", "Seg-T/16", 32, "math"): (751 / 660, "H100"),
    ("algm", "Seg-T/16", 32, "math"): (665 / 660, "H100"),
    ("mpm", "Seg-T/16", 1, "cpu"): (1.71 / 1.06, "Pi 5"),
}


def method_label(row: dict) -> str:
    """The method's name, ``+s`` when its forwards ran on speculative capacities."""
    return row["method"] + ("+s" if row.get("speculative") else "")


def ratio(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_range"]
    sig = row[f"{key}_significant"]
    return f"{row[key]:.2f}x{'' if sig else '*'} ({lo:.2f}-{hi:.2f})"


def rate(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.3g}"


def cpu_time(row: dict) -> str:
    c = row.get("cpu_time_speedup")
    if not c:
        return "-"
    v = row["cpu_time_vs_oracle"]
    return (f"{c['median']:.2f}x{'' if c['significant'] else '*'} ({c['low']:.2f}-{c['high']:.2f}); "
            f"/ oracle {v['median']:.2f}")


def table(rows: list[dict]) -> str:
    with_cpu = any("cpu_time_speedup" in r for r in rows)
    out = ["| model | batch | attention | mode | threads | method | dense img/s | method img/s | speedup (min-max) | "
           "oracle speedup | method / oracle | FLOP-ideal | merge+unmerge |" + (" CPU-time speedup |" if with_cpu else "")
           + " paper |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if with_cpu else "") + "---|"]
    for r in rows:
        backend = {"fa2": "FA2", "math": "math (FA2 off)"}.get(r["backend"], r["backend"])
        paper_key = (r["method"], r["model"], r["batch_size"], "cpu" if r["device"] == "cpu" else r["backend"])
        paper = PAPER.get(paper_key)
        share = f"{100 * r['merge_unmerge_share']:.1f}%" if r["merge_unmerge_share"] is not None else "-"
        if r.get("merge_unmerge_kernel_share") is not None:  # CUDA: of the forward's kernel time, no cuts
            share += f" (kernels {100 * r['merge_unmerge_kernel_share']:.1f}%)"
        out.append(f"| {r['model']} | {r['batch_size']} | {backend} | {r['mode']} | {r.get('threads') or '-'} | "
                   f"{method_label(r)} | {rate(r['dense_img_s'])} | {rate(r['method_img_s'])} | {ratio(r, 'speedup')} | "
                   f"{ratio(r, 'oracle_speedup')} | {r['vs_oracle']:.2f} | {r['ideal_speedup']:.2f}x | {share} | "
                   + (f"{cpu_time(r)} | " if with_cpu else "")
                   + f"{f'{paper[0]:.2f}x ({paper[1]})' if paper else ''} |")
    return "\n".join(out)


#: the README grid's image sets, in order, and their labels
GRID_IMAGES = (("skimage-photos", "photos"), ("synthetic", "synthetic"))
GRID_BACKENDS = (("fa2", "FA2 on"), ("triton", "triton"), ("math", "FA2 off"))


def _sig(value: float, significant: bool) -> str:
    return f"{value:.2f}{'' if significant else '*'}"


def grid_cell(r: dict) -> str:
    """``speedup (oracle speedup, method / oracle, share / kernel share%)``, ``*``: not significant."""
    kshare = r.get("merge_unmerge_kernel_share")
    shares = f"{100 * r['merge_unmerge_share']:.1f}" + (f" / {100 * kshare:.1f}" if kshare is not None else "")
    return (f"{_sig(r['speedup'], r['speedup_significant'])} ({_sig(r['oracle_speedup'], r['oracle_speedup_significant'])}"
            f", {r['vs_oracle']:.2f}, {shares}%)")


def grid(rows: list[dict]) -> str:
    """One method's rows as the README's grid: a line per (images, batch, backend, mode), a column per model;
    then, per image set at batch 1 under graphs, the faster method over the faster dense (same call)."""
    models = sorted({r["model"] for r in rows}, key=lambda m: "TSBL".index(m[4]) if m[4] in "TSBL" else 9)
    at = {(r["images"], r["batch_size"], r["backend"], r["mode"], r["model"]): r for r in rows}
    out = ["| | " + " | ".join(m.split("/")[0] for m in models) + " |", "|---|" + "---|" * len(models)]
    for images, label in GRID_IMAGES:
        for batch in sorted({r["batch_size"] for r in rows}, reverse=True):
            for backend, backend_label in GRID_BACKENDS:
                for mode in ("eager", "graphs"):
                    cells = [at.get((images, batch, backend, mode, m)) for m in models]
                    if not any(cells):
                        continue
                    spec = " (+s)" if any(c and c.get("speculative") for c in cells) else ""
                    out.append(f"| {label}, batch {batch}, {backend_label}, {mode}{spec} | "
                               + " | ".join(grid_cell(c) if c else "-" for c in cells) + " |")
    for images, label in GRID_IMAGES:  # the FLOP-ideal per model (the same in every backend and mode)
        batches = sorted({r["batch_size"] for r in rows if r["images"] == images}, reverse=True)
        ideal = [[next((r["ideal_speedup"] for r in rows if (r["images"], r["batch_size"], r["model"]) == (images, b, m)),
                       None) for b in batches] for m in models]
        if batches:
            out.append(f"| FLOP-ideal, {label}, batch {' / batch '.join(map(str, batches))} | "
                       + " | ".join(" / ".join("-" if v is None else f"{v:.2f}" for v in per) for per in ideal) + " |")
    for images, label in GRID_IMAGES:
        best = []
        for m in models:
            same = [r for r in rows if (r["images"], r["batch_size"], r["mode"], r["model"]) == (images, 1, "graphs", m)]
            if not same:
                break
            dense = max(same, key=lambda r: r["dense_img_s"])
            by_backend = {r["backend"]: r["dense_img_s"] for r in same}
            gain = (f", {100 * (by_backend['triton'] / by_backend['fa2'] - 1):+.1f}% triton dense over FA2 dense"
                    if {"triton", "fa2"} <= set(by_backend) else "")
            best.append((m, max(r["method_img_s"] for r in same) / dense["dense_img_s"],
                         dense["oracle_img_s"] / dense["dense_img_s"], dense["ideal_speedup"], dense["backend"], gain))
        if best:
            out.append(f"\n{label}, batch 1, graphs, the faster method over the faster dense (same call; oracle of that "
                       "dense's backend; FLOP-ideal): " + "; ".join(f"{m.split('/')[0]} {v:.2f} (oracle {o:.2f}, "
                                                                   f"ideal {i:.2f}, dense {b}{g})"
                                                                   for m, v, o, i, b, g in best))
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--grid", action="store_true", help="the README's grid: a cell per model (one method's rows)")
    args = ap.parse_args()
    rows = []
    for f in args.files:
        path = Path(f)
        if not path.is_file():
            print(f"speed_table.py: {f}: no such file", file=sys.stderr)
            return 2
        rows.extend(json.loads(path.read_text()))
    if args.grid:
        print(grid(rows))
        return 0
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        where = f"{r['cpu']} ({r['cpu_count']} cores)" if r["device"] == "cpu" else r["device"]
        groups.setdefault((where, r["images"]), []).append(r)
    for (where, images), group in groups.items():
        commit = sorted({str(r.get("git_commit")) for r in group})
        print(f"\n### {where}, {images} (random weights; commit {', '.join(commit)}; dtype {group[0]['dtype']})\n")
        print(table(group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
