"""The Snakemake profiles: they parse with the real Snakemake and use the SLURM plugin's resource keys."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mpm.benchmarking.targets import SLURM_RESOURCE_TYPES, parse_targets

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "workflow" / "profiles"

SNAKEFILE = """
rule all:
    input: "h100.txt", "pi.txt"
rule bench:
    output: "h100.txt"
    resources: bench_h100=1
    shell: "echo h100 > {output}"
rule bench_ssh:
    output: "pi.txt"
    resources: bench_rpi5=1
    shell: "echo pi > {output}"
"""


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def test_default_profile_caps_one_job_per_device():
    cfg = load("default")
    assert cfg["cores"] == "all" and cfg["printshellcmds"] is True and cfg["rerun-incomplete"] is True
    caps = dict(item.split("=") for item in cfg["resources"])
    assert caps == {"gpu": "1", "bench_local": "1", "bench_h100": "1", "bench_rpi5": "1"}


def test_slurm_profile_uses_the_plugin_keys():
    cfg = load("slurm")
    assert cfg["executor"] == "slurm"
    for key in cfg["default-resources"]:
        assert key in SLURM_RESOURCE_TYPES, key
    for rule, resources in cfg["set-resources"].items():
        unknown = set(resources) - set(SLURM_RESOURCE_TYPES)
        assert not unknown, f"{rule}: {unknown}"
    # the H100 rule asks for one H100 in the plugin's gres form, validated like a target's resources
    h100 = cfg["set-resources"]["bench"]
    assert cfg["set-resources"]["evaluate"]["gres"] == "gpu:h100:1"
    assert h100["gres"] == "gpu:h100:1"
    parse_targets({"targets": {"h100": {"type": "slurm", "resources": h100}}})


def _dry_run(profile: str, tmp_path: Path) -> str:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    done = subprocess.run([sys.executable, "-m", "snakemake", "--profile", str(PROFILES / profile), "-n"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.mark.skipif(importlib.util.find_spec("snakemake") is None, reason="snakemake not installed")
def test_default_profile_dry_run(tmp_path):
    out = _dry_run("default", tmp_path)
    assert "rule bench:" in out and "rule bench_ssh:" in out


@pytest.mark.skipif(importlib.util.find_spec("snakemake") is None
                    or importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed")
def test_slurm_profile_dry_run(tmp_path):
    out = _dry_run("slurm", tmp_path)
    assert "gres=gpu:h100:1" in out and "slurm_partition=gpu" in out


def test_rpi5_setup_script():
    script = REPO / "envs" / "rpi5" / "setup.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    help_text = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True).stdout
    assert "--with-onnx" in help_text and "--venv" in help_text
    pins = (REPO / "envs" / "rpi5" / "requirements.txt").read_text()
    for pin in ("torch==2.9.1", "torchvision==0.24.1", "timm", "numpy", "pillow", "pyyaml"):
        assert pin in pins
    assert "onnxruntime" in (REPO / "envs" / "rpi5" / "requirements-onnx.txt").read_text()
