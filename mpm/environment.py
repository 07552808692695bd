"""The environment a measurement was taken in, recorded with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (x86 ``model name``, or the board model on a Raspberry Pi)."""
    board = Path("/proc/device-tree/model")
    if board.exists():
        return board.read_text(errors="replace").strip("\x00\n ")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding this package, or ``$MPM_GIT_COMMIT`` when shipped elsewhere."""
    env = os.environ.get("MPM_GIT_COMMIT")
    if env:
        return env
    root = Path(path) if path else Path(__file__).resolve().parents[1]
    return _run(["git", "-C", str(root), "rev-parse", "HEAD"])


def soc_temperature_c() -> float | None:
    """SoC temperature in °C (Raspberry Pi: vcgencmd, else the first thermal zone)."""
    out = _run(["vcgencmd", "measure_temp"])
    if out and "=" in out:
        try:
            return float(out.split("=", 1)[1].rstrip("'C"))
        except ValueError:
            pass
    zone = Path("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(zone.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def throttling_flags() -> str | None:
    """Raspberry Pi ``vcgencmd get_throttled`` bit field (e.g. ``0x0``), None elsewhere."""
    out = _run(["vcgencmd", "get_throttled"])
    return out.split("=", 1)[1] if out and "=" in out else None


def describe_environment(device: torch.device, backend: str | None = None, dtype: str | None = None) -> dict:
    """Everything needed to interpret a timing: hardware, software, settings."""
    env = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": package_version("timm"),
        "mpm": package_version("mpm"),
        "flash_attn": package_version("flash-attn") or package_version("flash_attn"),
        "onnxruntime": package_version("onnxruntime"),
        "git_commit": git_commit(),
        "device": str(device),
        "attention_backend": backend,
        "dtype": dtype,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name,
            device_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            driver=_run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        )
    else:
        env["device_name"] = env["cpu_model"]
    return env
