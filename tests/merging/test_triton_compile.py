"""Every Triton kernel of the fast merge path compiles for Hopper (sm_90), here, without a GPU.

The interpreter test (``test_mpm_fast``) runs the kernels' logic in NumPy, which skips the
compiler's type checks (a loop-carried variable changing type fails only when compiled). Here each
wrapper of :mod:`mpm.merging.triton_kernels` is called on CPU tensors with its launches replaced by a
compilation of the same arguments for an sm_90 target (Triton's bundled ``ptxas`` builds the cubin);
nothing is launched.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")

#: torch dtype -> Triton pointer element type
_POINTEE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.int64: "i64",
            torch.int32: "i32", torch.int8: "i8", torch.bool: "i1"}


class _CompileOnly:
    """Stands for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kw)`` compiles for sm_90 instead."""

    def __init__(self, kernel, compiled: list[str]):
        self.kernel, self.compiled = kernel, compiled

    def __getitem__(self, grid):
        return self._compile

    def _compile(self, *args, num_warps: int = 4, num_stages: int = 3, **constexprs):
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        names = [p.name for p in self.kernel.params]
        signature = {}
        for name, value in zip(names, args):
            if isinstance(value, torch.Tensor):
                signature[name] = "*" + _POINTEE[value.dtype]
            elif isinstance(value, float):
                signature[name] = "fp32"
            else:
                signature[name] = "i32" if -2**31 <= int(value) < 2**31 else "i64"
        signature.update({name: "constexpr" for name in constexprs})
        assert set(signature) == set(names), f"{self.kernel.fn.__name__}: arguments {sorted(signature)} != {names}"
        source = ASTSource(fn=self.kernel, signature=signature, constexprs=dict(constexprs))
        binary = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages})
        assert binary.asm["cubin"], self.kernel.fn.__name__
        self.compiled.append(self.kernel.fn.__name__)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_every_kernel_compiles_for_sm90(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from mpm.merging import triton_kernels as tk

    compiled: list[str] = []
    kernels = [name for name in vars(tk) if name.startswith("_") and name.endswith("_kernel")]
    for name in kernels:
        monkeypatch.setattr(tk, name, _CompileOnly(getattr(tk, name), compiled))
    n = torch.tensor([37, 2, 20])
    start = (n + 1).cumsum(0) - (n + 1)
    x = torch.zeros(int((n + 1).sum()) + 4, 192, dtype=dtype)
    best, score = tk.best_partners_rows(x, start, n, 1, 37)
    tk.best_partners_rows(x, start, n, 1, 37, splits=3)  # the column-split kernel and its combine
    for tiles in {tk.TileConfig(128, 64, 64, 8, 4, norms=True), *tk.TILES.values(),  # pre-pass norms, tilings in use
                  *tk.SYMMETRIC_TILES.values(),
                  *(t for per_batch in tk.SMALL_TILES.values() for t in per_batch.values())}:  # the symmetric kernel's, small batches'
        tk.best_partners_rows(x, start, n, 1, 37, tiles=tiles)
    tk.best_partners_rows(x, start, n, 1, 200, tiles=tk.SYMMETRIC_BASE_TILES)  # two blocks: partials combined
    dest, partner, surv, kept = tk.mutual_plan(best, score, n)
    tk.mutual_plan(*tk.best_partners_rows(x, start, n, 1, 37, splits=3, combine=False), n)  # partials folded
    for tiles in {tk.one_launch_tiles(192, 1, 37, x.device)[0], *(replace(t, norms=False) for t in tk.TILES.values()),
                  *(replace(t, norms=False) for per_batch in tk.SMALL_TILES.values() for t in per_batch.values())}:
        tk.plan_one_launch(x, start, n, 1, 37, tiles=(tiles, tk.FOLD_PARTS))  # the one-launch plan's tilings in use
    tk.plan_one_launch(x, start, None, 1, 1600, tiles=(tk.one_launch_tiles(192, 1, 1600, x.device)[0], 1))  # uniform;
    # Seg-L at 640 px: a 2,048-entry scan
    for tiling in ((4, 256), (64, 64)):
        tk.inv_norms(x, tiling)
    index = torch.zeros(3, 50, dtype=torch.long)
    for packed in (True, False):
        src1, src2, *_ = tk.gather_sources(dest, partner, surv, n, start, kept, 1, packed, 40, 120)
        tk.gather_sources(dest, None, surv, n, start, kept, 1, packed, 40, 120)
        for clamp in (False, True):  # with the map composed (uniform input: no counts)
            tk.gather_sources(dest, partner, surv, None, start, kept, 1, packed, 40, 120, index, clamp)
        tk.gather_mean(x, src1, src2)
        tk.gather_mean(x, src1, None)
    for prefix, clamp in ((1, True), (0, False)):
        tk.unmerge_rows(x, start, index, prefix, clamp)
    assert sorted(set(compiled)) == sorted(getattr(tk, k).kernel.fn.__name__ for k in kernels)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_kernel_compiles_for_sm90(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Triton attention kernel (mpm.models.triton_attention): packed, padded, padded with key lengths."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    from mpm.models import triton_attention as ta

    compiled: list[str] = []
    monkeypatch.setattr(ta, "_flash_varlen_kernel", _CompileOnly(ta._flash_varlen_kernel, compiled))
    q, k, v = torch.zeros(3, 64, 3, 64, dtype=dtype).unbind(0)
    ta.flash_varlen(q, k, v, torch.tensor([0, 30, 64], dtype=torch.int32), 34, 0.125)
    for lengths in (None, torch.tensor([20, 32], dtype=torch.int32)):
        ta.flash_padded(q, k, v, 32, lengths, 0.125)
    wide = torch.zeros(64, 1, 128, dtype=dtype)  # head width 128: its own tiling
    ta.flash_varlen(wide, wide, wide, torch.tensor([0, 64], dtype=torch.int32), 64, 0.1)
    assert compiled == ["_flash_varlen_kernel"] * 4
