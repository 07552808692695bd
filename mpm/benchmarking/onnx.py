"""Optional ONNX Runtime path for ``mpm bench --runtime onnxruntime`` (dense model only).

The model is exported with ``torch.onnx.export`` (the TorchScript exporter, opset 17,
static shapes: the point's batch size and crop) to a temporary file and timed
with an ONNX Runtime session on the same inputs as the PyTorch path; the result
has the ``mpm.bench/1`` layout with ``runtime.name = "onnxruntime"``.

Scope: **method ``none`` only.** Merging has data-dependent shapes: how many
mutual pairs an image has (MPM), how many pairs the batch's poorest image allows
(``batch-min``), ToMe's and ALGM's selections all depend on the pixels. A traced
export would freeze the counts of the example batch into the graph and silently
compute something else for other images, so a merge method raises
:class:`~mpm.errors.ConfigError` instead. Only ``float32`` on the CPU provider (or
CUDA where onnxruntime-gpu provides it); no per-section breakdown (``null``), no
token counts. The export is checked against PyTorch on the first batch
(``runtime.max_abs_diff_vs_torch``).

Needs the ``onnx`` extra: ``pip install "mpm[onnx]"`` (onnxruntime; on a
Raspberry Pi 5 ``envs/rpi5/setup.sh --with-onnx``).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from mpm.errors import ConfigError

OPSET = 17


def _import_onnxruntime():
    import importlib.util

    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if missing:  # onnx: torch.onnx.export writes the graph with it
        raise ConfigError(f"--runtime onnxruntime needs the {' and '.join(missing)} package(s) "
                          "(pip install 'mpm[onnx]', or envs/rpi5/setup.sh --with-onnx on a Pi)")
    import onnxruntime

    return onnxruntime


def check_onnx_spec(spec) -> None:
    """Refuse what the ONNX path cannot measure faithfully (see the module docstring)."""
    if spec.method.lower() != "none" or spec.schedule:
        raise ConfigError(f"--runtime onnxruntime covers only the dense model (--method none): merge method "
                          f"{spec.method!r} has data-dependent token counts that a traced ONNX graph would freeze")
    if spec.dtype != "float32":
        raise ConfigError(f"--runtime onnxruntime runs float32 only, not {spec.dtype}")
    if spec.backend not in ("math", "sdpa"):
        raise ConfigError(f"--runtime onnxruntime exports the math or sdpa attention, not {spec.backend!r}")


def export_onnx(model, example, path: str | Path, backend: str = "math") -> float:
    """Export the dense ``model`` for inputs shaped like ``example``; return the seconds it took."""
    import torch

    from mpm.merging import build_method

    class Dense(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return self.inner(images, method=build_method("none"), backend=backend)

    start = time.perf_counter()
    kwargs: dict[str, Any] = dict(input_names=["images"], output_names=["logits"], opset_version=OPSET,
                                  do_constant_folding=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(Dense(model), (example,), str(path), dynamo=False, **kwargs)
        except TypeError as err:  # torch without the dynamo switch
            if "dynamo" not in str(err):
                raise
            torch.onnx.export(Dense(model), (example,), str(path), **kwargs)
    return time.perf_counter() - start


def run_point_onnx(spec) -> dict:
    """Measure one dense point with ONNX Runtime; the result dict (schema ``mpm.bench/1``)."""
    ort = _import_onnxruntime()
    check_onnx_spec(spec)
    import numpy as np
    import torch

    from mpm.benchmarking.bench import build_model, result_record
    from mpm.environment import soc_temperature_c
    from mpm.benchmarking.images import load_batch_images
    from mpm.benchmarking.timing import time_calls
    from mpm.merging import build_method
    from mpm.models.flops import flops_of_run

    device = torch.device(spec.device)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("--runtime onnxruntime --device cuda needs onnxruntime-gpu (CUDAExecutionProvider); "
                              f"available: {', '.join(ort.get_available_providers())}")
        providers = ["CUDAExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    if spec.threads:
        torch.set_num_threads(spec.threads)
    temp_before = soc_temperature_c()
    model, weights = build_model(spec)
    model = model.float().eval()
    crop = tuple(spec.crop) if spec.crop else tuple(model.config.image_size)
    method = build_method("none")
    pool, source = load_batch_images(spec.images, spec.batch_size * spec.pool_batches, crop)
    with torch.inference_mode():
        inputs = list(model.normalize(pool.float()).split(spec.batch_size))
    arrays = [np.ascontiguousarray(x.numpy()) for x in inputs]

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if spec.threads:
        options.intra_op_num_threads = spec.threads
        options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="mpm-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            export_s = export_onnx(model, inputs[0].clone(), path, spec.backend)
        except Exception as err:  # the exporter raises many types; say what failed
            raise ConfigError(f"ONNX export of the {weights.get('size')} model failed: "
                              f"{type(err).__name__}: {err}") from err
        session = ort.InferenceSession(str(path), options, providers=providers)
        name = session.get_inputs()[0].name

        def forward(i: int, timer=None):
            return session.run(None, {name: arrays[i % len(arrays)]})

        t0 = time.perf_counter()
        times = time_calls(forward, torch.device("cpu"), spec.warmup, spec.iters)
        wall = time.perf_counter() - t0
        ort_out = forward(0)[0]
        used_providers = session.get_providers()
    with torch.inference_mode():
        ref = model(inputs[0], method=method, backend=spec.backend)
        diff = float((torch.from_numpy(ort_out) - ref.float()).abs().max())
        flops = []
        for batch in inputs:
            _, enc = model(batch, method=method, backend=spec.backend, return_encoder=True)
            flops.extend(flops_of_run(model, batch, method, enc, reduction="none"))
    patch = model.config.patch_size
    return result_record(
        spec, method, model, weights, device, times,
        breakdown={"embed_and_encoder_ms": None, "merge_ms": None, "unmerge_ms": None, "decoder_ms": None},
        tokens={"full": (crop[0] // patch) * (crop[1] // patch), "after_step_mean": [], "after_step_std": []},
        flops=flops, source=source, wall=wall, temp_before=temp_before,
        runtime={
            "name": "onnxruntime",
            "version": ort.__version__,
            "providers": used_providers,
            "opset": OPSET,
            "exporter": "torch.onnx.export (TorchScript)",
            "export_s": round(export_s, 3),
            "graph_optimization": "ORT_ENABLE_ALL",
            "intra_op_threads": spec.threads,
            "max_abs_diff_vs_torch": diff,
        },
    )
