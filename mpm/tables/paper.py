"""The paper's tables and figures from the pipeline's result records.

Inputs are evaluation records (schema ``mpm.eval/1``: mIoU, GFLOPs per image, tokens left after
each merge step) and benchmark records (``mpm.bench/1``: images/s and per-image latency of one
point — model, method, schedule, batch size, backend, dtype — on one *target*). Outputs, each
file written atomically:

``main_{dataset}_{model}``
    per dataset and model: every method and schedule (the config's name, e.g. ``2-5``, ``all``, and its
    blocks, ``2,5``, ``0-11``) with mIoU, ΔmIoU against dense, GFLOPs
    per image, images/s of backends ``math``, ``fa2`` and ``triton`` (those run) on the GPU target at the
    table's batch size (columns "FA2 off" / "FA2 on" / "Triton FA" on a CUDA device, else named by device
    and backend as run, e.g. "CPU math"), and the speedups over dense;
``cross_platform``
    per model and method: the GPU target's images/s and the CPU target's per-image latency at
    batch 1 and 2 (ms/image), with speedups;
``ablation_schedules``
    MPM's insertion schedules: tokens left after each insertion, GFLOPs, mIoU, ΔmIoU, speedups;

each as Markdown, LaTeX (booktabs, rendered here: no jinja2 needed), CSV and a standalone HTML page
(what ``snakemake --report`` shows), plus the figures of
:mod:`mpm.tables.figures` (speed–accuracy Pareto front and tokens entering each encoder block
per dataset and model, PNG and PDF) and an index (``index.json``) of what was written.

What a table never does silently:

- mix partial evaluations (an image limit) with full ones: every row has an ``extent`` ("full"
  or "partial (N/M images)") and ΔmIoU is only taken against the dense run of the *same* extent
  (a full run against the full dense run, a partial one against a dense run with the same
  limit); a row without such a dense run has no Δ, and a note says why;
- mix hardware in a column: every timing column names its target and device in its header and
  its settings (dtype, backend, batch, threads on CPUs) in a note; results of one column coming
  from different devices, dtypes or thread counts raise :class:`~mpm.errors.ConfigError`
  (``allow_mixed=True``: the column is marked MIXED and a per-row device column is added);
- hide synthetic data or random weights: the caption says so (``dataset.synthetic`` of an
  evaluation, ``model.weights == "random-init"`` of a timing).

Evaluations and timings are joined on the model (the checkpoint's path, else its name when that
is unambiguous, else — for GPU hosts that cannot download checkpoints — random-initialised
weights of the same size and crop, which the caption then states) and the method (name,
schedule, batch policy and parameters).

This module is the builder (:class:`Paper`, :func:`build_paper`); the pieces it uses live beside it:
:mod:`mpm.tables.results` (reading records), :mod:`mpm.tables.labels` (method, schedule and model
texts), :mod:`mpm.tables.frames` (one row per record), :mod:`mpm.tables.columns` (timing columns)
and :mod:`mpm.tables.render` (:class:`~mpm.tables.render.Table` as Markdown, LaTeX, CSV, HTML).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mpm.errors import ConfigError
from mpm.io import write_json_atomic
from mpm.methods import PAPER_METHOD, is_dense
from mpm.tables.bench import CUDA_BACKEND_LABELS, backend_label
from mpm.tables.columns import TimingColumn
from mpm.tables.frames import _method_sort_key, eval_frame, timing_frame
from mpm.tables.labels import SIZE_ORDER, _crop, _slug
from mpm.tables.render import Table, concat_frames, mark_not_significant, write_table
from mpm.tables.results import Results, load_results

INDEX_SCHEMA = "mpm.tables/1"

#: backends of the throughput columns of the GPU target ("FA2 off", "FA2 on", "Triton FA" on a CUDA device; a
#: backend without results has no column)
GPU_BACKENDS = tuple(CUDA_BACKEND_LABELS)


@dataclass
class _Group:
    """The evaluations of one dataset, split and model."""

    dataset: str
    split: str
    model_key: str
    rows: pd.DataFrame
    slug: str = ""

    @property
    def info(self) -> dict:
        r = self.rows.iloc[0]
        return {"model_key": self.model_key, "model_id": r["model_id"], "size": r["size"], "crop": _crop(r["crop"])}

    @property
    def title(self) -> str:
        r = self.rows.iloc[0]
        split = f"/{self.split}" if self.split else ""
        return f"{r['model']} ({r['model_id']}) on {self.dataset}{split}"


class Paper:
    """Every table and figure of one set of results.

    ``gpu_target``: target whose images/s of the backends with a column label (FA2 off / on, Triton FA) at
    ``batch_size`` fill the tables (``None``: the only CUDA target among the results, if there is exactly one). ``cpu_target``: target whose
    per-image latency at ``cpu_batch_sizes`` (backend ``cpu_backend``) fills the cross-platform
    table (``None``: the only CPU target, if exactly one).
    """

    def __init__(self, results: Results, *, gpu_target: str | None = None, cpu_target: str | None = None,
                 batch_size: int = 32, cpu_batch_sizes: Sequence[int] = (1, 2), cpu_backend: str = "math",
                 allow_mixed: bool = False) -> None:
        self.results = results
        self.batch_size, self.cpu_batch_sizes = int(batch_size), tuple(int(b) for b in cpu_batch_sizes)
        self.allow_mixed = allow_mixed
        self.warnings: list[str] = []
        self.ev = eval_frame(results.evals)
        self.tp = timing_frame(results.benches)
        self._check_eval_duplicates()
        self.gpu_target = gpu_target or self._auto_target("cuda", "GPU")
        self.cpu_target = cpu_target or self._auto_target("cpu", "CPU")
        self.gpu_columns = [c for c in (self._column(self.gpu_target, backend, self.batch_size, "ips")
                                        for backend in GPU_BACKENDS) if c is not None]
        self.cpu_columns = [c for c in (self._column(self.cpu_target, cpu_backend, bs, "ms", f"b{bs}")
                                        for bs in self.cpu_batch_sizes) if c is not None]
        self.groups = self._groups()

    # -- set-up
    def _auto_target(self, kind: str, what: str) -> str | None:
        if self.tp.empty:
            return None
        targets = sorted(set(self.tp.loc[self.tp["device_kind"] == kind, "target"].dropna()))
        if len(targets) == 1:
            self.warnings.append(f"{what} target not given: using {targets[0]!r}, the only {kind} target in the results")
            return targets[0]
        if targets:
            self.warnings.append(f"{what} target not given and several {kind} targets found ({', '.join(targets)}): "
                                 f"no {what} columns")
        return None

    def _column(self, target: str | None, backend: str, batch_size: int, kind: str,
                label: str | None = None) -> TimingColumn | None:
        """The column of ``target``'s results with ``backend`` at ``batch_size``, or None. ``label``: default
        the backend as run (:func:`~mpm.tables.bench.backend_label`). A backend the target has no result of
        at any batch size was not asked for: no column, no warning."""
        if not target or self.tp.empty:
            return None
        of_target = self.tp[self.tp["target"] == target]
        if of_target.empty:
            self.warnings.append(f"no benchmark results for target {target!r} (targets found: "
                                 f"{', '.join(sorted(set(self.tp['target'].dropna()))) or 'none'})")
            return None
        sel = of_target[(of_target["backend"] == backend) & (of_target["batch_size"] == batch_size)]
        if sel.empty and not (of_target["backend"] == backend).any():
            return None
        if sel.empty:
            have = sorted({f"{b} bs{s}" for b, s in zip(of_target["backend"], of_target["batch_size"])})
            self.warnings.append(f"target {target!r}: no results with backend {backend} at batch {batch_size} "
                                 f"(found: {', '.join(have)})")
            return None
        if label is None:
            kinds = set(sel["device_kind"])
            label = backend_label(backend, kinds.pop() if len(kinds) == 1 else "mixed")
        return TimingColumn(sel, target=target, backend=backend, batch_size=batch_size, kind=kind, label=label,
                            allow_mixed=self.allow_mixed, warnings=self.warnings)

    def _check_eval_duplicates(self) -> None:
        if self.ev.empty:
            return
        ident = ["dataset", "split", "model_key", "method_key", "extent_key", "eval_setup"]
        keep = []
        for _, g in self.ev.groupby(ident, sort=False):
            if len(g) > 1 and (g["mIoU"].nunique() > 1 or g["gflops"].nunique() > 1):
                raise ConfigError(f"{g['dataset'].iloc[0]} {g['model_id'].iloc[0]} {g['label'].iloc[0]}: evaluated more "
                                  f"than once with different results ({', '.join(map(str, g['file']))}); "
                                  "remove the stale file(s)")
            keep.append(g.index[0])
        self.ev = self.ev.loc[sorted(keep)].reset_index(drop=True)

    def _groups(self) -> list[_Group]:
        if self.ev.empty:
            return []
        groups = []
        for (dataset, split, mk), g in self.ev.groupby(["dataset", "split", "model_key"], sort=False):
            keys = [_method_sort_key(r.method_name, r.batch_policy, r.schedule, r.method_key) + (r.partial,)
                    for r in g.itertuples()]
            rows = g.iloc[sorted(range(len(g)), key=lambda i: keys[i])]
            rows = rows.assign(dmIoU=self._deltas(rows))
            groups.append(_Group(dataset, split, mk, rows.reset_index(drop=True)))
        groups.sort(key=lambda gr: (gr.dataset, gr.split, SIZE_ORDER.get(str(gr.rows["size"].iloc[0]), 9),
                                    gr.rows["model_id"].iloc[0]))
        used: set[str] = set()
        for gr in groups:
            base = _slug(f"{gr.dataset}{'' if gr.split in ('', 'val') else '-' + gr.split}_{gr.rows['model_id'].iloc[0]}")
            slug, n = base, 2
            while slug in used:
                slug, n = f"{base}-{n}", n + 1
            used.add(slug)
            gr.slug = slug
        return groups

    @staticmethod
    def _deltas(rows: pd.DataFrame) -> list[float]:
        """mIoU minus the dense run's of the same extent (same eval setup preferred); NaN without one."""
        dense = rows[rows["method_name"].map(is_dense)]
        out = []
        for r in rows.itertuples():
            same = dense[dense["extent_key"] == r.extent_key]
            pref = same[same["eval_setup"] == r.eval_setup]
            ref = pref if not pref.empty else same
            out.append(r.mIoU - float(ref["mIoU"].iloc[0]) if not ref.empty else math.nan)
        return out

    def _eval_ids(self) -> dict[str, set[str]]:
        ids: dict[str, set[str]] = {}
        for mid, mk in zip(self.ev["model_id"], self.ev["model_key"]):
            ids.setdefault(mid, set()).add(mk)
        return ids

    # -- shared pieces
    def _timing_cells(self, group: _Group, rows: pd.DataFrame, frame: pd.DataFrame, notes: list[str],
                      columns: Sequence[TimingColumn], values: bool = True) -> set[str]:
        """Add each column's values and speedups for ``rows`` to ``frame``; return the weights used."""
        used: set[str] = set()
        ids = self._eval_ids()
        for col in columns:
            mk, how = col.resolve_model(group.info, ids)
            if mk is None:
                notes.append(f"{col.value_header}: no timing of this model on target {col.target}.")
                continue
            used.add("random-init" if how == "random-init" else "checkpoint")
            if values:
                frame[col.value_header] = [col.value(mk, k) for k in rows["method_key"]]
            frame[col.speedup_header] = [col.speedup(mk, k) for k in rows["method_key"]]
            mark_not_significant(frame, col.speedup_header, [col.significant(mk, k) for k in rows["method_key"]])
            if col.mixed:
                frame[col.device_header] = [col.device(mk, k) for k in rows["method_key"]]
            extra = " Timed with RANDOM-INITIALISED weights of the same architecture (the tokens merged are those " \
                    "of random weights, not of this checkpoint)." if how == "random-init" else \
                    " Model matched by checkpoint file name." if how.startswith("checkpoint (") else ""
            notes.append(col.note() + extra)
        return used

    @staticmethod
    def _provenance(evals: pd.DataFrame, weights: set[str]) -> str:
        parts = []
        if not evals.empty and evals["synthetic"].any():
            parts.append("SYNTHETIC data (dataset.synthetic), not the paper's datasets")
        if "random-init" in weights:
            parts.append("timings with RANDOM-INITIALISED weights (model.weights = random-init)")
        return (" — " + "; ".join(parts) + ".") if parts else ""

    @staticmethod
    def _extent_notes(rows: pd.DataFrame) -> list[str]:
        notes = []
        if rows["partial"].any():
            notes.append("Partial evaluations (an image limit) are marked in `extent`; their mIoU is not comparable "
                         "with full runs, and ΔmIoU is taken only against a dense run of the same extent.")
        missing = rows[rows["dmIoU"].isna()]
        for r in missing.itertuples():
            what = "full" if not r.partial else f"partial, {r.evaluated}/{r.total} images"
            notes.append(f"{r.label} ({r.extent}): no ΔmIoU — no dense run of the same extent ({what}).")
        if rows["eval_setup"].nunique() > 1:
            notes.append("mIoU comes from evaluations on different devices/dtypes/backends: see `eval setup`.")
        return notes

    # -- the tables
    def main_tables(self) -> list[Table]:
        """The main table of each dataset and model."""
        tables = []
        for gr in self.groups:
            rows = gr.rows
            frame = pd.DataFrame({
                "method": rows["method"], "schedule": rows["schedule_name"], "blocks": rows["schedule_text"],
                "extent": rows["extent"],
                "mIoU": rows["mIoU"], "ΔmIoU": rows["dmIoU"],
                "GFLOPs": pd.to_numeric(rows["gflops"], errors="coerce"),
            })
            notes: list[str] = []
            weights = self._timing_cells(gr, rows, frame, notes, self.gpu_columns)
            if rows["eval_setup"].nunique() > 1:
                frame["eval setup"] = rows["eval_setup"]
            notes = self._extent_notes(rows) + [
                "schedule: the config's name of the schedule; blocks: the encoder blocks it merges at (0-based).",
                "GFLOPs: per image as evaluated (sliding windows), 1 multiply-add = 2 FLOPs."] + notes
            if not self.gpu_columns:
                notes.append("No GPU throughput columns: " + ("no GPU target given or found." if not self.gpu_target else
                                                              f"no results of target {self.gpu_target!r} at batch "
                                                              f"{self.batch_size} (see warnings)."))
            caption = f"{gr.title}: accuracy, cost and throughput{self._provenance(rows, weights)}"
            tables.append(Table(f"main_{gr.slug}", caption, frame.reset_index(drop=True), notes))
        return tables

    def cross_platform_table(self) -> Table | None:
        """Per model and method: GPU images/s (FA2 off/on) and CPU ms per image, with speedups."""
        columns = self.gpu_columns + self.cpu_columns
        if not columns:
            return None
        keys: dict[tuple[str, str], Any] = {}
        for col in columns:
            for key, row in col.cells.items():
                keys.setdefault(key, row)
        ids: dict[str, set[str]] = {}
        for (mk, _), row in keys.items():
            ids.setdefault(row.model_id, set()).add(mk)
        order = sorted(keys, key=lambda k: (SIZE_ORDER.get(str(keys[k].size), 9), str(keys[k].size), keys[k].weights,
                                            k[0], _method_sort_key(keys[k].method_name, keys[k].batch_policy,
                                                                   keys[k].schedule, k[1])))
        def weights_text(mk: str, row) -> str:
            if row.weights != "checkpoint":
                return row.weights
            return row.model_id if len(ids[row.model_id]) == 1 else f"{row.model_id} ({Path(mk).parent.name})"

        frame = pd.DataFrame({
            "model": [keys[k].model for k in order],
            "weights": [weights_text(k[0], keys[k]) for k in order],
            "method": [keys[k].method for k in order],
            "schedule": [keys[k].schedule_name for k in order],
            "blocks": [keys[k].schedule_text for k in order],
        })
        notes = []
        for col in columns:
            frame[col.value_header] = [col.value(mk, kk) for mk, kk in order]
            frame[col.speedup_header] = [col.speedup(mk, kk) for mk, kk in order]
            mark_not_significant(frame, col.speedup_header, [col.significant(mk, kk) for mk, kk in order])
            if col.mixed:
                frame[col.device_header] = [col.device(mk, kk) for mk, kk in order]
            notes.append(col.note())
        weights = {keys[k].weights for k in order}
        evals = self.ev[self.ev["model_key"].isin({k[0] for k in order})] if not self.ev.empty else self.ev
        targets = " and ".join(dict.fromkeys(c.target for c in columns))
        caption = f"Throughput and latency across platforms ({targets}){self._provenance(evals, weights)}"
        return Table("cross_platform", caption, frame, notes)

    def ablation_table(self) -> Table | None:
        """MPM's insertion schedules: tokens left after each insertion, GFLOPs, mIoU, ΔmIoU, speedups."""
        parts, notes, weights, synthetic = [], [], set(), []
        for gr in self.groups:
            names = gr.rows["method_name"]
            rows = gr.rows[names.map(is_dense) | (names == PAPER_METHOD)].reset_index(drop=True)
            if not (rows["method_name"] == PAPER_METHOD).any():
                continue
            frame = pd.DataFrame({
                "dataset": gr.dataset, "model": f"{rows['model'].iloc[0]} ({rows['model_id'].iloc[0]})",
                "method": rows["label"], "schedule": rows["schedule_name"], "extent": rows["extent"],
                "image tokens": pd.to_numeric(rows["image_tokens"], errors="coerce"),
                "tokens after each insertion": [" → ".join(_tokens_text(t) for t in ts) for ts in rows["tokens_after"]],
                "GFLOPs": pd.to_numeric(rows["gflops"], errors="coerce"),
                "mIoU": rows["mIoU"], "ΔmIoU": rows["dmIoU"],
            })
            col_notes: list[str] = []
            weights |= self._timing_cells(gr, rows, frame, col_notes, self.gpu_columns + self.cpu_columns[:1],
                                          values=False)
            notes += [f"{gr.title}: {n}" for n in self._extent_notes(rows)]
            notes += [n for n in col_notes if n not in notes]
            synthetic.append(rows)
            parts.append(frame)
        if not parts:
            return None
        frame = concat_frames(parts)
        notes = [("tokens: mean image tokens left after each MPM insertion (over all sliding windows); "
                  "image tokens: before any merge."), *notes]
        caption = "MPM insertion schedules" + self._provenance(pd.concat(synthetic), weights)
        return Table("ablation_schedules", caption, frame, notes)

    def tables(self) -> list[Table]:
        out = self.main_tables()
        for extra in (self.cross_platform_table(), self.ablation_table()):
            if extra is not None:
                out.append(extra)
        return out

    # -- figures
    def figure_data(self, group: _Group) -> tuple[pd.DataFrame, str, str, bool]:
        """Points of one group's Pareto figure: (frame with ``x``, x label, x column, lower is better)."""
        rows = group.rows
        ids = self._eval_ids()
        for col in self.gpu_columns + self.cpu_columns:
            mk, how = col.resolve_model(group.info, ids)
            if mk is None:
                continue
            vals = [col.value(mk, k) for k in rows["method_key"]]
            if col.kind == "ms":
                vals = [1000.0 / v if v and not math.isnan(v) else math.nan for v in vals]
            if any(not math.isnan(v) for v in vals):
                extra = ", random-init weights" if how == "random-init" else ""
                xlabel = (f"images/s ({col.target}: {col.device_text}, {col.backend}, batch {col.batch_size}{extra}"
                          + (", 1000 / ms per image" if col.kind == "ms" else "") + ")")
                return rows.assign(x=vals), xlabel, col.value_header, False
        return rows.assign(x=pd.to_numeric(rows["gflops"], errors="coerce")), \
            "GFLOPs per image (lower is cheaper; no timing)", "GFLOPs", True

    def figures(self) -> Iterable[tuple[str, Any]]:
        """``(name, matplotlib figure)`` pairs: Pareto front and tokens per block of each dataset and model."""
        from mpm.tables.figures import speed_accuracy_figure, tokens_layer_figure

        for gr in self.groups:
            note = "SYNTHETIC data" if gr.rows["synthetic"].any() else None
            data, xlabel, _, lower = self.figure_data(gr)
            yield f"pareto_{gr.slug}", speed_accuracy_figure(data, xlabel=xlabel, title=gr.title,
                                                             lower_is_better=lower, note=note)
            yield f"tokens_{gr.slug}", tokens_layer_figure(gr.rows, title=gr.title, note=note)

    # -- writing
    def write(self, out_tables: str | Path, out_figures: str | Path, index: str | Path | None = None,
              figures: bool = True) -> dict:
        """Write every table and figure; return (and write to ``index``) what was written."""
        from mpm.tables.figures import save_figure

        out_tables, out_figures = Path(out_tables), Path(out_figures)
        out_tables.mkdir(parents=True, exist_ok=True)
        out_figures.mkdir(parents=True, exist_ok=True)
        index = Path(index) if index else out_tables / "index.json"
        written: dict = {
            "schema": INDEX_SCHEMA,
            "tables": [], "figures": [],
            "inputs": {"eval": len(self.results.evals), "bench": len(self.results.benches),
                       "files": len(self.results.files), "duplicates_ignored": self.results.duplicates,
                       "skipped": self.results.skipped},
            "options": {"gpu_target": self.gpu_target, "cpu_target": self.cpu_target, "batch_size": self.batch_size,
                        "cpu_batch_sizes": list(self.cpu_batch_sizes), "allow_mixed": self.allow_mixed},
            "warnings": self.warnings,
        }
        for table in self.tables():
            files = write_table(table, out_tables)
            written["tables"].append({"name": table.name, "caption": table.caption, "notes": table.notes,
                                      "rows": len(table.frame), "columns": [str(c) for c in table.frame.columns],
                                      "files": [str(f) for f in files]})
        if figures:
            for name, fig in self.figures():
                files = save_figure(fig, out_figures, name)
                written["figures"].append({"name": name, "files": [str(f) for f in files]})
        _remove_stale(index, written, (out_tables, out_figures))
        write_json_atomic(index, written)
        return written


def _tokens_text(t: float) -> str:
    return f"{t:.0f}" if abs(t) >= 100 else f"{t:.1f}"


def _remove_stale(index: Path, written: dict, folders: Sequence[Path]) -> None:
    """Delete files a previous run listed in ``index`` that this run did not write (inside ``folders`` only)."""
    try:
        old = json.loads(index.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict) or old.get("schema") != INDEX_SCHEMA:
        return
    now = {str(Path(f).resolve()) for kind in ("tables", "figures") for e in written[kind] for f in e["files"]}
    roots = [f.resolve() for f in folders]
    for kind in ("tables", "figures"):
        for entry in old.get(kind) or []:
            for f in entry.get("files") or []:
                p = Path(f).resolve()
                if str(p) not in now and any(r in p.parents for r in roots) and p.is_file():
                    p.unlink()


def build_paper(paths: Iterable[str | Path], out_tables: str | Path = "results/tables",
                out_figures: str | Path = "results/figures", *, manifest: str | Path | None = None,
                gpu_target: str | None = None, cpu_target: str | None = None, batch_size: int = 32,
                cpu_batch_sizes: Sequence[int] = (1, 2), cpu_backend: str = "math", allow_mixed: bool = False,
                index: str | Path | None = None, figures: bool = True) -> dict:
    """Read result files/folders (and a manifest), write every table and figure, return the index."""
    results = load_results(paths, manifest)
    if not results.evals and not results.benches:
        raise ConfigError("no mpm.eval/1 or mpm.bench/1 records among the given files")
    paper = Paper(results, gpu_target=gpu_target, cpu_target=cpu_target, batch_size=batch_size,
                  cpu_batch_sizes=cpu_batch_sizes, cpu_backend=cpu_backend, allow_mixed=allow_mixed)
    return paper.write(out_tables, out_figures, index=index, figures=figures)
