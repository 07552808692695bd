"""The paper's tables from the pipeline's result records.

Evaluation records (``mpm.eval/1``) give mIoU, GFLOPs and tokens; benchmark records
(``mpm.bench/1``) give throughput and latency. They are joined on (checkpoint, method,
schedule, method parameters). A table never mixes partial runs (image limits) or different
hardware in one column without saying so: partial rows are marked, Δ is only taken against a
dense run of the same extent, and each timing column names its target and device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from mpm.errors import ConfigError
from mpm.tables.bench import schedule_label

EVAL_SCHEMA = "mpm.eval/1"
BENCH_SCHEMA = "mpm.bench/1"


def read_records(paths: Iterable[str | Path]) -> tuple[list[dict], list[dict]]:
    """(eval records, bench records) from JSON files or folders (searched for ``*.json``)."""
    evals, benches = [], []
    for p in _expand(paths):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"result file {p}: not readable JSON ({err})") from None
        for rec in data if isinstance(data, list) else [data]:
            schema = rec.get("schema") if isinstance(rec, dict) else None
            if schema == EVAL_SCHEMA:
                evals.append({**rec, "_path": str(p)})
            elif schema == BENCH_SCHEMA:
                benches.append({**rec, "_path": str(p)})
            else:
                raise ConfigError(f"result file {p}: schema {schema!r} is neither {EVAL_SCHEMA} nor {BENCH_SCHEMA}")
    return evals, benches


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.rglob("*.json")))
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError(f"result file {p} does not exist")
    return out


def _model_key(path: str | None, fallback: str) -> str:
    if path and Path(path).exists():
        return str(Path(path).resolve())
    return path or fallback


def _method_key(method: dict) -> str:
    extra = {k: v for k, v in sorted(method.items()) if k not in ("method", "schedule", "batch_policy")}
    return json.dumps([method["method"], list(method.get("schedule", [])), extra], sort_keys=True)


def _label(method: dict) -> str:
    return schedule_label(method["method"], method.get("schedule", []), method)


def eval_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per evaluation."""
    rows = []
    for r in records:
        ckpt = (r.get("checkpoint") or {}).get("path")
        images = r.get("images", {})
        rows.append({
            "dataset": r["dataset"]["name"],
            "synthetic": bool(r["dataset"].get("synthetic")),
            "model": f"Seg-{r['model'].get('size', '?')}/16",
            "model_key": _model_key(ckpt, r["model"].get("name", "?")),
            "checkpoint": Path(ckpt).name if ckpt else "",
            "method": _label(r["method"]),
            "method_name": r["method"]["method"],
            "method_key": _method_key(r["method"]),
            "batch_policy": r["method"].get("batch_policy", "exact"),
            "mIoU": r["metrics"]["mIoU"],
            "aAcc": r["metrics"].get("aAcc"),
            "GFLOPs": r.get("gflops", {}).get("per_image"),
            "tokens": list(r.get("tokens", {}).get("after_step_mean", [])),
            "full_tokens": r.get("tokens", {}).get("image_tokens", {}).get("max"),
            "schedule": list(r["method"].get("schedule", [])),
            "depth": r["model"].get("config", {}).get("depth"),
            "partial": bool(images.get("partial", r.get("partial", False))),
            "evaluated": images.get("evaluated"),
            "total": images.get("total"),
            "device": r.get("environment", {}).get("device_name") or r.get("device"),
        })
    return pd.DataFrame(rows)


def bench_rows(records: Iterable[dict]) -> pd.DataFrame:
    """One row per benchmark point, keyed like :func:`eval_frame`."""
    rows = []
    for r in records:
        spec, env = r["spec"], r["environment"]
        target = r.get("target", {}).get("name") if isinstance(r.get("target"), dict) else r.get("target")
        target = target or spec.get("target") or env.get("device_name")
        weights = r["model"].get("weights")
        model_path = r["model"].get("checkpoint") or spec["model"]
        rows.append({
            "target": target,
            "device": env.get("device_name"),
            "weights": weights,
            "model": f"Seg-{r['model'].get('size', spec['model'])}/16",
            "model_key": _model_key(model_path if weights == "checkpoint" else None, f"random-{spec['model']}"),
            "method": _label(r["method"]),
            "method_key": _method_key(r["method"]),
            "batch_size": spec["batch_size"],
            "backend": spec["backend"],
            "dtype": spec["dtype"],
            "images_per_s": r["timing"]["images_per_s"],
            "per_image_ms": r["timing"]["per_image_ms"],
        })
    return pd.DataFrame(rows)


@dataclass
class Table:
    """A table with its caption and notes (rendered into every format)."""

    name: str
    caption: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _with_delta(ev: pd.DataFrame) -> pd.DataFrame:
    """ΔmIoU against the dense run of the same dataset, model and extent (full, or the same limit)."""
    ev = ev.copy()
    dense = ev[ev["method_name"] == "none"]
    ref = {(d.dataset, d.model_key, d.partial, d.evaluated): d.mIoU for d in dense.itertuples()}
    ev["dmIoU"] = [ref.get((e.dataset, e.model_key, e.partial, e.evaluated), float("nan")) for e in ev.itertuples()]
    ev["dmIoU"] = ev["mIoU"] - ev["dmIoU"]
    ev["extent"] = ["partial ({}/{} images)".format(e.evaluated, e.total) if e.partial else "full"
                    for e in ev.itertuples()]
    return ev


def _throughput(bench: pd.DataFrame, target: str, backend: str, batch_size: int) -> tuple[pd.Series, pd.Series, str]:
    """images/s and speedup over dense for one (target, backend, batch), indexed by (model_key, method_key)."""
    sel = bench[(bench["target"] == target) & (bench["backend"] == backend) & (bench["batch_size"] == batch_size)]
    devices = sorted(set(sel["device"].dropna()))
    dtypes = sorted(set(sel["dtype"].dropna()))
    if len(devices) > 1 or len(dtypes) > 1:
        raise ConfigError(f"target {target!r}, backend {backend}, batch {batch_size}: results from several devices "
                          f"or dtypes ({devices}, {dtypes}) cannot share one column")
    ips = sel.set_index(["model_key", "method_key"])["images_per_s"]
    ips = ips[~ips.index.duplicated(keep="last")]
    dense_keys = {mk: k for mk, k in zip(sel["model_key"], sel["method_key"]) if json.loads(k)[0] == "none"}
    speed = pd.Series({idx: v / ips.get((idx[0], dense_keys.get(idx[0])), float("nan")) for idx, v in ips.items()},
                      dtype=float)
    where = f"{target}: {devices[0] if devices else '—'}, {dtypes[0] if dtypes else '—'}"
    return ips, speed, where


def _latency(bench: pd.DataFrame, target: str, batch_size: int) -> tuple[pd.Series, pd.Series, str]:
    sel = bench[(bench["target"] == target) & (bench["batch_size"] == batch_size)]
    if sel.empty:
        return pd.Series(dtype=float), pd.Series(dtype=float), f"{target}: —"
    ms = sel.set_index(["model_key", "method_key"])["per_image_ms"]
    ms = ms[~ms.index.duplicated(keep="last")]
    dense = {mk: v for (mk, k), v in ms.items() if json.loads(k)[0] == "none"}
    speed = pd.Series({idx: dense.get(idx[0], float("nan")) / v for idx, v in ms.items()}, dtype=float)
    devices = sorted(set(sel["device"].dropna()))
    return ms, speed, f"{target}: {', '.join(devices) or '—'}"


def _provenance(ev: pd.DataFrame, bench: pd.DataFrame) -> list[str]:
    notes = []
    if not ev.empty and ev["synthetic"].any():
        notes.append("Data: SYNTHETIC (`mpm synth`), not the paper's datasets.")
    if not ev.empty and ev["checkpoint"].str.contains("demo").any():
        notes.append("Model: the demo Seg-T/16 trained by the pipeline on the synthetic set.")
    if not bench.empty and (bench["weights"] == "random-init").any():
        notes.append("Some timings use random-initialised weights.")
    if not ev.empty and ev["partial"].any():
        notes.append("Partial evaluations (image limits) are marked in `extent`; ΔmIoU compares runs of equal extent.")
    return notes


def main_tables(ev: pd.DataFrame, bench: pd.DataFrame, gpu_target: str | None, batch_size: int) -> list[Table]:
    """The paper's main table, one per (dataset, model)."""
    ev = _with_delta(ev)
    cols = {}
    if gpu_target and not bench.empty:
        for backend, name in (("math", "FA2 off"), ("fa2", "FA2 on")):
            ips, speed, where = _throughput(bench, gpu_target, backend, batch_size)
            if not ips.empty:
                cols[name] = (ips, speed, where)
    tables = []
    for (dataset, _model_key), g in ev.groupby(["dataset", "model_key"], sort=False):
        g = g.sort_values("method_name", key=lambda s: s != "none", kind="stable")
        frame = pd.DataFrame({
            "method": g["method"].values,
            "mIoU": g["mIoU"].values,
            "ΔmIoU": g["dmIoU"].values,
            "GFLOPs": g["GFLOPs"].values,
            "extent": g["extent"].values,
        })
        notes = _provenance(g, bench)
        for name, (ips, speed, where) in cols.items():
            keys = list(zip(g["model_key"], g["method_key"]))
            frame[f"img/s {name}"] = [ips.get(k, float("nan")) for k in keys]
            frame[f"speedup {name}"] = [speed.get(k, float("nan")) for k in keys]
            notes.append(f"img/s {name}: {where}, batch {batch_size}.")
        model = g["model"].iloc[0]
        tables.append(Table(f"main_{dataset}_{_slug(g['checkpoint'].iloc[0] or model)}",
                            f"{model} on {dataset} ({g['checkpoint'].iloc[0]})", frame, notes))
    return tables


def cross_platform_table(ev: pd.DataFrame, bench: pd.DataFrame, gpu_target: str | None, cpu_target: str | None,
                         batch_size: int) -> Table | None:
    """GPU throughput (FA2 off/on) and CPU-board per-image latency (batch 1 and 2) per model and method."""
    if bench.empty:
        return None
    keys = bench[["model", "model_key", "method", "method_key"]].drop_duplicates()
    keys = keys.sort_values("method_key", key=lambda s: s.map(lambda k: json.loads(k)[0] != "none"), kind="stable")
    frame = keys[["model", "method"]].reset_index(drop=True)
    idx = list(zip(keys["model_key"], keys["method_key"]))
    notes = _provenance(ev, bench)
    if gpu_target:
        for backend, name in (("math", "FA2 off"), ("fa2", "FA2 on")):
            sel = bench[(bench["target"] == gpu_target) & (bench["backend"] == backend)]
            if sel.empty:
                continue
            ips, speed, where = _throughput(bench, gpu_target, backend, batch_size)
            frame[f"{gpu_target} img/s {name}"] = [ips.get(k, float("nan")) for k in idx]
            frame[f"{gpu_target} speedup {name}"] = [speed.get(k, float("nan")) for k in idx]
            notes.append(f"{gpu_target} {name}: {where}, batch {batch_size}.")
    if cpu_target:
        for bs in (1, 2):
            ms, speed, where = _latency(bench, cpu_target, bs)
            if ms.empty:
                continue
            frame[f"{cpu_target} ms/img b{bs}"] = [ms.get(k, float("nan")) for k in idx]
            frame[f"{cpu_target} speedup b{bs}"] = [speed.get(k, float("nan")) for k in idx]
            notes.append(f"{cpu_target} batch {bs}: {where}.")
    return Table("cross_platform", "Throughput and latency across platforms", frame, notes)


def ablation_table(ev: pd.DataFrame, bench: pd.DataFrame, gpu_target: str | None, batch_size: int) -> Table | None:
    """MPM insertion schedules: tokens left after each insertion, GFLOPs, mIoU, speedups."""
    ev = _with_delta(ev)
    mpm = ev[ev["method_name"].isin(["mpm", "none"])]
    if mpm[mpm["method_name"] == "mpm"].empty:
        return None
    frame = pd.DataFrame({
        "dataset": mpm["dataset"].values,
        "model": mpm["model"].values,
        "schedule": mpm["method"].values,
        "tokens after each insertion": ["→".join(f"{t:.0f}" for t in ts) for ts in mpm["tokens"]],
        "GFLOPs": mpm["GFLOPs"].values,
        "mIoU": mpm["mIoU"].values,
        "ΔmIoU": mpm["dmIoU"].values,
        "extent": mpm["extent"].values,
    })
    notes = _provenance(mpm, bench)
    if gpu_target and not bench.empty:
        keys = list(zip(mpm["model_key"], mpm["method_key"]))
        for backend, name in (("math", "FA2 off"), ("fa2", "FA2 on")):
            ips, speed, where = _throughput(bench, gpu_target, backend, batch_size)
            if ips.empty:
                continue
            frame[f"speedup {name}"] = [speed.get(k, float("nan")) for k in keys]
            notes.append(f"speedup {name}: {where}, batch {batch_size}.")
    return Table("ablation_schedules", "MPM insertion schedules", frame, notes)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(text).stem).strip("-") or "model"
