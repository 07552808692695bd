"""Triton launches with the host's share done once per specialisation.

``kernel[grid](*args, **meta)``, Triton's JIT path, re-derives at every call what a repeated call
with the same kinds of arguments already knows: each argument's specialisation, the cache key and
its options string, the hooks and globals checks. On the GPU host that is 40-75 us of Python per
launch, which a host-bound forward (eager mode, batch 1) pays for every kernel of every merge.
:func:`launch` keys the compiled kernel on what Triton specialises on (each tensor's dtype and
16-byte alignment, each specialised integer's width, whether it is 1 and whether divisible by 16,
the constexprs and launch options, the device) and, from the second call of a key on, calls the
compiled kernel's launcher itself. The first call of a key, an interpreted or stand-in kernel,
a kernel with annotated parameters, and any launch while a Triton launch hook is set (profilers)
take Triton's own path. ``MPM_TRITON_BOUND=0`` (or :data:`enabled` False) takes it always (A/B
timings); ``benchmarks/cuda_checks.py`` compares both paths' outputs bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

import torch

try:
    import triton
    from triton.runtime.jit import JITFunction
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    JITFunction = None

#: set False (or MPM_TRITON_BOUND=0) to launch every kernel through Triton's JIT path
enabled = os.environ.get("MPM_TRITON_BOUND", "1") != "0"

#: kernel -> its parameters as (name, is_constexpr, specialise, specialise on alignment), or None
#: when a parameter is annotated (Triton's rules differ there: always its own path)
_PARAMS: dict[Any, tuple[tuple[str, bool, bool, bool], ...] | None] = {}
#: (kernel, specialisation key) -> compiled kernel
_BOUND: dict[tuple, Any] = {}


def _params(fn) -> tuple[tuple[str, bool, bool, bool], ...] | None:
    spec = _PARAMS.get(fn, ())
    if spec == ():
        params = fn.params
        if any(p.annotation_type for p in params if not p.is_constexpr):
            spec = None
        else:
            spec = tuple((p.name, bool(p.is_constexpr), not p.do_not_specialize,
                          not p.do_not_specialize_on_alignment) for p in params)
        _PARAMS[fn] = spec
    return spec


def _no_hooks(hook) -> bool:
    """Whether a Triton launch hook slot is empty (None, or since Triton 3.5 a ``HookChain`` with no calls)."""
    return hook is None or not getattr(hook, "calls", True)


def _int_width(v: int) -> str:
    if -2**31 <= v < 2**31:
        return "i32"
    return "u64" if v >= 2**63 else "i64"


def specialisation(fn, args: tuple, meta: dict) -> tuple | None:
    """What Triton compiles ``fn`` for given these arguments (hashable), or None when :func:`launch`
    must take Triton's path (an argument of a kind it does not key)."""
    spec = _params(fn)
    if spec is None or len(args) > len(spec) or any(not constexpr or name not in meta
                                                     for name, constexpr, *_ in spec[len(args):]):
        return None  # only constexprs by name after the positional arguments
    key: list = []
    for (name, constexpr, specialise, align), value in zip(spec, args):
        if constexpr:
            key.append(value)
        elif isinstance(value, torch.Tensor):
            key.append((value.dtype, value.data_ptr() % 16 == 0 if align else None))
        elif isinstance(value, bool) or value is None:
            key.append(value)
        elif isinstance(value, int):
            key.append((_int_width(value), value == 1, value % 16 == 0) if specialise else (_int_width(value),))
        elif isinstance(value, float):
            key.append(float)
        else:
            return None
    key.append(tuple(sorted(meta.items())))
    return tuple(key)


def launch(fn, grid: tuple[int, ...], *args, **meta) -> None:
    """``fn[grid](*args, **meta)``, the host's share cut short after the first call of a
    specialisation (module docstring). ``args``: the kernel's leading parameters in order;
    ``meta``: the rest by name (constexprs) and Triton's launch options (``num_warps``, ...)."""
    if not enabled or JITFunction is None or not isinstance(fn, JITFunction) or callable(grid):
        fn[grid](*args, **meta)
        return
    from triton import knobs
    from triton.runtime import driver

    spec = specialisation(fn, args, meta)
    if spec is None or not (_no_hooks(knobs.runtime.launch_enter_hook) and _no_hooks(knobs.runtime.launch_exit_hook)):
        fn[grid](*args, **meta)
        return
    device = driver.active.get_current_device()
    key = (fn, device, spec)
    kernel = _BOUND.get(key)
    if kernel is None:
        kernel = fn[grid](*args, **meta)  # Triton's path: compiles if new, launches
        if hasattr(kernel, "result"):  # asynchronous compilation
            kernel = kernel.result()
        if kernel is not None:
            _BOUND[key] = kernel
        return
    names = _params(fn)
    values = list(args) + [meta[name] for name, *_ in names[len(args):]]
    stream = driver.active.get_current_stream(device)
    g1 = grid[1] if len(grid) > 1 else 1
    g2 = grid[2] if len(grid) > 2 else 1
    kernel.run(grid[0], g1, g2, stream, kernel.function, kernel.packed_metadata, None, None, None, *values)


def bound_kernels() -> int:
    """How many (kernel, specialisation) pairs launch without Triton's path so far."""
    return len(_BOUND)
