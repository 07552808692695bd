"""The README's commands load the workflow profile: one timing per device, and a plain re-run after an
interrupt finishes (no IncompleteFilesException, no LockException).

The real DAG runs on a tiny configuration whose timings go to an SSH board (a real OpenSSH server on
127.0.0.1): a board's timings take one core each, so without the profile's cap on bench_<target> two of
them start together on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

PROFILE_LINE = "Using workflow specific profile workflow/profiles/default"


def running_peak(log: str) -> dict[str, int]:
    """Most jobs holding each bench_<target> resource at once, from the order of Snakemake's job starts
    ("rule NAME:" ... "jobid: N" ... "resources: ..., bench_x=1") and "Finished jobid: N" lines."""
    running: dict[str, set[str]] = {}
    peak: dict[str, int] = {}
    jobid, block = None, False
    for line in log.splitlines():
        if re.match(r"^(local)?rule \w+:$", line):
            block, jobid = True, None
        elif block and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            jobid = m.group(1)
        elif block and line.strip().startswith("resources:"):
            for name in re.findall(r"(bench_\w+)=1\b", line):
                running.setdefault(name, set()).add(jobid)
                peak[name] = max(peak.get(name, 0), len(running[name]))
            block = False
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            for jobs in running.values():
                jobs.discard(m.group(1))
        elif not line.startswith("    "):
            block = False
    return peak


def test_running_peak_reads_snakemake_logs():
    log = "\n".join([
        "localrule bench_ssh:", "    jobid: 4", "    resources: tmpdir=/tmp, bench_rpi5=1, bench_local=0",
        "localrule bench_ssh:", "    jobid: 5", "    resources: tmpdir=/tmp, bench_rpi5=1, bench_local=0",
        "Finished jobid: 4 (Rule: bench_ssh)",
        "localrule bench:", "    jobid: 6", "    resources: tmpdir=/tmp, bench_rpi5=0, bench_local=1",
        "Finished jobid: 5 (Rule: bench_ssh)", "Finished jobid: 6 (Rule: bench)",
    ])
    assert running_peak(log) == {"bench_rpi5": 2, "bench_local": 1}


def test_dry_run_loads_the_workflow_profile(smk):
    done = smk.run("-n", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert PROFILE_LINE in done.stderr


def test_missing_caps_stop_at_start_up(smk, config_file):
    cfg = config_file()
    done = smk.run("-n", "--configfile", str(cfg), "--workflow-profile", "none", timeout=300)
    assert done.returncode != 0
    assert "bench_local not capped at 1" in done.stderr and "--resources bench_local=1" in done.stderr
    assert "Traceback" not in done.stderr and 'File "' not in done.stderr
    # --resources replaces the profile's caps: without bench_local the same
    done = smk.run("-n", "--configfile", str(cfg), "--resources", "gpu=1", timeout=300)
    assert done.returncode != 0 and "bench_local not capped at 1 (caps: gpu=1)" in done.stderr
    done = smk.run("-n", "--configfile", str(cfg), "--workflow-profile", "none", "--resources", "bench_local=1",
                     timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_readme_command_caps_timings_and_reruns_after_interrupt(smk, sshd, tmp_path):
    targets = sshd.write_config(tmp_path / "targets.yaml", rpi5=sshd.target(work_dir=str(tmp_path / "board")))
    cfg = smk.tiny_config(tmp_path, targets_config=str(targets))
    # a schedule name no rule could rebuild from its blocks [2, 5] (issue 11's trace, checked at the end)
    cfg["methods"]["mpm"]["schedules"] = {"paper-default": [2, 5]}
    cfg["benchmark"]["points"] = [{"target": "rpi5", "backends": ["math"], "batch_sizes": [1],
                                   "dtype": "float32", "threads": 1}]
    cfg["tables"] = {"gpu_target": "", "cpu_target": "rpi5", "batch_size": 1}
    config = smk.write_config(tmp_path / "config.yaml", cfg)
    command = ["--cores", "all", "--configfile", str(config)]  # the README's command, on this configuration

    # 1. interrupt the run (SIGINT to Snakemake, as `kill -INT`) while the demo model trains
    first = tmp_path / "first.log"
    with open(first, "w") as log:
        # SIGINT as a terminal delivers it: a test run started in the background by a shell inherits
        # SIGINT ignored (bash does that to asynchronous commands), and Python then never raises
        # KeyboardInterrupt; the child restores the default so that Python installs its handler
        proc = subprocess.Popen([*smk.command, *command], cwd=smk.repo, stdout=log, stderr=subprocess.STDOUT, env=smk.env(),
                                start_new_session=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 600
        while "rule train_demo:" not in first.read_text():
            assert proc.poll() is None, first.read_text()[-3000:]
            assert time.monotonic() < deadline, "train_demo never started"
            time.sleep(0.2)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:  # a job Snakemake left running would race the re-run
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode != 0, "the run finished before the interrupt"

    # 2. the same command again finishes everything
    second = smk.run(*command, timeout=1200)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "IncompleteFilesException" not in log and "LockException" not in log
    assert PROFILE_LINE in log
    # 3. no two timings on the board at once (two of them, one core each, on every core there is)
    assert log.count("rule bench_ssh:") == 2
    assert running_peak(log) == {"bench_rpi5": 1}
    # 4. nothing left to do
    third = smk.run("-n", *command, timeout=300)
    assert third.returncode == 0 and "Nothing to be done" in third.stdout + third.stderr
    # 5. the config's schedule name reached the eval JSON, the bench JSON (through the board), MLflow, the table
    assert_names_reach_every_layer(tmp_path / "results", cfg["experiment"], target="rpi5", schedule="paper-default")


def assert_names_reach_every_layer(results, experiment: str, target: str, schedule: str) -> None:
    """The config's names in the eval and bench records, the MLflow runs and the main table's MPM row."""
    ev = json.loads((results / f"eval/synthetic/seg-t-demo/mpm/{schedule}.json").read_text())
    assert ev["names"] == {"dataset": "synthetic", "model": "seg-t-demo", "method": "mpm", "schedule": schedule}
    assert ev["method"]["schedule"] == [2, 5]  # the resolved blocks beside the name
    bench = json.loads((results / f"bench/{target}/seg-t-demo/mpm/{schedule}/bs1-math-float32-eager.json").read_text())
    assert bench["names"] == ev["names"] and bench["method"]["schedule"] == [2, 5]
    dense = json.loads((results / "eval/synthetic/seg-t-demo/none/dense.json").read_text())
    assert dense["names"]["schedule"] == "dense"

    from mpm.tracking import resolve_store

    client = resolve_store(f"sqlite:///{results}/mlruns/mlflow.db").client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`mpm.schedule_name` = '{schedule}'")
    assert sorted(r.data.tags["mpm.kind"] for r in runs) == ["bench", "eval"]  # its eval, its timing on the board
    assert all(r.data.params["names.schedule"] == schedule and r.data.params["names.model"] == "seg-t-demo"
               for r in runs)
    (table,) = (results / "tables").glob("main_*.md")
    [row] = [line for line in table.read_text().splitlines() if line.startswith("| MPM |")]
    assert row.startswith(f"| MPM | {schedule} | 2,5 |"), row  # the schedule column: its name, then its blocks
