"""``mpm tables`` end to end."""

from __future__ import annotations

import json

from mpm.cli import main


def _records(make_eval, make_bench):
    evals = [make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680])]
    benches = [make_bench(m, s, b, ips) for m, s, b, ips in
               (("none", [], "math", 100.0), ("none", [], "fa2", 300.0),
                ("mpm", [2, 5], "math", 125.0), ("mpm", [2, 5], "fa2", 360.0))]
    return evals, benches


def test_cli_folders_files_and_manifest(make_eval, make_bench, write, tmp_path, capsys) -> None:
    evals, benches = _records(make_eval, make_bench)
    eval_files, bench_files = write(evals, "eval"), write(benches, "bench")
    rc = main(["tables", "--eval-results", str(tmp_path / "eval"), "--bench-results", *map(str, bench_files),
               "--out-tables", str(tmp_path / "t"), "--out-figures", str(tmp_path / "f"),
               "--gpu-target", "h100", "--batch-size", "32"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "3 tables, 2 figures from 2 evaluations and 4 benchmarks" in out
    index = json.loads((tmp_path / "t" / "index.json").read_text())
    assert index["options"]["gpu_target"] == "h100" and index["options"]["batch_size"] == 32
    assert {t["name"] for t in index["tables"]} == {"main_ade20k_seg_t_mask", "cross_platform", "ablation_schedules"}
    for table in index["tables"]:
        assert all((tmp_path / "t").joinpath(f.split("/")[-1]).exists() for f in table["files"])
    md = (tmp_path / "t" / "main_ade20k_seg_t_mask.md").read_text()
    assert "| MPM | 2-5 | 2,5 | full | 37.50 | -0.50 | 19.00 | 125.0 | 1.25 | 360.0 | 1.20 |" in md

    # the same through a manifest (relative paths from the manifest's folder, comments ignored),
    # an empty --gpu-target (Snakemake's empty config value) and the default batch size
    manifest = tmp_path / "list.txt"
    manifest.write_text("# results\n" + "\n".join(str(p.relative_to(tmp_path)) for p in eval_files + bench_files) + "\n")
    rc = main(["tables", "--manifest", str(manifest), "--out-tables", str(tmp_path / "t2"),
               "--out-figures", str(tmp_path / "f2"), "--gpu-target", "--no-figures", "--index",
               str(tmp_path / "t2" / "done.json")])
    assert rc == 0
    done = json.loads((tmp_path / "t2" / "done.json").read_text())
    assert done["options"]["gpu_target"] == "h100"  # the only CUDA target, chosen and said so
    assert any("using 'h100'" in w for w in done["warnings"]) and done["figures"] == []
    assert "warning: GPU target not given" in capsys.readouterr().err


def test_cli_errors(make_eval, make_bench, write, tmp_path, capsys) -> None:
    broken = tmp_path / "res" / "broken.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    assert main(["tables", "--eval-results", str(tmp_path / "res"), "--out-tables", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "mpm tables: error: result file" in err and "broken.json: invalid JSON" in err
    assert not (tmp_path / "t" / "index.json").exists()

    assert main(["tables", "--manifest", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert "manifest" in err and "nope.txt" in err
    assert main(["tables"]) == 2
    assert "no result files given" in capsys.readouterr().err

    evals, benches = _records(make_eval, make_bench)
    benches.append(make_bench("tome", [0, 1], "math", 80.0, device="NVIDIA A100-SXM4-80GB", r=8))
    files = write(evals + benches, "good")
    assert main(["tables", "--eval-results", str(files[0].parent), "--out-tables",
                 str(tmp_path / "t3"), "--out-figures", str(tmp_path / "f3"), "--gpu-target", "h100"]) == 2
    err = capsys.readouterr().err
    assert "different hardware" in err and "A100" in err and "--allow-mixed" in err
    assert main(["tables", "--eval-results", str(files[0].parent), "--out-tables", str(tmp_path / "t3"),
                 "--out-figures", str(tmp_path / "f3"), "--gpu-target", "h100", "--allow-mixed", "--no-figures"]) == 0
    assert "MIXED devices" in (tmp_path / "t3" / "cross_platform.md").read_text()
