"""The pieces of the SLURM set-up that need no cluster: the allocation a timing records, the comparison
of two runs, ``mpm track server``'s start/stop/refusals."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from compare import differences
from runs import REPO, mpm_env

from mpm.benchmarking.targets import LocalTarget, SlurmTarget, SSHTarget, slurm_allocation

JOB_ENV = {"SLURM_JOB_ID": "41", "SLURM_JOB_PARTITION": "gpu", "SLURMD_NODENAME": "node7",
           "SLURM_JOB_NODELIST": "node7", "SLURM_CLUSTER_NAME": "hpc", "SLURM_CPUS_ON_NODE": "16",
           "SLURM_STEP_ID": "0"}


def test_allocation_is_read_from_the_job_environment():
    assert slurm_allocation({}) is None
    assert slurm_allocation({"SLURM_JOB_PARTITION": "gpu"}) is None  # no job id: not inside a job
    assert slurm_allocation(JOB_ENV) == {"job_id": "41", "partition": "gpu", "node": "node7", "nodelist": "node7",
                                         "cluster": "hpc", "cpus_on_node": "16", "step_id": "0"}


def test_a_timing_records_the_allocation_it_ran_in(monkeypatch):
    for key in JOB_ENV:
        monkeypatch.delenv(key, raising=False)
    assert "slurm" not in LocalTarget(name="local").describe()
    for key, value in JOB_ENV.items():
        monkeypatch.setenv(key, value)
    assert LocalTarget(name="local").describe()["slurm"]["job_id"] == "41"
    slurm = SlurmTarget(name="h100").describe()
    assert slurm["slurm"]["partition"] == "gpu" and slurm["slurm"]["node"] == "node7"
    # a board over ssh is timed elsewhere: the allocation of the process that drove it is not its own
    assert "slurm" not in SSHTarget(name="rpi5", host="rpi5.local").describe()


def _tree(root, miou: float, median_ms: float):
    (root / "eval").mkdir(parents=True)
    (root / "bench").mkdir()
    (root / "eval" / "a.json").write_text(json.dumps({"schema": "mpm.eval/1", "metrics": {"mIoU": miou},
                                                      "created_utc": str(median_ms), "root": str(root)}))
    (root / "bench" / "b.json").write_text(json.dumps({"schema": "mpm.bench/1", "gflops": 2.0,
                                                       "timing": {"median_ms": median_ms},
                                                       "target": {"name": "local", "slurm": {"job_id": "7"}}}))


def test_comparison_ignores_timings_and_folders_but_not_results(tmp_path):
    _tree(tmp_path / "a", 40.0, 10.0)
    _tree(tmp_path / "b", 40.0, 12.5)  # another time, another folder: equal
    assert differences(tmp_path / "a", tmp_path / "d", tmp_path / "b", tmp_path / "d") == []
    _tree(tmp_path / "c", 41.0, 10.0)  # another mIoU: different
    [problem] = differences(tmp_path / "a", tmp_path / "d", tmp_path / "c", tmp_path / "d")
    assert problem.startswith("eval/a.json: metrics.mIoU: 40.0 != 41.0")
    (tmp_path / "c" / "bench" / "b.json").unlink()
    assert any("only in" in p for p in differences(tmp_path / "a", tmp_path / "d", tmp_path / "c", tmp_path / "d"))


def _track_server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpm.cli", "track", "server", *args], cwd=REPO, env=mpm_env(),
                          capture_output=True, text=True, timeout=300)


def test_track_server_start_again_returns_the_running_one(tracking_server):
    again = _track_server("--uri", str(tracking_server.store), "--detach")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"export MPM_TRACKING_URI={tracking_server.url}"
    assert "already running" in again.stderr


def test_track_server_refuses_a_taken_port_and_a_server_uri(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        taken = _track_server("--uri", str(tmp_path / "mlruns"), "--port", str(port), "--detach")
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines()[-1] == (
        f"mpm track: error: port {port} on 127.0.0.1 is already in use; pick another with --port")
    assert not (tmp_path / "mlruns" / "server.json").exists()
    server_uri = _track_server("--uri", "http://127.0.0.1:5000", "--detach")
    assert server_uri.returncode == 2 and "is already a tracking server" in server_uri.stderr


def test_track_server_serves_the_default_store_when_the_environment_names_the_server(tmp_path):
    """After ``eval "$(mpm track server --detach)"`` the shell's $MPM_TRACKING_URI is the server itself:
    ``--stop`` (and a second start) then mean the default store's server, not an error."""
    env = mpm_env({"MPM_TRACKING_URI": "http://127.0.0.1:5000"})
    done = subprocess.run([sys.executable, "-m", "mpm.cli", "track", "server", "--stop"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no tracking server recorded" in done.stderr
