"""Running one benchmark point on a target: on this host (:func:`run_local`) or through the
target's runner (:func:`run_target`: SSH boards through :class:`~mpm.benchmarking.remote.SSHRunner`).

Targets themselves are declared and parsed in :mod:`mpm.benchmarking.targets`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Callable

from mpm.benchmarking.cooldown import CooldownConfig
from mpm.benchmarking.remote import SSHRunner
from mpm.benchmarking.targets import RUNTIMES, SlurmTarget, SSHTarget, Target
from mpm.errors import ConfigError


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_local(spec, runtime: str = "torch", cooldown: CooldownConfig | None = None,
              log: Callable[[str], None] | None = _log_stderr) -> dict:
    """Measure ``spec`` on this host: cooldown wait (if any), then the point; returns the result dict."""
    from mpm.benchmarking.cooldown import wait_for_cooldown

    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    record = wait_for_cooldown(cooldown, log=log) if cooldown else None
    if runtime == "onnxruntime":
        from mpm.benchmarking.onnx import run_point_onnx

        result = run_point_onnx(spec)
    else:
        import torch

        from mpm.benchmarking.bench import run_point

        result = run_point(spec)
        result["runtime"] = {"name": "torch", "version": torch.__version__}
    if record is not None:
        result["environment"]["cooldown"] = record
    return result


def with_target_defaults(target: Target, spec):
    """``spec`` with the target's thread count where the spec gives none."""
    if spec.threads is None and target.threads:
        spec = replace(spec, threads=target.threads)
    return spec


def run_target(target: Target, spec, out: str | os.PathLike, runtime: str = "torch",
               cooldown: CooldownConfig | None = None, log: Callable[[str], None] | None = _log_stderr) -> dict:
    """Run one point on ``target`` and write its result JSON to ``out`` atomically (only on success).

    ``cooldown`` overrides the target's own cooldown settings. Returns the result dict.
    """
    from mpm.records import BenchRecord

    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    spec = with_target_defaults(target, spec)
    cooldown = cooldown or target.cooldown
    if isinstance(target, SSHTarget):
        return SSHRunner(target, log=log).run(spec, out, runtime=runtime, cooldown=cooldown)
    if isinstance(target, SlurmTarget):
        target.check_allocation()
    saved = {key: os.environ.get(key) for key in target.env}
    os.environ.update(target.env)
    try:
        result = run_local(spec, runtime=runtime, cooldown=cooldown, log=log)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result["target"] = target.describe()
    BenchRecord(result).write(out)  # checked against its schema: an invalid record writes nothing
    return result
