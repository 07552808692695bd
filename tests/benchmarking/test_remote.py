"""The SSH runner against a real OpenSSH server on 127.0.0.1 (the 'remote' is this machine)."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mpm.benchmarking.bench import validate_result
from mpm.benchmarking.remote import SSHRunner, source_digest
from mpm.benchmarking.running import run_target
from mpm.benchmarking.targets import get_target
from mpm.cli.bench import main as bench_main
from mpm.errors import RemoteError


def _jobs_left(server) -> list[Path]:
    jobs = server.root / "remote-work" / "jobs"
    return sorted(jobs.iterdir()) if jobs.is_dir() else []


def test_success_fetches_complete_result_and_cleans_up(sshd, images, tmp_path, tiny_point, capsys):
    config = sshd.write_config(tmp_path / "targets.yaml", box=sshd.target())
    out = tmp_path / "results" / "point.json"
    rc = bench_main(["--targets-config", str(config), "--target", "box", "--images", str(images),
                     *tiny_point, "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(out.read_text())
    assert validate_result(result) == []
    assert result["schema"] == "mpm.bench/1"
    assert result["timing"]["iterations"] == 2 and result["timing"]["median_ms"] > 0
    assert result["tokens"]["full"] == 16 and len(result["tokens"]["after_step_mean"]) == 2
    # paths are the local ones again, the shipped sample is said
    assert result["spec"]["images"] == str(images)
    assert result["image_source"]["source"] == str(images)
    assert result["image_source"]["images_available"] == 5
    target = result["target"]
    assert target["type"] == "ssh" and target["port"] == sshd.port and target["images_shipped"] == 2
    assert target["source_sha256"] == source_digest()
    assert target["remote_job_dir"].startswith(str(sshd.root / "remote-work" / "jobs"))
    assert result["spec"]["threads"] == 1 and result["environment"]["torch_threads"] == 1
    # the remote run saw the commit through $MPM_GIT_COMMIT (or none where there is no git)
    assert result["environment"]["git_commit"] == target["source_git_commit"]
    assert _jobs_left(sshd) == []
    assert not any(p.name.startswith(".point.json") for p in out.parent.iterdir())  # no temp file left


def test_unreachable_host_names_host_and_port(sshd, images, tmp_path, make_spec):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = sshd.write_config(tmp_path / "t.yaml", box=sshd.target(port=port, connect_timeout=5))
    out = tmp_path / "out.json"
    with pytest.raises(RemoteError) as err:
        run_target(get_target("box", config), make_spec(images), out)
    msg = str(err.value)
    assert f"cannot connect to 127.0.0.1:{port}" in msg and "Connection refused" in msg
    assert not out.exists()


def test_missing_remote_python(sshd, images, tmp_path, make_spec):
    config = sshd.write_config(tmp_path / "t.yaml", box=sshd.target(python=str(tmp_path / "no" / "python3")))
    out = tmp_path / "out.json"
    with pytest.raises(RemoteError) as err:
        run_target(get_target("box", config), make_spec(images), out)
    msg = str(err.value)
    assert "missing remote environment" in msg and "not found" in msg and str(tmp_path / "no" / "python3") in msg
    assert f"127.0.0.1:{sshd.port}" in msg
    assert not out.exists()
    assert _jobs_left(sshd) == []


def test_remote_python_without_torch(sshd, images, tmp_path, make_spec):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    config = sshd.write_config(tmp_path / "t.yaml", box=sshd.target(python=str(venv / "bin" / "python")))
    out = tmp_path / "out.json"
    with pytest.raises(RemoteError) as err:
        run_target(get_target("box", config), make_spec(images), out)
    msg = str(err.value)
    assert "missing remote environment" in msg and "cannot import torch" in msg
    assert "No module named 'torch'" in msg
    assert not out.exists()


def test_remote_crash_reports_stderr_and_keeps_old_output(sshd, images, tmp_path, make_spec):
    bad = tmp_path / "broken_checkpoint.pth"
    bad.write_bytes(b"this is not a checkpoint")
    config = sshd.write_config(tmp_path / "t.yaml", box=sshd.target())
    out = tmp_path / "out.json"
    out.write_text('{"old": true}\n')
    logs: list[str] = []
    with pytest.raises(RemoteError) as err:
        SSHRunner(get_target("box", config), log=logs.append).run(make_spec(images, model=str(bad)), out)
    msg = str(err.value)
    assert "remote benchmark failed (exit 2)" in msg
    assert "mpm bench: error:" in msg and "broken_checkpoint.pth" in msg  # the remote stderr tail
    assert f"127.0.0.1:{sshd.port}" in msg
    assert any("broken_checkpoint.pth" in line for line in logs)  # streamed while running
    assert out.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []
    assert _jobs_left(sshd) == []


def _hostile(pwned: Path) -> str:
    """A path part that runs `touch PWNED` wherever a shell reads it unquoted (;, $(), backticks)."""
    return f"x;touch {pwned};y $(touch {pwned}) `touch {pwned}`"


def _client_bin(tmp_path: Path, scp: str) -> Path:
    """A PATH folder with this machine's ssh and git, and scp: absent, the real one (SFTP protocol, the default
    of OpenSSH >= 9) or one forced to the legacy protocol (``scp -O``, what OpenSSH < 9 speaks), which
    hands the remote path to the remote shell. A call to the scp there leaves a mark."""
    folder = tmp_path / f"bin-{scp}"
    folder.mkdir()
    for tool in ("ssh", "git"):
        if shutil.which(tool):
            (folder / tool).symlink_to(shutil.which(tool))
    if scp != "absent":
        real = shutil.which("scp")
        if real is None:
            pytest.skip("scp not installed")
        legacy = "-O " if scp == "legacy" else ""
        wrapper = folder / "scp"
        wrapper.write_text(f"#!/bin/sh\n: > {shlex.quote(str(tmp_path / 'scp-was-called'))}\n"
                           f"exec {shlex.quote(real)} {legacy}\"$@\"\n")
        wrapper.chmod(0o755)
    return folder


def _run_hostile(sshd, images, tmp_path, tiny_point, capsys, **target) -> dict:
    config = sshd.write_config(tmp_path / "targets.yaml", box=sshd.target(**target))
    out = tmp_path / "point.json"
    rc = bench_main(["--targets-config", str(config), "--target", "box", "--images", str(images), *tiny_point,
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert not (tmp_path / "pwned").exists(), "a remote shell ran part of a path"
    result = json.loads(out.read_text())
    assert validate_result(result) == []
    work_dir = Path(target.get("work_dir", sshd.target()["work_dir"]))
    assert result["target"]["remote_job_dir"].startswith(str(work_dir / "jobs") + "/")  # the literal folder
    assert (work_dir / "jobs").is_dir() and list((work_dir / "jobs").iterdir()) == []  # cleaned up
    return result


@pytest.mark.parametrize("scp", ["absent", "sftp", "legacy"])
def test_hostile_work_dir_runs_nothing_on_the_board(sshd, images, tmp_path, tiny_point, monkeypatch, capsys, scp):
    """The report of issue 9: `work_dir: /tmp/x;touch ...;` ran the command through scp's legacy protocol."""
    work_dir = tmp_path / f"work {_hostile(tmp_path / 'pwned')}"
    monkeypatch.setenv("PATH", str(_client_bin(tmp_path, scp)))
    result = _run_hostile(sshd, images, tmp_path, tiny_point, capsys, work_dir=str(work_dir))
    assert result["target"]["work_dir"] == str(work_dir)
    assert not (tmp_path / "scp-was-called").exists()  # no scp, whatever its protocol


def test_hostile_python_and_work_dir_with_colon_and_equals(sshd, images, tmp_path, tiny_point, capsys):
    """A python path holding '=' (which `env` would take for an assignment), a work_dir holding ':'
    (which would split PYTHONPATH), both with unbalanced quotes, run as the literal paths."""
    hostile = _hostile(tmp_path / "pwned") + " 'q\" a=b:c"
    py_dir = tmp_path / f"py {hostile}"
    py_dir.mkdir(parents=True)
    python = py_dir / "python"  # a real interpreter at a hostile path
    python.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    python.chmod(0o755)
    work_dir = tmp_path / f"work {hostile}"
    result = _run_hostile(sshd, images, tmp_path, tiny_point, capsys, work_dir=str(work_dir), python=str(python))
    assert result["target"]["python"] == str(python)


def test_check_names_a_hostile_python_literally(sshd, tmp_path):
    pwned = tmp_path / "pwned"
    missing = tmp_path / _hostile(pwned) / "python3"
    config = sshd.write_config(tmp_path / "t.yaml", box=sshd.target(python=str(missing)))
    with pytest.raises(RemoteError) as err:
        SSHRunner(get_target("box", config)).probe()
    assert "not found" in str(err.value) and str(missing) in str(err.value)
    assert not pwned.exists()
