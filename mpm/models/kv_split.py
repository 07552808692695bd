"""Split-KV for FlashAttention-2's variable-length mode.

FlashAttention-2 runs one program per (block of 128 queries, sequence, head). A short batch of few
heads (Seg-T at batch 1: 8 row blocks x 3 heads = 24 programs on an H200's 132 multiprocessors)
leaves most of the GPU idle. For padded batches the kernel then splits each sequence's keys over
several programs and combines their partial results by their log-sum-exp (its split-KV kernel,
which dense attention gets); its varlen mode, which the packed merged layout needs, has no such
split. Here the same is done around the varlen kernel:

* every sequence's queries are repeated once per key chunk (sequence ``i`` becomes ``S``
  sequences, chunk ``s`` holding keys ``[s * c_i, (s + 1) * c_i)`` of it, ``c_i = ceil(L_i / S)``),
  so that the keys need no copy (the chunks lie in order in the key rows);
* one varlen call returns each chunk's normalised output and log-sum-exp;
* :func:`combine_kv_splits` weighs the chunks by ``exp(lse_s - max lse)`` (one Triton kernel on CUDA).

The layout (:class:`KVSplit`) is built once per merged layout on the device, with no host sync.
``MPM_KV_SPLIT=0`` turns it off (A/B timings).
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
from torch import Tensor

try:  # triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    tl = None

#: set False (or MPM_KV_SPLIT=0) to run the varlen kernel unsplit everywhere
enabled = os.environ.get("MPM_KV_SPLIT", "1") != "0"
#: FlashAttention-2's query rows per program (head dims up to 128, fp16/bf16, sm80/sm90)
QUERY_BLOCK = 128
#: most key chunks per sequence (MPM_KV_SPLITS_MAX)
MAX_SPLITS = int(os.environ.get("MPM_KV_SPLITS_MAX", "8"))
_SM_COUNT: dict[int, int] = {}


class KVSplit(NamedTuple):
    """A packed layout's sequences with their keys in ``splits`` chunks.

    Attributes:
        splits: S.
        cu_q: (nseq * S + 1,) int32, the repeated queries' cumulative lengths (sequence ``i``'s
            ``S`` copies back to back).
        cu_k: (nseq * S + 1,) int32, the key chunks' boundaries in the original rows.
        q_rows: (S * R,) long, the original row of every repeated query row.
        parts: (R, S) long, the repeated row of (row, chunk).
        max_k: a host upper bound of a chunk's length.
    """

    splits: int
    cu_q: Tensor
    cu_k: Tensor
    q_rows: Tensor
    parts: Tensor
    max_k: int


def splits_for(sequences: int, heads: int, head_dim: int, max_len: int, device: torch.device) -> int:
    """How many key chunks fill the GPU: 1 when the varlen kernel's own programs (row blocks x
    sequences x heads) already reach half the multiprocessors, else enough chunks to cover them all,
    at most :data:`MAX_SPLITS` and at least one row block of keys per chunk (CUDA, power-of-two
    head dims; elsewhere 1)."""
    if not enabled or device.type != "cuda" or triton is None or head_dim & (head_dim - 1):
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    sms = _SM_COUNT[index]
    programs = math.ceil(max_len / QUERY_BLOCK) * sequences * heads
    if 2 * programs >= sms:
        return 1
    return max(1, min(math.ceil(sms / programs), MAX_SPLITS, max_len // QUERY_BLOCK))


def kv_split(cu_seqlens: Tensor, rows: int, max_len: int, splits: int) -> KVSplit:
    """The :class:`KVSplit` of packed sequences ``cu_seqlens`` ((nseq + 1,); every one of the ``rows``
    rows in one sequence, the last entry ``rows``), each at most ``max_len`` long. No host sync."""
    cu = cu_seqlens.long()
    lens = cu[1:] - cu[:-1]
    chunk = (lens + splits - 1) // splits  # chunk 0 of a sequence is never empty
    s = torch.arange(splits, device=cu.device)
    k_start = cu[:-1, None] + torch.minimum(s[None, :] * chunk[:, None], lens[:, None])
    q_start = splits * cu[:-1, None] + s[None, :] * lens[:, None]
    cu_k = torch.cat([k_start.flatten(), cu[-1:]]).to(torch.int32)
    cu_q = torch.cat([q_start.flatten(), splits * cu[-1:]]).to(torch.int32)
    r = torch.arange(rows, device=cu.device)
    seq = torch.searchsorted(cu[1:], r, right=True)  # the sequence of every row
    parts = splits * cu[seq, None] + s[None, :] * lens[seq, None] + (r - cu[seq])[:, None]
    q_rows = torch.empty(splits * rows, dtype=torch.long, device=cu.device)
    q_rows[parts.flatten()] = r.repeat_interleave(splits)
    return KVSplit(splits, cu_q, cu_k, q_rows, parts, -(-max_len // splits))


def combine_kv_splits(out: Tensor, lse: Tensor, parts: Tensor) -> Tensor:
    """The attention output of every row from its chunks' results.

    Args:
        out: (S * R, H, D) each repeated query row's output over its key chunk (normalised).
        lse: (H, S * R) float32 log-sum-exp of those rows' logits (not finite for an empty chunk).
        parts: (R, S) the repeated rows of each row (:class:`KVSplit`).
    Returns:
        (R, H, D) in ``out``'s dtype: ``sum_s w_s out_s`` with ``w_s`` the softmax of the finite
        ``lse_s`` (one Triton kernel on CUDA).
    """
    if triton is not None and out.is_cuda:
        return _combine_triton(out, lse, parts)
    acc = torch.promote_types(out.dtype, torch.float32)
    weight = lse[:, parts].to(acc)  # (H, R, S)
    weight = torch.softmax(torch.where(torch.isfinite(weight), weight, float("-inf")), dim=-1)
    return torch.einsum("hrs,rshd->rhd", weight, out[parts].to(acc)).to(out.dtype)


if triton is not None:

    @triton.jit
    def _combine_kernel(OUT, stride_ot, stride_oh, LSE, stride_lh, PARTS, RES, R, H,
                        S: tl.constexpr, D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        h = tl.program_id(1)
        s = tl.arange(0, BLOCK_S)
        d = tl.arange(0, D)
        mr = r < R
        ms = mr[:, None] & (s < S)[None, :]
        rep = tl.load(PARTS + r[:, None].to(tl.int64) * S + s[None, :], mask=ms, other=0)  # (BLOCK_R, BLOCK_S)
        lse = tl.load(LSE + h * stride_lh + rep, mask=ms, other=float("-inf"))
        ok = ms & (lse == lse) & (lse < float("inf")) & (lse > float("-inf"))  # an empty chunk: no weight
        lse = tl.where(ok, lse, float("-inf"))
        top = tl.max(lse, axis=1)
        top = tl.where(top > float("-inf"), top, 0.0)
        w = tl.where(ok, tl.exp(lse - top[:, None]), 0.0)
        total = tl.sum(w, axis=1)
        acc = tl.zeros([BLOCK_R, D], dtype=tl.float32)
        for k in tl.static_range(S):
            pick = (s == k)[None, :]
            rep_k = tl.sum(tl.where(pick, rep, 0), axis=1)
            w_k = tl.sum(tl.where(pick, w, 0.0), axis=1)
            o = tl.load(OUT + rep_k[:, None].to(tl.int64) * stride_ot + h * stride_oh + d[None, :],
                        mask=mr[:, None] & (w_k > 0)[:, None], other=0.0)
            acc += w_k[:, None] * o.to(tl.float32)
        acc = acc / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(RES + (r[:, None].to(tl.int64) * H + h) * D + d[None, :], acc.to(RES.dtype.element_ty),
                 mask=mr[:, None])


def _combine_triton(out: Tensor, lse: Tensor, parts: Tensor) -> Tensor:
    rows, splits = parts.shape
    _, h, d = out.shape
    res = torch.empty(rows, h, d, dtype=out.dtype, device=out.device)
    if rows == 0:
        return res
    if out.stride(-1) != 1 or d & (d - 1) or lse.stride(-1) != 1:
        raise ValueError(f"combine_kv_splits: needs a power-of-two head dim and unit inner strides, got {tuple(out.shape)}")
    block_s = max(triton.next_power_of_2(splits), 2)
    _combine_kernel[(triton.cdiv(rows, 32), h)](out, out.stride(0), out.stride(1), lse, lse.stride(0),
                                                parts.contiguous(), res, rows, h, S=splits, D=d, BLOCK_R=32,
                                                BLOCK_S=block_s, num_warps=4)
    return res
