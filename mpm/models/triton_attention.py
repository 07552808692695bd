"""FlashAttention's forward pass as a Triton kernel, for shapes that leave FlashAttention-2 idle.

FlashAttention-2 gives each program 128 query rows (head width 64). At batch 1 a Seg-T block
has 3 heads x 8 row blocks = 24 programs on the H200's 132 multiprocessors: for the padded
(dense) layout PyTorch's kernel then splits the keys over more programs and combines them
(split-KV), but its variable-length mode, which the merged (packed) layout needs, has no such
split (``benchmarks/NOTES.md`` 39 and 41). This kernel takes the same packed inputs and gives
each program fewer query rows (``BLOCK_M`` 16-64), so the same work spreads over 4-8 times more
programs with no second pass: online softmax over key tiles, float32 accumulation.

Inputs are (T, H, D) rows of back-to-back sequences with cumulative lengths, as
FlashAttention-2's varlen mode takes them (row strides free: views of one qkv projection);
a padded (B, N) batch is the special case of B sequences of N rows. ``max_len`` is an upper
bound (programs past a sequence's end exit at once), so nothing is read back to the host.

The plain twin is :func:`varlen_reference` (any device); the tests compare the kernel with it
on the CPU through Triton's interpreter, ``benchmarks/cuda_checks.py`` on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

try:  # triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    tl = None

__all__ = ["FlashTiles", "flash_varlen", "tiles_for", "varlen_reference", "HEAD_DIMS"]

#: head widths the kernel is compiled for (one feature tile per row)
HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)


@dataclass(frozen=True)
class FlashTiles:
    """One tiling: query rows per program, key rows per step, warps, software-pipeline stages."""

    block_m: int = 32
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2


def tiles_for(head_dim: int) -> FlashTiles:
    """The tiling used for ``head_dim`` (``benchmarks/attention_kernels.py`` sweeps the alternatives)."""
    return FlashTiles(block_m=32, block_n=64 if head_dim <= 64 else 32)


if triton is not None:

    @triton.jit(do_not_specialize=["max_len"])
    def _flash_varlen_kernel(Q, K, V, O, CU, stride_qr, stride_qh, stride_kr, stride_kh, stride_vr, stride_vh,
                             stride_or, stride_oh, qk_scale, max_len, D: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr):
        pid_m = tl.program_id(0)
        seq = tl.program_id(1)
        h = tl.program_id(2)
        start = tl.load(CU + seq)
        n = tl.load(CU + seq + 1) - start
        if pid_m * BLOCK_M < n:
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            offs_n = tl.arange(0, BLOCK_N)
            offs_d = tl.arange(0, D)
            mask_m = offs_m < n
            rows_m = (start + offs_m).to(tl.int64)
            q = tl.load(Q + rows_m[:, None] * stride_qr + h * stride_qh + offs_d[None, :], mask=mask_m[:, None],
                        other=0.0)
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
            acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
            for n0 in range(0, n, BLOCK_N):
                cols = n0 + offs_n
                mask_n = cols < n
                rows_n = (start + cols).to(tl.int64)
                kt = tl.load(K + rows_n[None, :] * stride_kr + h * stride_kh + offs_d[:, None], mask=mask_n[None, :],
                             other=0.0)
                s = tl.dot(q, kt) * qk_scale  # log2 domain: qk_scale = scale / ln 2
                s = tl.where(mask_n[None, :], s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                p = tl.math.exp2(s - m_new[:, None])
                alpha = tl.math.exp2(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, 1)
                v = tl.load(V + rows_n[:, None] * stride_vr + h * stride_vh + offs_d[None, :], mask=mask_n[:, None],
                            other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new
            out = acc / l_i[:, None]
            tl.store(O + rows_m[:, None] * stride_or + h * stride_oh + offs_d[None, :], out.to(O.dtype.element_ty),
                     mask=mask_m[:, None])


def supported(q: Tensor) -> bool:
    """Whether :func:`flash_varlen` takes ``q`` (T, H, D): Triton present, CUDA (or the CPU interpreter),
    half precision, a head width in :data:`HEAD_DIMS`, each head's features contiguous."""
    from mpm.merging import triton_kernels as tk

    return (tk.available(q) and q.dim() == 3 and q.shape[-1] in HEAD_DIMS and q.stride(-1) == 1
            and q.dtype in (torch.float16, torch.bfloat16, torch.float32))


def flash_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_len: int, scale: float,
                 tiles: FlashTiles | None = None) -> Tensor:
    """Attention within each packed sequence: q, k, v (T, H, D), ``cu_seqlens`` (S + 1,) int32, ``max_len`` an
    upper bound of every sequence's length -> (T, H, D), contiguous. Rows outside every sequence are left
    unwritten (uninitialised)."""
    t, h, d = q.shape
    out = torch.empty(t, h, d, dtype=q.dtype, device=q.device)
    seqs = int(cu_seqlens.shape[0]) - 1
    if t == 0 or seqs <= 0 or max_len <= 0:
        return out
    tiles = tiles or tiles_for(d)
    grid = (triton.cdiv(max_len, tiles.block_m), seqs, h)
    _flash_varlen_kernel[grid](q, k, v, out, cu_seqlens, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                               v.stride(0), v.stride(1), out.stride(0), out.stride(1), scale / math.log(2.0),
                               max_len, D=d, BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n,
                               num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return out


def varlen_reference(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, scale: float) -> Tensor:
    """The plain twin of :func:`flash_varlen` (float32 softmax per sequence; rows outside every sequence zero)."""
    out = torch.zeros_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e <= s:
            continue
        qs, ks, vs = (t[s:e].transpose(0, 1).float() for t in (q, k, v))  # (H, n, D)
        w = (qs @ ks.transpose(1, 2) * scale).softmax(-1)
        out[s:e] = (w @ vs).transpose(0, 1).to(q.dtype)
    return out
