"""The paper's tables (mpm.tables.paper) from result records in the real layouts."""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from mpm.errors import ConfigError
from mpm.tables.frames import eval_frame, timing_frame
from mpm.tables.labels import schedule_text
from mpm.tables.paper import Paper, build_paper
from mpm.tables.render import Table, cell_text, render_html, render_latex
from mpm.tables.results import load_results


def _csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {f"{r['method']}|{r.get('schedule', '')}|{r.get('extent', '')}": r for r in rows}


def _num(v: str) -> float:
    return float(v) if v != "" else math.nan


H100, PI = "NVIDIA H100 80GB HBM3", "Cortex-A76"  # as in conftest.py


@pytest.fixture()
def standard(make_eval, make_bench, write):
    """Dense, MPM(2,5) and a partial MPM(5) on ADE20K; H100 FA2 off/on at batch 32 and 1; Pi 5 batch 1/2."""
    evals = [make_eval("none", [], 38.0, 25.3),
             make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680]),
             make_eval("mpm", [5], 36.0, 22.0, tokens=[790], limit=10)]
    benches = [make_bench("none", [], "math", 100.0), make_bench("none", [], "fa2", 300.0),
               make_bench("mpm", [2, 5], "math", 125.0), make_bench("mpm", [2, 5], "fa2", 360.0),
               make_bench("none", [], "math", 50.0, batch=1), make_bench("mpm", [2, 5], "math", 40.0, batch=1)]
    pi = {"target": "rpi5", "target_type": "ssh", "device": PI, "dtype": "float32", "kind": "cpu", "threads": 4}
    benches += [make_bench("none", [], "math", 1.0, batch=1, **pi), make_bench("mpm", [2, 5], "math", 1.6, batch=1, **pi),
                make_bench("none", [], "math", 1.05, batch=2, **pi),
                make_bench("mpm", [2, 5], "math", 1.75, batch=2, **pi)]
    return write(evals, "eval") + write(benches, "bench")


def test_main_table_deltas_speedups_and_partial_rows(standard, tmp_path) -> None:
    written = build_paper(standard, tmp_path / "tables", tmp_path / "figures", gpu_target="h100", cpu_target="rpi5",
                          batch_size=32)
    assert [t["name"] for t in written["tables"]] == ["main_ade20k_seg_t_mask", "cross_platform", "ablation_schedules"]
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "tables" / f"main_ade20k_seg_t_mask.{ext}").stat().st_size > 100
    rows = _csv(tmp_path / "tables" / "main_ade20k_seg_t_mask.csv")
    # dense first, then by number of insertions
    assert list(rows) == ["none|dense|full", "MPM|5|partial (10/60 images)", "MPM|2-5|full"]
    dense, partial, mpm = rows.values()
    off, on = f"img/s FA2 off (h100: {H100[7:]})", f"img/s FA2 on (h100: {H100[7:]})"
    assert float(dense["ΔmIoU"]) == 0.0 and float(mpm["ΔmIoU"]) == pytest.approx(-0.5)
    assert float(mpm["GFLOPs"]) == pytest.approx(19.0)
    assert float(mpm[off]) == 125.0 and float(mpm[on]) == 360.0
    assert float(mpm["speedup FA2 off"]) == pytest.approx(1.25) and float(mpm["speedup FA2 on"]) == pytest.approx(1.2)
    assert float(dense["speedup FA2 off"]) == pytest.approx(1.0)
    # the partial run is marked, never compared with the full dense run, and has no timing
    assert partial["ΔmIoU"] == "" and math.isnan(_num(partial[off]))
    md = (tmp_path / "tables" / "main_ade20k_seg_t_mask.md").read_text()
    assert "partial (10/60 images)" in md and "no ΔmIoU" in md
    assert f"target h100 ({H100}, float16), backend math, batch 32" in md
    tex = (tmp_path / "tables" / "main_ade20k_seg_t_mask.tex").read_text()
    assert "\\toprule" in tex and "$\\Delta$mIoU" in tex and "seg\\_t\\_mask" in tex
    assert not re.search(r"(?<!\\)_", tex.split("\\label")[0])  # every _ of the caption escaped
    index = json.loads((tmp_path / "tables" / "index.json").read_text())
    assert index["schema"] == "mpm.tables/1" and index["inputs"]["eval"] == 3 and index["inputs"]["bench"] == 10


def test_cross_platform_and_ablation(standard, tmp_path) -> None:
    build_paper(standard, tmp_path / "t", tmp_path / "f", gpu_target="h100", cpu_target="rpi5", figures=False)
    cross = _csv(tmp_path / "t" / "cross_platform.csv")
    mpm = cross["MPM|2-5|"]
    assert mpm["weights"] == "seg_t_mask" and mpm["model"] == "Seg-T/16"
    assert float(mpm[f"ms/img b1 (rpi5: {PI})"]) == pytest.approx(625.0)
    assert float(mpm["speedup b1 (rpi5)"]) == pytest.approx(1.6)
    assert float(mpm["speedup b2 (rpi5)"]) == pytest.approx(1.75 / 1.05)
    assert float(mpm["speedup FA2 on"]) == pytest.approx(1.2)
    md = (tmp_path / "t" / "cross_platform.md").read_text()
    assert f"target rpi5 ({PI}, float32, 4 threads), backend math, batch 1" in md

    with open(tmp_path / "t" / "ablation_schedules.csv", newline="") as f:
        abl = {r["method"]: r for r in csv.DictReader(f)}
    assert list(abl) == ["none", "MPM(5)", "MPM(2,5)"]
    assert abl["MPM(2,5)"]["tokens after each insertion"] == "800 → 680"
    assert float(abl["MPM(2,5)"]["ΔmIoU"]) == pytest.approx(-0.5) and abl["MPM(5)"]["ΔmIoU"] == ""
    assert abl["MPM(5)"]["extent"] == "partial (10/60 images)"
    assert float(abl["MPM(2,5)"]["speedup FA2 off"]) == pytest.approx(1.25)
    assert float(abl["MPM(2,5)"]["speedup b1 (rpi5)"]) == pytest.approx(1.6)


def test_partial_runs_compare_only_with_a_dense_run_of_the_same_limit(make_eval) -> None:
    res = load_results([])
    res.evals = [make_eval("none", [], 40.0, 25.0), make_eval("none", [], 42.0, 25.0, limit=10),
                 make_eval("mpm", [2, 5], 41.0, 19.0, limit=10), make_eval("mpm", [5], 39.0, 22.0, limit=20),
                 make_eval("mpm", [1, 3, 5], 39.5, 18.0)]
    (table,) = Paper(res).main_tables()
    f = table.frame.set_index(["schedule", "extent"])
    assert f.loc[("2-5", "partial (10/60 images)"), "ΔmIoU"] == pytest.approx(-1.0)   # vs dense limit 10
    assert f.loc[("1-3-5", "full"), "ΔmIoU"] == pytest.approx(-0.5)                  # vs full dense
    assert math.isnan(f.loc[("5", "partial (20/60 images)"), "ΔmIoU"])               # no dense at limit 20
    assert any("MPM(5) (partial (20/60 images)): no ΔmIoU" in n for n in table.notes)
    # dense rows: the full one first
    assert list(table.frame["extent"][:2]) == ["full", "partial (10/60 images)"]


def test_different_hardware_in_one_column_is_refused_or_marked(make_eval, make_bench) -> None:
    res = load_results([])
    res.evals = [make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680])]
    res.benches = [make_bench("none", [], "math", 100.0),
                   make_bench("mpm", [2, 5], "math", 130.0, device="NVIDIA A100-SXM4-80GB")]
    for b in res.benches:
        b["_file"] = f"{b['environment']['device_name']}.json"
    with pytest.raises(ConfigError, match="different hardware.*A100.*H100"):
        Paper(res, gpu_target="h100")
    (table,) = Paper(res, gpu_target="h100", allow_mixed=True).main_tables()
    header = "img/s FA2 off (h100: MIXED devices)"
    assert header in table.frame.columns
    assert list(table.frame[f"device ({header})"]) == [f"{H100}, float16", "NVIDIA A100-SXM4-80GB, float16"]
    # no speedup across devices
    assert math.isnan(table.frame["speedup FA2 off"].iloc[1])


def test_different_dtype_in_one_column_is_refused(make_eval, make_bench) -> None:
    res = load_results([])
    res.benches = [make_bench("none", [], "math", 100.0), make_bench("mpm", [2, 5], "math", 130.0, dtype="bfloat16")]
    with pytest.raises(ConfigError, match="bfloat16"):
        Paper(res, gpu_target="h100")


def test_repeated_measurements_with_different_results_are_refused(make_bench) -> None:
    res = load_results([])
    res.benches = [make_bench("none", [], "math", 100.0), make_bench("none", [], "math", 90.0)]
    with pytest.raises(ConfigError, match="more than once"):
        Paper(res, gpu_target="h100")


def test_target_name_from_the_record_or_its_device(make_bench, write) -> None:
    """``target.name`` where a runner wrote it, else the device: one place each, no other layout."""
    recs = [make_bench("none", [], "math", 1.0, target="a", target_where="top"),
            make_bench("none", [], "math", 1.0, target_where="none", device="Some GPU")]
    tf = timing_frame(recs)
    assert list(tf["target"]) == ["a", "Some GPU"]
    assert list(tf["target_source"]) == ["target", "environment.device_name"]
    # a target written as a bare string is not a record of this schema: refused, naming the file and field
    bad = write([make_bench("none", [], "math", 1.0, target="b", target_where="top-string")])[0]
    with pytest.raises(ConfigError, match=f"{bad.name}.*target"):
        load_results([bad])


def test_random_init_timings_join_by_size_and_crop_and_are_stated(make_eval, make_bench) -> None:
    res = load_results([])
    res.evals = [make_eval("none", [], 38.0, 25.3, crop=(512, 512)),
                 make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680], crop=(512, 512))]
    res.benches = [make_bench("none", [], "math", 100.0, weights="random-init"),
                   make_bench("mpm", [2, 5], "math", 120.0, weights="random-init")]
    (table,) = Paper(res, gpu_target="h100").main_tables()
    assert table.frame["speedup FA2 off"].tolist() == pytest.approx([1.0, 1.2])
    assert "RANDOM-INITIALISED" in table.caption
    assert any("RANDOM-INITIALISED weights of the same architecture" in n for n in table.notes)
    # another crop: not the same model, no timing joined
    res.evals = [make_eval("none", [], 38.0, 25.3, crop=(640, 640))]
    (table,) = Paper(res, gpu_target="h100").main_tables()
    assert "speedup FA2 off" not in table.frame.columns
    assert any("no timing of this model" in n for n in table.notes)


def test_columns_are_named_by_what_ran_and_unasked_backends_are_not_warned_about(make_eval, make_bench) -> None:
    """The demo: the "GPU" target is this host's CPU, timed with math only, at batch 1 and 2."""
    res = load_results([])
    res.evals = [make_eval("none", [], 95.0, 8.0), make_eval("mpm", [2, 5], 94.9, 5.7, tokens=[180, 140])]
    cpu = {"target": "local", "device": "AMD EPYC", "dtype": "float32", "kind": "cpu", "threads": 1}
    res.benches = [make_bench(m, s, "math", ips, batch=b, **cpu)
                   for m, s, ips, b in (("none", [], 16.0, 2), ("mpm", [2, 5], 20.0, 2), ("none", [], 15.0, 1))]
    paper = Paper(res, gpu_target="local", cpu_target="local", batch_size=2)
    (table,) = paper.main_tables()
    assert "img/s CPU math (local: AMD EPYC)" in table.frame.columns
    assert table.frame["speedup CPU math"].tolist() == pytest.approx([1.0, 1.25])
    assert not any("FA2" in str(c) for c in table.frame.columns)
    assert not any("fa2" in w for w in paper.warnings), paper.warnings  # fa2 was never run: nothing to warn about
    # a backend that ran, but not at the table's batch size, is still warned about
    paper = Paper(res, gpu_target="local", cpu_target="local", batch_size=4)
    assert any("no results with backend math at batch 4" in w for w in paper.warnings)


def test_a_third_gpu_backend_gets_its_own_columns(make_eval, make_bench) -> None:
    """Results of the triton backend on the GPU target: a "Triton FA" column beside FA2 off / on, its speedup
    over dense on the same backend (the paper table and the bench table)."""
    from mpm.tables.bench import backend_table, bench_frame

    res = load_results([])
    res.evals = [make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680])]
    res.benches = [make_bench(m, s, b, ips) for m, s, b, ips in (
        ("none", [], "math", 100.0), ("mpm", [2, 5], "math", 125.0), ("none", [], "fa2", 300.0),
        ("mpm", [2, 5], "fa2", 360.0), ("none", [], "triton", 320.0), ("mpm", [2, 5], "triton", 352.0))]
    (table,) = Paper(res, gpu_target="h100", batch_size=32).main_tables()
    cols = [c for c in table.frame.columns if str(c).startswith("img/s")]
    assert cols == [f"img/s {label} (h100: {H100[7:]})" for label in ("FA2 off", "FA2 on", "Triton FA")]
    assert table.frame["speedup Triton FA"].tolist() == pytest.approx([1.0, 1.1])
    bench = backend_table(bench_frame(res.benches), 32)
    assert bench["speedup Triton FA"].tolist() == pytest.approx([1.0, 1.1])
    assert bench["speedup FA2 on"].tolist() == pytest.approx([1.0, 1.2])


def test_html_page_of_each_table(standard, tmp_path) -> None:
    """What `snakemake --report` shows: the caption, every cell as in Markdown, the notes, text escaped."""
    written = build_paper(standard, tmp_path / "t", tmp_path / "f", gpu_target="h100", cpu_target="rpi5",
                          figures=False)
    for entry in written["tables"]:
        assert str(tmp_path / "t" / f"{entry['name']}.html") in entry["files"]
    page = (tmp_path / "t" / "main_ade20k_seg_t_mask.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<caption>Seg-T/16 (seg_t_mask) on ade20k" in page
    assert '<td class="n">125.0</td>' in page and '<td class="n">-0.50</td>' in page and "<td>MPM</td>" in page
    assert "<li>GFLOPs: per image as evaluated" in page
    table = Table("x", "a < b & c", pd.DataFrame({"m": ["<i>"]}), ["n > 1"])
    page = render_html(table)
    assert "a &lt; b &amp; c" in page and "<td>&lt;i&gt;</td>" in page and "n &gt; 1" in page


def test_synthetic_data_is_stated_in_the_caption(make_eval, make_bench) -> None:
    res = load_results([])
    res.evals = [make_eval("none", [], 90.0, 8.0, dataset="synthetic", synthetic=True)]
    (table,) = Paper(res).main_tables()
    assert "SYNTHETIC data" in table.caption and render_latex(table).count("SYNTHETIC") == 1


def test_real_eval_record_is_read(real_eval, write, tmp_path) -> None:
    (path,) = write([real_eval])
    ev = eval_frame(load_results([path]).evals)
    row = ev.iloc[0]
    assert row["dataset"] == "synthetic" and row["synthetic"] and row["label"] == "MPM(2,5)"
    assert row["extent"] == "full" and row["crop"] == (64, 64) and row["depth"] == 12
    assert row["gflops"] == pytest.approx(real_eval["gflops"]["per_image"])
    assert [b for b, _, _ in row["token_steps"]] == [2, 5] and len(row["tokens_after"]) == 2
    written = build_paper([path], tmp_path / "t", tmp_path / "f")
    assert [t["name"] for t in written["tables"]] == ["main_synthetic_tiny", "ablation_schedules"]


def test_errors_name_the_file(tmp_path, make_eval, write) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: invalid JSON"):
        load_results([broken])
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        load_results([tmp_path / "missing.json"])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "something/1"}))
    with pytest.raises(ConfigError, match="other.json: schema 'something/1'"):
        load_results([other])
    rec = make_eval("none", [], 38.0, 25.3)
    del rec["metrics"]["mIoU"]
    (bad,) = write([rec], "bad")
    with pytest.raises(ConfigError, match=f"{bad.name}: mpm.eval/1 record has no metrics.mIoU"):
        load_results([bad])
    rec["metrics"]["mIoU"] = "n/a"
    bad.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="metrics.mIoU = 'n/a' is not a finite number"):
        load_results([bad])


def test_folders_skip_other_json_and_dedupe_copies(make_eval, write, tmp_path) -> None:
    (a,) = write([make_eval("none", [], 38.0, 25.3)], "run")
    (tmp_path / "run" / "copy").mkdir()
    (tmp_path / "run" / "copy" / "again.json").write_text(a.read_text())
    (tmp_path / "run" / "index.json").write_text(json.dumps({"schema": "mpm.tables/1", "tables": []}))
    res = load_results([tmp_path / "run", a])
    assert len(res.evals) == 1 and res.duplicates == 1 and res.skipped == [str(tmp_path / "run" / "index.json")]


def test_conflicting_evaluations_are_refused(make_eval, write) -> None:
    files = write([make_eval("none", [], 38.0, 25.3), make_eval("none", [], 39.0, 25.3)])
    with pytest.raises(ConfigError, match="evaluated more than once"):
        Paper(load_results(files))


def test_stale_outputs_of_a_previous_run_are_removed(make_eval, write, tmp_path) -> None:
    first = write([make_eval("none", [], 38.0, 25.3, dataset="cityscapes")], "a")
    build_paper(first, tmp_path / "t", tmp_path / "f", figures=False)
    assert (tmp_path / "t" / "main_cityscapes_seg_t_mask.md").exists()
    (tmp_path / "t" / "mine.md").write_text("kept")
    build_paper(write([make_eval("none", [], 38.0, 25.3)], "b"), tmp_path / "t", tmp_path / "f", figures=False)
    assert not (tmp_path / "t" / "main_cityscapes_seg_t_mask.md").exists()
    assert (tmp_path / "t" / "main_ade20k_seg_t_mask.md").exists() and (tmp_path / "t" / "mine.md").exists()


def test_latex_needs_no_jinja2_and_escapes(monkeypatch) -> None:
    import pandas as pd

    monkeypatch.setitem(sys.modules, "jinja2", None)  # any import of jinja2 now fails
    table = Table("x_y", "50% of A & B_c", pd.DataFrame({"method": ["ToMe (r=8)", "a_b#"], "ΔmIoU": [0.5, math.nan]}),
                  ["note with $ and ~"])
    tex = render_latex(table)
    assert r"50\% of A \& B\_c" in tex and r"a\_b\#" in tex and "+0.50" in tex and " -- " in tex
    assert r"\$ and \textasciitilde{}" in tex and r"\label{tab:x-y}" in tex
    assert tex.count("&") - tex.count(r"\&") == 3  # one column separator in the header, one per row


def test_labels_and_cells() -> None:
    assert schedule_text(list(range(12))) == "0-11" and schedule_text([1, 2, 5]) == "1,2,5"
    assert cell_text("ΔmIoU", -0.456) == "-0.46" and cell_text("img/s FA2 off (x)", 123.456) == "123.5"
    assert cell_text("mIoU", math.nan) == "—" and cell_text("speedup FA2 on", 1.2) == "1.20"


def test_speedups_within_the_timings_spread_are_marked_not_significant(make_eval, make_bench, write, tmp_path) -> None:
    """A speedup whose range (dense p10 / method p90 .. dense p90 / method p10) holds 1.0 gets a ``*``."""
    evals = [make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680]),
             make_eval("mpm", [5], 37.9, 22.0, tokens=[790])]
    benches = [make_bench("none", [], "fa2", 300.0, spread=0.05),
               make_bench("mpm", [2, 5], "fa2", 360.0, spread=0.05),  # 1.20 [1.09, 1.33]: significant
               make_bench("mpm", [5], "fa2", 309.0, spread=0.05)]  # 1.03 [0.93, 1.14]: not significant
    build_paper(write(evals, "eval") + write(benches, "bench"), tmp_path / "tables", tmp_path / "figures",
                gpu_target="h100", cpu_target="", batch_size=32)
    md = (tmp_path / "tables" / "main_ade20k_seg_t_mask.md").read_text()
    [mpm25] = [line for line in md.splitlines() if line.startswith("| MPM | 2-5 |")]
    [mpm5] = [line for line in md.splitlines() if line.startswith("| MPM | 5 |")]
    assert "| 1.20 |" in mpm25 and "*" not in mpm25
    assert "| 1.03* |" in mpm5
    assert "*: not significant" in md
    tex = (tmp_path / "tables" / "main_ade20k_seg_t_mask.tex").read_text()
    assert "1.03*" in tex
    rows = _csv(tmp_path / "tables" / "main_ade20k_seg_t_mask.csv")  # the CSV keeps plain numbers
    assert float(rows["MPM|5|full"]["speedup FA2 on"]) == pytest.approx(309 / 300)


def test_the_schedule_column_shows_the_configs_name_and_blocks_what_it_resolved_to(make_eval, make_bench) -> None:
    """Issue 11: ToMe's schedule is ``all`` in the config, so ``all`` in the table (blocks ``0-11`` beside it)."""
    res = load_results([])
    tome = make_eval("tome", list(range(12)), 36.0, 20.0, r=8)
    tome["names"]["schedule"] = "all"  # as the workflow records config/demo.yaml's ``tome: {schedules: {all: all}}``
    res.evals = [make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680]), tome]
    bench = make_bench("tome", list(range(12)), "math", 110.0, r=8)
    bench["names"] = {"dataset": None, "model": "seg-t-demo", "method": "tome", "schedule": "all"}
    res.benches = [make_bench("none", [], "math", 100.0), bench]
    paper = Paper(res, gpu_target="h100")
    (table,) = paper.main_tables()
    rows = {m: r for m, r in zip(table.frame["method"], table.frame.to_dict("records"))}
    assert (rows["ToMe (r=8)"]["schedule"], rows["ToMe (r=8)"]["blocks"]) == ("all", "0-11")
    assert (rows["MPM"]["schedule"], rows["MPM"]["blocks"]) == ("2-5", "2,5")
    assert rows["none"]["schedule"] == "dense" and "schedule name" not in table.frame.columns
    cross = paper.cross_platform_table().frame
    assert list(cross["schedule"]) == ["dense", "all"] and list(cross["blocks"]) == ["", "0-11"]


def test_labels_of_rows_and_legends_carry_the_configs_schedule_name(make_eval, make_bench) -> None:
    """Issue 11: figure legends and the ablation's method column name ToMe's schedule ``all``, not its blocks."""
    tome = make_eval("tome", list(range(12)), 36.0, 20.0, r=8)
    tome["names"]["schedule"] = "all"
    algm = make_eval("algm", [0, 4], 36.5, 21.0)
    algm["names"]["schedule"] = "published"
    ev = eval_frame([make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680]),
                     tome, algm])
    assert list(ev["label"]) == ["none", "MPM(2,5)", "ToMe(r=8; all)", "ALGM(published)"]
    assert list(ev["schedule_name"]) == ["dense", "2-5", "all", "published"]
    bench = make_bench("tome", list(range(12)), "math", 110.0, r=8)
    bench["names"] = {"dataset": None, "model": "seg-t-demo", "method": "tome", "schedule": "all"}
    assert list(timing_frame([bench])["label"]) == ["ToMe(r=8; all)"]
