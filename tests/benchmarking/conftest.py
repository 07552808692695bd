"""Fixtures of the benchmarking tests: tiny images, a tiny point, a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

#: a point that takes about a second on a CPU: Seg-T on 64x64 crops, 3 classes
TINY_POINT = ["--model", "T", "--num-classes", "3", "--crop", "64", "--method", "mpm", "--schedule", "2,5",
              "--batch-size", "1", "--backend", "math", "--dtype", "float32", "--iters", "2", "--warmup", "1",
              "--breakdown-iters", "1", "--pool-batches", "2"]


def tiny_spec(images, **overrides):
    from mpm.benchmarking.bench import BenchSpec

    kwargs = dict(images=str(images), model="T", num_classes=3, crop=(64, 64), method="mpm", schedule=(2, 5),
                  backend="math", iters=2, warmup=1, breakdown_iters=1, pool_batches=2)
    kwargs.update(overrides)
    return BenchSpec(**kwargs)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """Five small textured RGB images (two in a sub-folder) — more than a tiny point reads."""
    root = tmp_path_factory.mktemp("bench-images")
    rng = np.random.default_rng(0)
    for i in range(5):
        folder = root / ("sub" if i >= 3 else ".")
        folder.mkdir(exist_ok=True)
        yy, xx = np.mgrid[0:72, 0:90]
        base = np.stack([(xx * (i + 1)) % 256, (yy * 3) % 256, ((xx + yy) * 2) % 256], -1)
        noise = rng.integers(0, 40, size=base.shape)
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SSHServer:
    port: int
    client_key: Path
    root: Path
    user: str
    log: Path

    def target(self, name: str = "box", **overrides) -> dict:
        """A target mapping for this server; the 'remote python' is this interpreter."""
        spec = {
            "type": "ssh",
            "host": "127.0.0.1",
            "user": self.user,
            "port": self.port,
            "key": str(self.client_key),
            "known_hosts": str(self.root / "known_hosts"),
            "python": sys.executable,
            "work_dir": str(self.root / "remote-work"),
            "connect_timeout": 10,
            "threads": 1,
        }
        spec.update(overrides)
        return spec

    def write_config(self, path: Path, **targets: dict) -> Path:
        path.write_text(yaml.safe_dump({"targets": targets}))
        return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throw-away OpenSSH server on 127.0.0.1 accepting a throw-away key for the current user."""
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"OpenSSH client tool {tool!r} not installed")
    if not os.access(SSHD, os.X_OK):
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server); .ci/run installs it")
    root = tmp_path_factory.mktemp("sshd")
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mpm-test", "-f", str(key)],
                       check=True, capture_output=True)
    (root / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():  # privilege-separation directory sshd insists on
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as err:
            pytest.skip(f"cannot create /run/sshd for sshd: {err}")
    port = free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"PidFile {root / 'sshd.pid'}",
        "Subsystem sftp internal-sftp",
        "LogLevel INFO",
        "",
    ]))
    log = root / "sshd.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start (exit {proc.returncode}): {log.read_text()[-1000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on 127.0.0.1:{port}: {log.read_text()[-1000:]}")
            time.sleep(0.1)
    import getpass

    try:
        yield SSHServer(port=port, client_key=client_key, root=root, user=getpass.getuser(), log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def tiny_point() -> list[str]:
    """`mpm bench` options of a tiny point (see TINY_POINT)."""
    return list(TINY_POINT)


@pytest.fixture
def make_spec():
    """tiny_spec(images, **overrides) -> BenchSpec."""
    return tiny_spec
