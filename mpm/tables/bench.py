"""Benchmark results (schema ``mpm.bench/1``) as tables: throughput, speedups, breakdowns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from mpm.backends import cuda_labels
from mpm.methods import MethodIdentity
from mpm.records import BenchRecord

#: what a throughput column is called after the backend that ran on a CUDA device (FlashAttention-2 off
#: or on); on any other device it is called after the device and backend as run, e.g. ``CPU math``
#: (the backend registry's ``cuda_label``: :mod:`mpm.backends`)
CUDA_BACKEND_LABELS = cuda_labels()


def backend_label(backend: str, device_kind: str) -> str:
    """A backend's ``cuda_label`` (``FA2 off`` / ``FA2 on`` / ``Triton FA``) on ``cuda``, else e.g. ``CPU math``."""
    if device_kind == "cuda" and backend in CUDA_BACKEND_LABELS:
        return CUDA_BACKEND_LABELS[backend]
    return f"{(device_kind or 'device').upper()} {backend}"


#: column order of :func:`bench_frame`
BENCH_COLUMNS = [
    "device", "weights", "model", "method", "schedule", "dense", "batch_policy", "batch_size", "backend", "dtype",
    "images_per_s", "per_image_ms", "median_ms", "p10_ms", "p90_ms", "gflops", "tokens_after_steps",
    "embed_and_encoder_ms", "merge_ms", "unmerge_ms", "decoder_ms", "image_source", "git_commit",
]


def read_results(paths: Iterable[str | Path]) -> list[dict]:
    """Result dicts from JSON files holding one result or a list of them."""
    out: list[dict] = []
    for p in paths:
        data = json.loads(Path(p).read_text())
        out.extend(data if isinstance(data, list) else [data])
    return out


def bench_frame(results: Iterable[dict]) -> pd.DataFrame:
    """One row per benchmark point."""
    rows = []
    for r in results:
        spec, env, timing = r["spec"], r["environment"], r["timing"]
        tokens = r.get("tokens", {}).get("after_step_mean", [])
        rows.append({
            "device": env.get("device_name"),
            "weights": r["model"].get("weights"),
            "model": f"Seg-{r['model'].get('size', spec['model'])}/16",
            "method": MethodIdentity.from_dict(r["method"]).label,
            "schedule": ",".join(map(str, r["method"]["schedule"])),
            "dense": not MethodIdentity.from_dict(r["method"]).merges,
            "batch_policy": spec["batch_policy"],
            "batch_size": spec["batch_size"],
            "backend": spec["backend"],
            "dtype": spec["dtype"],
            "images_per_s": timing["images_per_s"],
            "per_image_ms": timing["per_image_ms"],
            "median_ms": timing["median_ms"],
            "p10_ms": timing["p10_ms"],
            "p90_ms": timing["p90_ms"],
            "gflops": r.get("gflops"),
            "tokens_after_steps": "→".join(f"{t:.0f}" for t in tokens) if tokens else "",
            **{k: r.get("breakdown_ms", {}).get(k) for k in ("embed_and_encoder_ms", "merge_ms", "unmerge_ms", "decoder_ms")},
            "image_source": r.get("image_source", {}).get("source"),
            "git_commit": env.get("git_commit"),
        })
    return pd.DataFrame(rows, columns=BENCH_COLUMNS)


def with_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``speedup``: images/s over the dense model's at the same device, model, batch, backend, dtype."""
    keys = ["device", "model", "batch_size", "backend", "dtype"]
    dense = df[df["dense"].astype(bool)].set_index(keys)["images_per_s"].rename("dense_images_per_s")
    out = df.join(dense, on=keys)
    out["speedup"] = out["images_per_s"] / out["dense_images_per_s"]
    return out.drop(columns="dense_images_per_s")


def backend_table(df: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """Throughput per attention backend with a ``cuda_label`` (FA2 off, FA2 on, Triton FA: those with results)
    side by side, each with its speedup over dense on the same backend and its merge ms."""
    d = with_speedups(df[df["batch_size"] == batch_size])
    keys = ["model", "method", "batch_policy"]
    runs = {b: d[d["backend"] == b].set_index(keys) for b in CUDA_BACKEND_LABELS if (d["backend"] == b).any()}
    if not runs:
        return pd.DataFrame(columns=keys)
    parts = list(runs.values())
    gflops, tokens = parts[0]["gflops"], parts[0]["tokens_after_steps"]
    for r in parts[1:]:  # a row timed on one backend only still gets its GFLOPs and tokens
        gflops, tokens = gflops.combine_first(r["gflops"]), tokens.combine_first(r["tokens_after_steps"])
    columns = {"GFLOPs": gflops, "tokens": tokens}
    for b, r in runs.items():
        label = CUDA_BACKEND_LABELS[b]
        columns.update({f"img/s {label}": r["images_per_s"], f"speedup {label}": r["speedup"],
                        f"merge ms ({label})": r["merge_ms"]})
    table = pd.DataFrame(columns)
    order = {m: i for i, m in enumerate(dict.fromkeys(df["model"]))}
    table = table.reset_index()
    table["_m"] = table["model"].map(order)
    table["_d"] = ~table["method"].isin(set(d.loc[d["dense"].astype(bool), "method"]))
    return table.sort_values(["_m", "_d"], kind="stable").drop(columns=["_m", "_d"]).reset_index(drop=True)


def to_markdown(table: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    cols = list(table.columns)

    def fmt(v) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def bench_target(record: BenchRecord) -> tuple[str | None, str]:
    """The target a benchmark record was timed on, and where that name was found: ``target.name``
    (every runner writes it), else the device's name (a record of ``run_point`` alone)."""
    if record.target_name:
        return record.target_name, "target"
    return record.device_name, "environment.device_name"
