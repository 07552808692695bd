"""FlashAttention's forward pass as a Triton kernel: the ``triton`` attention backend.

FlashAttention-2 gives each program 128 query rows (head width 64). At batch 1 a Seg-T block
has 3 heads x 8 row blocks = 24 programs on the H200's 132 multiprocessors: for the padded
(dense) layout PyTorch's kernel then splits the keys over more programs and combines them
(split-KV), but its variable-length mode, which the merged (packed) layout needs, has no such
split (``benchmarks/NOTES.md`` 39 and 41). This kernel is the same online-softmax forward
(float32 accumulation) with 64 query rows per program, twice the programs, no second pass;
compiled by Triton for the GPU at hand (on Hopper its products use the warpgroup matrix
instructions, which PyTorch's FlashAttention-2 build does not), it is also faster than FA2 on
every Segmenter shape measured on the H200, padded or packed (NOTES 43).

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

from mpm.errors import BackendError

try:  # triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    tl = None

__all__ = ["FlashTiles", "flash_padded", "flash_varlen", "check_inputs", "tiles_for", "varlen_reference", "HEAD_DIMS"]

#: head widths the kernel is compiled for (one feature tile per row)
HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)


@dataclass(frozen=True)
class FlashTiles:
    """One tiling: query rows per program, key rows per step, warps, software-pipeline stages."""

    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3


def tiles_for(head_dim: int) -> FlashTiles:
    """The tiling used for ``head_dim``: on the H200, 64 x 64 tiles in 4 warps and 3 stages were the fastest or
    within 4% of the fastest of 16 tilings for Seg-T/S at batch 1, 2 and 32 and Seg-B/L at batch 32
    (``benchmarks/attention_kernels.py``; ``results/reference/h200/attention/``)."""
    return FlashTiles() if head_dim <= 64 else FlashTiles(num_stages=2)


if triton is not None:

    @triton.jit(do_not_specialize=["max_len", "seq_rows"])
    def _flash_varlen_kernel(Q, K, V, O, CU, LENS, stride_qr, stride_qh, stride_kr, stride_kh, stride_vr, stride_vh,
                             stride_or, stride_oh, qk_scale, max_len, seq_rows, D: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UNIFORM: tl.constexpr,
                             HAS_LENS: tl.constexpr):
        pid_m = tl.program_id(0)
        h = tl.program_id(1)
        seq = tl.program_id(2)  # slowest: every program of a sequence is issued before the next sequence's
        if UNIFORM:  # a padded batch: sequence s starts at row s * seq_rows
            start = seq * seq_rows
            n = seq_rows
        else:
            start = tl.load(CU + seq)
            n = tl.load(CU + seq + 1) - start
        if HAS_LENS:  # only the first LENS[s] rows of sequence s are real (keys and queries)
            n = tl.load(LENS + seq)
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


def check_inputs(*qkv: Tensor) -> None:
    """Raise :class:`~mpm.errors.BackendError` unless the kernel takes q, k, v (T, H, D): a head width in
    :data:`HEAD_DIMS`, each head's features contiguous, Triton importable."""
    if triton is None:
        raise BackendError("attention backend 'triton' needs the triton package (it ships with CUDA builds of torch)")
    for q in qkv:
        if q.shape[-1] not in HEAD_DIMS or q.stride(-1) != 1:
            raise BackendError(f"attention backend 'triton' takes head widths {', '.join(map(str, HEAD_DIMS))} "
                               f"with contiguous features; got width {q.shape[-1]} (stride {q.stride(-1)})")


def flash_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_len: int, scale: float,
                 tiles: FlashTiles | None = None) -> Tensor:
    """Attention within each packed sequence: q, k, v (T, H, D), ``cu_seqlens`` (S + 1,) int32, ``max_len`` an
    upper bound of every sequence's length -> (T, H, D), contiguous. Rows outside every sequence are left
    unwritten (uninitialised)."""
    seqs = int(cu_seqlens.shape[0]) - 1
    return _launch(q, k, v, cu_seqlens, None, seqs, max_len, 0, scale, tiles)


def flash_padded(q: Tensor, k: Tensor, v: Tensor, seq_rows: int, lengths: Tensor | None, scale: float,
                 tiles: FlashTiles | None = None) -> Tensor:
    """Attention within each of the T / ``seq_rows`` padded sequences of q, k, v (T, H, D): sequence ``s`` is
    rows ``s * seq_rows ..``, of which the first ``lengths[s]`` (int32, all of them if None) are real. Returns
    (T, H, D), contiguous; rows past ``lengths[s]`` are zero."""
    seqs = q.shape[0] // seq_rows if seq_rows else 0
    return _launch(q, k, v, None, lengths, seqs, seq_rows, seq_rows, scale, tiles)


def _launch(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor | None, lengths: Tensor | None, seqs: int,
            max_len: int, seq_rows: int, scale: float, tiles: FlashTiles | None) -> Tensor:
    check_inputs(q, k, v)
    t, h, d = q.shape
    out = (torch.empty if lengths is None else torch.zeros)(t, h, d, dtype=q.dtype, device=q.device)
    if t == 0 or seqs <= 0 or max_len <= 0:
        return out
    tiles = tiles or tiles_for(d)
    # sequences outermost: at batch 1 the image's programs are issued first, each on its own multiprocessor,
    # and the capacity's pad sequence after them (interleaved, they doubled up on SMs: NOTES 46)
    grid = (triton.cdiv(max_len, tiles.block_m), h, seqs)
    uniform = cu_seqlens is None
    _flash_varlen_kernel[grid](q, k, v, out, q if uniform else cu_seqlens, q if lengths is None else lengths,
                               q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                               out.stride(0), out.stride(1), scale / math.log(2.0), max_len, seq_rows, D=d,
                               BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, UNIFORM=uniform,
                               HAS_LENS=lengths is not None, num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return out


def varlen_reference(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, scale: float) -> Tensor:
    """The plain twin of :func:`flash_varlen` (softmax in float32 at least, per sequence; rows outside every
    sequence zero)."""
    out = torch.zeros_like(q)
    work = torch.promote_types(q.dtype, torch.float32)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e <= s:
            continue
        qs, ks, vs = (t[s:e].transpose(0, 1).to(work) for t in (q, k, v))  # (H, n, D)
        w = (qs @ ks.transpose(1, 2) * scale).softmax(-1)
        out[s:e] = (w @ vs).transpose(0, 1).to(q.dtype)
    return out
