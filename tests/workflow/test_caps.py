"""The README's commands load the workflow profile: one timing per device, and a plain re-run after an
interrupt finishes (no IncompleteFilesException, no LockException).

The real DAG runs on a tiny configuration whose timings go to an SSH board (a real OpenSSH server on
127.0.0.1): a board's timings take one core each, so without the profile's cap on bench_<target> two of
them start together on 2 cores.
"""

from __future__ import annotations

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


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_readme_command_caps_timings_and_reruns_after_interrupt(smk, sshd, tmp_path):
    targets = sshd.write_config(tmp_path / "targets.yaml", rpi5=sshd.target(work_dir=str(tmp_path / "board")))
    cfg = smk.tiny_config(tmp_path, targets_config=str(targets))
    cfg["benchmark"]["points"] = [{"target": "rpi5", "backends": ["math"], "batch_sizes": [1, 2],
                                   "dtype": "float32", "threads": 1}]
    cfg["tables"] = {"gpu_target": "", "cpu_target": "rpi5", "batch_size": 1}
    config = smk.write_config(tmp_path / "config.yaml", cfg)
    command = ["--cores", "all", "--configfile", str(config)]  # the README's command, on this configuration

    # 1. interrupt the run (SIGINT to Snakemake, as `kill -INT`) while the demo model trains
    first = tmp_path / "first.log"
    with open(first, "w") as log:
        proc = subprocess.Popen([*smk.command, *command], cwd=smk.repo, stdout=log, stderr=subprocess.STDOUT, env=smk.env(),
                                start_new_session=True)
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
    # 3. no two timings on the board at once (four of them, one core each, on every core there is)
    assert log.count("rule bench_ssh:") == 4
    assert running_peak(log) == {"bench_rpi5": 1}
    # 4. nothing left to do
    third = smk.run("-n", *command, timeout=300)
    assert third.returncode == 0 and "Nothing to be done" in third.stdout + third.stderr
