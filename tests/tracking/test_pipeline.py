"""The pipeline's tracking rules (workflow/rules/track.smk) in a real Snakemake run.

A tiny Snakefile includes the rule file (so the test holds wherever the top-level Snakefile
lives): one job writes a result, ``track_result`` logs it, a third job reads the parent run's
status while the invocation still runs; with ``fail`` a job fails. The parent run must be
RUNNING during the invocation and end FINISHED, or FAILED when the invocation fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _track_procs import REPO, cli_env
from _track_results import eval_record, write

pytestmark = pytest.mark.slow

SNAKEFILE = """
import shlex
from pathlib import Path

RESULTS = config["results"]
TRACKING_URI = config["tracking_uri"]
INVOCATION = f"{RESULTS}/mlruns/invocation.key"


include: TRACK_SMK


rule all:
    input:
        f"{RESULTS}/peek.json",
        [f"{RESULTS}/broken.txt"] if config.get("fail") else [],


rule result:
    output:
        f"{RESULTS}/eval/toy/model-a/mpm/2-5.json",
    params:
        record=config["record"],
    shell:
        "cp {params.record} {output}"


rule peek:  # the parent's status while the invocation runs
    input:
        f"{RESULTS}/tracking/eval/toy/model-a/mpm/2-5.json",
    output:
        f"{RESULTS}/peek.json",
    params:
        cmd=f"{config['python']} {config['peek']} {TRACKING_URI} {config['experiment']} $(cat {INVOCATION})",
    shell:
        "{params.cmd} > {output}"


rule broken:
    input:
        f"{RESULTS}/peek.json",
    output:
        f"{RESULTS}/broken.txt",
    shell:
        "echo failing on purpose >&2; exit 3"
"""

PEEK = """
import json, sys
from mlflow.tracking import MlflowClient
uri, experiment, key = sys.argv[1:4]
client = MlflowClient(tracking_uri=uri)
exp = client.get_experiment_by_name(experiment)
[run] = client.search_runs([exp.experiment_id], f"tags.`mpm.parent_key` = '{key}'")
print(json.dumps({"status": run.info.status, "end_time": run.info.end_time}))
"""


def _run_workflow(folder: Path, *, fail: bool) -> tuple[subprocess.CompletedProcess, dict]:
    folder.mkdir(parents=True)
    record = write(folder / "record.json", eval_record(folder / "csv", dataset="toy"))
    (folder / "peek.py").write_text(PEEK)
    (folder / "Snakefile").write_text(f"TRACK_SMK = {str(REPO / 'workflow/rules/track.smk')!r}\n" + SNAKEFILE)
    config = {"experiment": "pipe", "results": "res", "tracking_uri": f"sqlite:///{folder}/res/mlruns/mlflow.db",
              "record": str(record), "peek": str(folder / "peek.py"), "python": sys.executable, "fail": fail}
    (folder / "config.yaml").write_text(json.dumps(config))
    env = cli_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `mpm` of this interpreter
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", "Snakefile", "--cores", "1",
                           "--configfile", "config.yaml", "--nocolor"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    return proc, config


def _parent(config: dict, folder: Path):
    from mpm.tracking import find_runs, resolve_store

    client = resolve_store(config["tracking_uri"]).client()
    exp = client.get_experiment_by_name(config["experiment"])
    key = (folder / "res/mlruns/invocation.key").read_text().strip()
    [parent] = find_runs(client, exp.experiment_id, "mpm.parent_key", key)
    return client, exp, parent


def test_successful_invocation_ends_its_parent_finished(tmp_path):
    proc, config = _run_workflow(tmp_path / "ok", fail=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, exp, parent = _parent(config, tmp_path / "ok")
    peek = json.loads((tmp_path / "ok/res/peek.json").read_text())
    assert peek == {"status": "RUNNING", "end_time": None}  # not FINISHED before the invocation ends
    assert parent.info.status == "FINISHED" and parent.info.end_time >= parent.info.start_time
    [child] = client.search_runs([exp.experiment_id], "tags.`mpm.kind` = 'eval'")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.run_name.startswith("eval toy/val model-a mpm/2-5")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_failed_invocation_ends_its_parent_failed(tmp_path):
    proc, config = _run_workflow(tmp_path / "bad", fail=True)
    assert proc.returncode != 0 and "failing on purpose" in proc.stderr + proc.stdout
    _client, _exp, parent = _parent(config, tmp_path / "bad")
    assert parent.info.status == "FAILED" and parent.info.end_time >= parent.info.start_time
