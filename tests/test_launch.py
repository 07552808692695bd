"""mpm.launch: the key of a bound launch separates every argument set that Triton compiles apart.

Triton's own binder (the code its JIT path runs to specialise a call) is built here for an sm_90
target without a GPU; for argument sets that differ in each way Triton specialises on (dtype,
alignment, integer width, 1, divisibility by 16, constexprs) and in ways it does not (pointer
values, integers marked ``do_not_specialize``), two sets with one key must have one Triton
specialisation. The bound launch itself runs on the GPU (``benchmarks/cuda_checks.py``).
"""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")


def _triton_binder(fn):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(fn.signature, fn.params, make_backend(GPUTarget("cuda", 90, 32)))


def _gather_mean_calls():
    """(args, meta) of ``_gather_mean_kernel`` varied one way at a time."""
    x = torch.zeros(100, 64, dtype=torch.float16)
    src = torch.zeros(40, dtype=torch.long)
    out = torch.zeros(40, 64, dtype=torch.float16)
    meta = {"HAS2": True, "BLOCK_R": 16, "BLOCK_C": 64, "num_warps": 4}

    def call(x=x, stride_x=64, src1=src, src2=src, out=out, stride_o=64, r=40, c=64, **over):
        return (x, stride_x, src1, src2, out, stride_o, r, c), {**meta, **over}

    odd = torch.zeros(2 * 64 * 100 + 1, dtype=torch.float16)[1:].view(100, 128)[:, :64]  # 2-byte offset
    return [
        call(), call(x=x.clone()), call(r=17), call(r=1), call(r=2**31 + 5),  # R is not specialised
        call(c=16), call(c=1), call(c=17), call(c=2**33), call(stride_x=1), call(stride_x=48),
        call(x=x.float()), call(x=odd, stride_x=128), call(src1=src.int()), call(HAS2=False),
        call(BLOCK_C=128), call(num_warps=8), call(src2=src[1:]),
    ]


def test_equal_keys_mean_equal_triton_specialisations() -> None:
    from mpm import launch as ml
    from mpm.merging import triton_kernels as tk

    fn = tk._gather_mean_kernel
    binder = _triton_binder(fn)
    calls = _gather_mean_calls()
    keys = [ml.specialisation(fn, args, meta) for args, meta in calls]
    assert all(k is not None for k in keys)
    specs = [(str(binder(*args, **meta)[1]), tuple(sorted(meta.items()))) for args, meta in calls]
    for i, j in itertools.combinations(range(len(calls)), 2):
        if keys[i] == keys[j]:
            assert specs[i] == specs[j], f"calls {i} and {j}: one key, two Triton specialisations"
    # and a bound launch is reused where only pointer values or unspecialised counts change
    assert keys[0] == keys[1] == keys[2] == keys[3], "pointer values and R (do_not_specialize) share a key"
    assert keys[0] == keys[5] == keys[10], "16-divisible widths and strides share a key, as in Triton"
    assert len({s for s in specs}) > 8, "the variations reach several Triton specialisations"


def test_attention_kernel_keys() -> None:
    from mpm import launch as ml
    from mpm.models import triton_attention as ta

    fn = ta._flash_varlen_kernel
    binder = _triton_binder(fn)
    q = torch.zeros(300, 3, 64, dtype=torch.float16)
    cu = torch.zeros(3, dtype=torch.int32)

    def call(q=q, max_len=300, seq_rows=300, scale=0.125, uniform=True):
        args = (q, q, q, q, q if uniform else cu, q, q.stride(0), q.stride(1), q.stride(0), q.stride(1),
                q.stride(0), q.stride(1), q.stride(0), q.stride(1), scale, max_len, seq_rows)
        return args, {"D": 64, "BLOCK_M": 64, "BLOCK_N": 64, "UNIFORM": uniform, "HAS_LENS": False,
                      "num_warps": 4, "num_stages": 3}

    calls = [call(), call(scale=0.2), call(max_len=17), call(seq_rows=1), call(uniform=False),
             call(q=torch.zeros(300, 3, 64, dtype=torch.bfloat16))]
    keys = [ml.specialisation(fn, *c) for c in calls]
    specs = [str(binder(*a, **m)[1]) + str(sorted(m.items())) for a, m in calls]
    for i, j in itertools.combinations(range(len(calls)), 2):
        if keys[i] == keys[j]:
            assert specs[i] == specs[j], f"calls {i} and {j}: one key, two Triton specialisations"
    assert keys[0] == keys[1], "the softmax scale (a float) is not specialised"


def test_keyword_arguments_and_stand_ins_take_tritons_path() -> None:
    from mpm import launch as ml
    from mpm.merging import triton_kernels as tk

    args, meta = _gather_mean_calls()[0]
    assert ml.specialisation(tk._gather_mean_kernel, args[:-1], {**meta, "C": 64}) is None, "a parameter by name"
    assert ml.specialisation(tk._gather_mean_kernel, args, {"HAS2": True, "BLOCK_R": 16}) is None, "a constexpr missing"

    class StandIn:  # what the compile tests put in a kernel's place
        def __init__(self):
            self.calls = []

        def __getitem__(self, grid):
            return lambda *a, **kw: self.calls.append((grid, a, kw))

    stand_in = StandIn()
    ml.launch(stand_in, (3, 1), *args, **meta)
    assert stand_in.calls == [((3, 1), args, meta)]
    assert ml.bound_kernels() == 0, "nothing bound on the CPU"
    from triton import knobs

    chain = type(knobs.runtime.launch_enter_hook)()  # Triton >= 3.5: a HookChain, empty unless a profiler adds to it
    assert ml._no_hooks(None) and ml._no_hooks(chain) == (not getattr(chain, "calls", True))
    if hasattr(chain, "add"):
        chain.add(print)
        assert not ml._no_hooks(chain), "a hook set: Triton's path, which calls it"
    assert not ml._no_hooks(print)
