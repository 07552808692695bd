"""``mpm bench --runtime onnxruntime``: one benchmark point timed in ONNX Runtime.

* **dense** (``--method none``): the model exported as one static graph
  (``images`` -> ``logits``, :func:`~mpm.benchmarking.onnx_export.export_dense`).
* **merging** (every method with an ONNX Runtime path: MPM, ToMe, ALGM): the model
  exported as segments between its merge sites with a dynamic token axis, the merge
  steps between the sessions (score graph in ONNX Runtime, O(N) rest in NumPy), so
  token counts are computed for each image as in PyTorch
  (:mod:`~mpm.benchmarking.onnx_export`, :mod:`~mpm.benchmarking.onnx_runtime`).

The export goes to a temporary folder and is checked against PyTorch on every batch of
the pool before timing: ``runtime.max_abs_diff_vs_torch`` (logits) and
``runtime.maps_equal`` (the composed merge maps; a difference, from a near-tie, is warned about). The
result has the ``mpm.bench/1`` layout with ``runtime.name = "onnxruntime"``; token
counts are those of the ONNX Runtime run; the breakdown splits segments (encoder),
merge steps (score graphs + NumPy) and the decoder session (the unmerge gather
included, so ``unmerge_ms`` is null). Only ``float32``, attention ``math`` or ``sdpa``,
batch policy ``exact`` above batch size 1.

Needs the ``onnx`` extra (onnxruntime, and onnx for the exporter): ``pip install
"mpm[onnx]"`` (on a Raspberry Pi 5 ``envs/rpi5/setup.sh --with-onnx``).
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

from mpm.benchmarking.onnx_export import EXPORTER, OPSET, check_exportable
from mpm.errors import ConfigError

#: packages the ONNX Runtime path imports (onnx: torch.onnx.export writes the graphs with it)
PACKAGES = ("onnxruntime", "onnx")


def _import_onnxruntime():
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--runtime onnxruntime needs the {' and '.join(missing)} package(s) "
                          "(pip install 'mpm[onnx]', or envs/rpi5/setup.sh --with-onnx on a Pi)")
    import onnxruntime

    return onnxruntime


def _method(spec, depth: int | None = None):
    from mpm.merging import build_method

    return build_method(spec.method, spec.schedule, depth=depth, batch_policy=spec.batch_policy,
                        **spec.method_kwargs)


def check_onnx_spec(spec, depth: int | None = None) -> None:
    """Refuse, before any import or export, what the ONNX Runtime path cannot measure faithfully."""
    if spec.dtype != "float32":
        raise ConfigError(f"--runtime onnxruntime runs float32 only, not {spec.dtype}")
    if isinstance(spec.schedule, str) and depth is None:
        depth = 12  # "all" needs a depth to build the method; only the method's kind is checked here
    check_exportable(_method(spec, depth), spec.backend, spec.batch_size, spec.dtype)


def _providers(ort, device) -> list[str]:
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("--runtime onnxruntime --device cuda needs onnxruntime-gpu (CUDAExecutionProvider); "
                              f"available: {', '.join(ort.get_available_providers())}")
        return ["CUDAExecutionProvider"]
    return ["CPUExecutionProvider"]


def run_point_onnx(spec) -> dict:
    """Measure one point with ONNX Runtime; the result dict (schema ``mpm.bench/1``)."""
    check_onnx_spec(spec)
    ort = _import_onnxruntime()
    import numpy as np
    import torch

    from mpm.benchmarking.bench import build_model, result_record
    from mpm.benchmarking.images import load_batch_images
    from mpm.benchmarking.onnx_export import export_dense, export_segments
    from mpm.benchmarking.onnx_runtime import Graph, SegmentedModel, session_options, thread_pool_kind
    from mpm.benchmarking.timing import SectionTimer, time_calls
    from mpm.environment import soc_temperature_c
    from mpm.models.flops import flops_of_run

    device = torch.device(spec.device)
    providers = _providers(ort, device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    temp_before = soc_temperature_c()
    model, weights = build_model(spec)
    model = model.float().eval()
    method = _method(spec, model.config.depth)
    method.validate(model.config.depth)
    dense = not method.identity.merges
    crop = tuple(spec.crop) if spec.crop else tuple(model.config.image_size)
    pool, source = load_batch_images(spec.images, spec.batch_size * spec.pool_batches, crop)
    with torch.inference_mode():
        inputs = list(model.normalize(pool.float()).split(spec.batch_size))
    arrays = [np.ascontiguousarray(x.numpy()) for x in inputs]

    with tempfile.TemporaryDirectory(prefix="mpm-onnx-") as tmp:
        t0 = time.perf_counter()
        try:
            if dense:
                export_dense(model, inputs[0].clone(), Path(tmp) / "model.onnx", spec.backend)
            else:
                export_segments(model, method, inputs[0].clone(), tmp, spec.backend)
        except ConfigError:
            raise
        except Exception as err:  # the exporter raises many types; say what failed
            raise ConfigError(f"ONNX export of the {weights.get('size')} model with {method.name} failed: "
                              f"{type(err).__name__}: {err}") from err
        export_s = time.perf_counter() - t0
        if dense:
            options = session_options(spec.threads)
            graph = Graph(Path(tmp) / "model.onnx", options, providers)
            run = lambda images, timer=None: (graph(images=images)["logits"], None, [])  # noqa: E731
            used, pool_kind = graph.session.get_providers(), thread_pool_kind(options)
        else:
            seg = SegmentedModel.load(tmp, threads=spec.threads, providers=providers)
            used, pool_kind = seg.providers, seg.thread_pool

            def run(images, timer=None):
                out = seg(images, timer)
                return out.logits, out.index, out.tokens_left

        # check every batch of the pool against PyTorch before timing
        diff, differ, counts, flops = 0.0, 0, [], []
        with torch.inference_mode():
            for x, arr in zip(inputs, arrays):
                logits, index, left = run(arr)
                ref, enc = model(x, method=method, backend=spec.backend, return_encoder=True)
                diff = max(diff, float((torch.from_numpy(logits) - ref.float()).abs().max()))
                if index is not None:
                    differ += not np.array_equal(index, enc.index.numpy())
                    counts.append(np.stack(left, 1).astype(np.float64))
                flops.extend(flops_of_run(model, x, method, enc, reduction="none"))
        maps_equal = differ == 0
        if not maps_equal:  # recorded, not fatal: the timing is still that of this method
            import sys

            print(f"mpm bench: warning: the merge maps of {method.name} in ONNX Runtime differ from PyTorch's on "
                  f"{differ} of {len(inputs)} batches (near-ties in the similarities; runtime.maps_equal = false)",
                  file=sys.stderr)

        def forward(i: int, timer=None):
            return run(arrays[i % len(arrays)], timer)

        t0 = time.perf_counter()
        times = time_calls(forward, torch.device("cpu"), spec.warmup, spec.iters)
        wall = time.perf_counter() - t0
        if dense:
            breakdown = {"embed_and_encoder_ms": None, "merge_ms": None, "unmerge_ms": None, "decoder_ms": None}
        else:
            sections = SectionTimer(torch.device("cpu"))
            for i in range(spec.breakdown_iters):
                forward(i, sections)
                sections.calls += 1
            breakdown = sections.breakdown()
            breakdown["embed_and_encoder_ms"] = sections.totals.get("encoder", 0.0) / max(sections.calls, 1)
            breakdown["unmerge_ms"] = None  # inside the decoder session
    patch = model.config.patch_size
    full = (crop[0] // patch) * (crop[1] // patch)
    tokens = {"full": full, "after_step_mean": [], "after_step_std": []}
    if counts:
        allc = np.concatenate(counts, 0)
        tokens.update(after_step_mean=allc.mean(0).tolist(), after_step_std=allc.std(0).tolist(),
                      after_step_min=allc.min(0).tolist(), after_step_max=allc.max(0).tolist())
    return result_record(
        spec, method, model, weights, device, times, breakdown=breakdown, tokens=tokens, flops=flops,
        source=source, wall=wall, temp_before=temp_before,
        runtime={
            "name": "onnxruntime",
            "version": ort.__version__,
            "providers": used,
            "opset": OPSET,
            "exporter": EXPORTER,
            "graphs": "one static graph" if dense else "segments between merge sites, dynamic token axis",
            "export_s": round(export_s, 3),
            "graph_optimization": "ORT_ENABLE_ALL",
            "intra_op_threads": spec.threads,
            "thread_pool": pool_kind,
            "max_abs_diff_vs_torch": diff,
            "maps_equal": maps_equal if not dense else None,
        },
    )
