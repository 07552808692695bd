"""Issue 11's trace, repeated: the config's schedule name reaches the eval JSON, the bench JSON, the MLflow
runs and the table row, through the real workflow (the CI demo shrunk: tests/workflow's tiny config)."""

from __future__ import annotations

import json

from workflow.conftest import snakemake, tiny_config, write_config


def test_the_configs_schedule_name_reaches_every_layer(tmp_path):
    cfg = tiny_config(tmp_path)
    # a name no rule could rebuild from the blocks [2, 5]
    cfg["methods"] = {"none": {"schedules": {"dense": []}}, "mpm": {"schedules": {"paper-default": [2, 5]}}}
    config = write_config(tmp_path / "config.yaml", cfg)
    proc = snakemake("--cores", "2", "--configfile", str(config), timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = tmp_path / "results"

    ev = json.loads((results / "eval/synthetic/seg-t-demo/mpm/paper-default.json").read_text())
    assert ev["names"] == {"dataset": "synthetic", "model": "seg-t-demo", "method": "mpm", "schedule": "paper-default"}
    assert ev["method"]["schedule"] == [2, 5]  # the resolved blocks beside the name
    bench = json.loads((results / "bench/local/seg-t-demo/mpm/paper-default/bs1-math-float32-eager.json").read_text())
    assert bench["names"] == ev["names"] and bench["method"]["schedule"] == [2, 5]
    dense = json.loads((results / "eval/synthetic/seg-t-demo/none/dense.json").read_text())
    assert dense["names"]["schedule"] == "dense"

    from mpm.tracking import resolve_store

    client = resolve_store(f"sqlite:///{results}/mlruns/mlflow.db").client()
    exp = client.get_experiment_by_name(cfg["experiment"])
    runs = client.search_runs([exp.experiment_id], "tags.`mpm.schedule_name` = 'paper-default'")
    assert sorted(r.data.tags["mpm.kind"] for r in runs) == ["bench", "eval"]
    assert all(r.data.params["names.schedule"] == "paper-default" and r.data.params["names.model"] == "seg-t-demo"
               for r in runs)

    (table,) = (results / "tables").glob("main_*.md")
    [row] = [line for line in table.read_text().splitlines() if line.startswith("| MPM |")]
    assert row.rstrip(" |").endswith("paper-default"), row
