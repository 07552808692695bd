"""Triton kernels of the fast merge path (CUDA): fewer, larger kernels, no host sync.

Each kernel has a plain PyTorch twin (:mod:`mpm.merging.mpm`, :mod:`mpm.merging.maps`)
that runs everywhere and that the tests compare it with (on the CPU through
Triton's interpreter, ``TRITON_INTERPRET=1``; on the GPU in ``benchmarks/cuda_checks.py``).

Tokens live as rows of a flat (R, C) buffer: image ``b`` owns rows
``start[b] .. start[b] + P + n[b]`` (P prefix tokens, then ``n[b]`` image tokens);
per-image tensors (best partner, output slot, ...) are (B, S) with S an upper
bound of ``n`` and hold *local* image-token indices.

=====================  ==========================================================
kernel                 does
=====================  ==========================================================
inverse norms          ``1 / ||x_r||`` of every row, once (tilings with ``norms``)
best partners          cosine similarity tiles in registers, running max / argmax
                       per row (first index on ties, self excluded): no (N x N)
                       matrix in memory; at small batches the columns are split
                       over several programs (:func:`column_splits`); the tiling
                       per feature width is :data:`TILES`
best partners,         at large batches (:func:`partner_tiles`): one program per
symmetric              pair of token blocks, the upper triangle only; a tile's
                       row maxima serve its rows, its column maxima its columns
                       (half the products); a partial per column block
combine splits         the column ranges' (or blocks') partial maxima, the
                       earlier range keeping ties
mutual plan            mutual test, representatives, output slots (one scan),
                       kept tokens per image: one program per image
plan (one launch)      best partners with norms in place, then each image's last
                       program (a ticket per image) folds the column ranges and
                       runs the mutual plan: the plan outside CUDA graphs, where
                       every launch costs the host time
gather sources         the output layout (packed back to back or padded), its
                       cumulative lengths, and for every output row the one or
                       two input rows it averages; and the map after the merge,
                       ``dest[b, index[b, i]]``, kept inside the capacity
                       (speculative buffers)
gather mean            ``out[r] = (x[s1[r]] + x[s2[r]]) * 0.5`` (or ``x[s1[r]]``)
unmerge rows           the full token grid and the prefix tokens of every image,
                       rows looked up in place (one launch for both)
=====================  ==========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from mpm.errors import ConfigError

try:  # triton ships with CUDA builds of torch; the plain PyTorch path needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    tl = None


#: set False (or MPM_TRITON=0) to take the plain PyTorch twins everywhere (checks and A/B timings)
enabled = os.environ.get("MPM_TRITON", "1") != "0"
#: whether MPM's plan takes its best partners from :func:`best_partners_rows` (one fused kernel) or
#: from the PyTorch twin (cuBLAS similarity product + row max) before the Triton mutual test. On by
#: default: on the H200, once its strides and widths are specialised (16-divisible, vectorised
#: loads), the fused plan takes 0.068 / 0.093 ms (Seg-T, batch 1 / 32) and 0.184 / 0.594 ms (Seg-L)
#: per call against 0.316 / 0.309 and 0.264 / 1.106 ms with the twin's partners
#: (``benchmarks/merge_kernels.py``; results/reference/h200/kernels2/). MPM_TRITON_BEST_PARTNER=0
#: takes the twin's (A/B timings).
fused_best_partner = os.environ.get("MPM_TRITON_BEST_PARTNER", "1") != "0"


def available(t: Tensor) -> bool:
    """Whether the kernels can run on ``t``'s device (CUDA, or the CPU under ``TRITON_INTERPRET=1``)."""
    if triton is None or not enabled:
        return False
    if t.is_cuda:
        return True
    return t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


if triton is not None:

    # counts that vary between calls are not specialised; strides and feature widths are (Triton then
    # knows them divisible by 16 and vectorises the loads: a few compilations at most, never one per value)
    @triton.jit(do_not_specialize=["R"])
    def _inv_norm_kernel(X, stride_x, OUT, R, C, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        mr = r < R
        offs_k = tl.arange(0, BLOCK_K)
        sq = tl.zeros([BLOCK_R], dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            kk = k0 + offs_k
            a = tl.load(X + r[:, None].to(tl.int64) * stride_x + kk[None, :], mask=mr[:, None] & (kk < C)[None, :],
                        other=0.0).to(tl.float32)
            sq += tl.sum(a * a, axis=1)
        tl.store(OUT + r, 1.0 / tl.maximum(tl.sqrt(sq), 1e-12), mask=mr)

    @triton.jit
    def _tile_dot(X, rows_m, rows_n, mask_m, mask_n, C, k_end, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, COLUMN_NORMS: tl.constexpr):
        """(BLOCK_M, BLOCK_N) float32 dot products of the rows at offsets ``rows_m`` and ``rows_n`` of X
        over their first ``k_end`` of C features, and (COLUMN_NORMS) the ``rows_n`` rows' squared norms."""
        offs_k = tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        sq_n = tl.zeros([BLOCK_N], dtype=tl.float32)
        for k0 in range(0, k_end, BLOCK_K):
            kk = k0 + offs_k
            a = tl.load(X + rows_m[:, None] + kk[None, :], mask=mask_m[:, None] & (kk < C)[None, :], other=0.0)
            bt = tl.load(X + rows_n[None, :] + kk[:, None], mask=mask_n[None, :] & (kk < C)[:, None], other=0.0)
            if PRECISION == "ieee":  # float32 inputs: no tf32 rounding
                acc = tl.dot(a, bt, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, bt, acc)
            if COLUMN_NORMS:
                btf = bt.to(tl.float32)
                sq_n += tl.sum(btf * btf, axis=0)
        return acc, sq_n

    @triton.jit
    def _partner_rows(X, stride_x, INV, row0, n, pid_m, b, split, BEST, SCORE, stride_o, stride_split, C,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLITS: tl.constexpr,
                      PRECISION: tl.constexpr, NORMS: tl.constexpr):
        """Row block ``pid_m`` of image ``b`` (its ``n`` tokens from row ``row0``) against column range ``split``:
        each row's best partner and cosine there, stored at BEST / SCORE[split, b, row]."""
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < n
        offs_k = tl.arange(0, BLOCK_K)
        rows_m = (row0 + offs_m).to(tl.int64) * stride_x
        if NORMS:  # inverse norms precomputed once per row (_inv_norm_kernel)
            inv_m = tl.load(INV + row0 + offs_m, mask=mask_m, other=1.0)
        else:
            sq_m = tl.zeros([BLOCK_M], dtype=tl.float32)
            for k0 in range(0, C, BLOCK_K):
                kk = k0 + offs_k
                a = tl.load(X + rows_m[:, None] + kk[None, :], mask=mask_m[:, None] & (kk < C)[None, :], other=0.0)
                a = a.to(tl.float32)
                sq_m += tl.sum(a * a, axis=1)
            inv_m = 1.0 / tl.maximum(tl.sqrt(sq_m), 1e-12)
        best_val = tl.full([BLOCK_M], float("-inf"), tl.float32)
        best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
        chunk = tl.cdiv(tl.cdiv(n, SPLITS), BLOCK_N) * BLOCK_N
        n_lo = split * chunk
        n_hi = tl.where(pid_m * BLOCK_M < n, tl.minimum(n, n_lo + chunk), n_lo)  # past the rows: nothing
        for n0 in range(n_lo, n_hi, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_n = offs_n < n
            rows_n = (row0 + offs_n).to(tl.int64) * stride_x
            acc, sq_n = _tile_dot(X, rows_m, rows_n, mask_m, mask_n, C, C, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION,
                                  not NORMS)
            if NORMS:
                inv_n = tl.load(INV + row0 + offs_n, mask=mask_n, other=1.0)
            else:
                inv_n = 1.0 / tl.maximum(tl.sqrt(sq_n), 1e-12)
            s = acc * inv_n[None, :]
            s = tl.where(mask_n[None, :] & (offs_n[None, :] != offs_m[:, None]), s, float("-inf"))
            tile_max = tl.max(s, axis=1)
            tile_arg = tl.argmax(s, axis=1).to(tl.int32)
            better = tile_max > best_val  # strict: the earlier column block keeps ties
            best_idx = tl.where(better, (tile_arg + n0).to(tl.int32), best_idx)
            best_val = tl.where(better, tile_max, best_val)
        score = best_val * inv_m
        # slots past the image's tokens: the slot's own index and -inf (as for a token alone)
        best_idx = tl.where(mask_m, best_idx, offs_m)
        score = tl.where(mask_m, score, float("-inf"))
        out = split.to(tl.int64) * stride_split + b.to(tl.int64) * stride_o + offs_m
        tl.store(BEST + out, best_idx.to(tl.int64), mask=offs_m < stride_o)
        tl.store(SCORE + out, score, mask=offs_m < stride_o)

    @triton.jit(do_not_specialize=["P"])
    def _best_partner_kernel(X, stride_x, INV, START, NIMG, BEST, SCORE, stride_o, stride_split, P, C,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                             SPLITS: tl.constexpr, PRECISION: tl.constexpr, NORMS: tl.constexpr):
        b = tl.program_id(1)
        _partner_rows(X, stride_x, INV, tl.load(START + b) + P, tl.load(NIMG + b), tl.program_id(0), b,
                      tl.program_id(2), BEST, SCORE, stride_o, stride_split, C, BLOCK_M, BLOCK_N, BLOCK_K, SPLITS,
                      PRECISION, NORMS)

    @triton.jit(do_not_specialize=["P"])
    def _best_partner_sym_kernel(X, stride_x, INV, START, NIMG, BEST, SCORE, stride_o, stride_part, P, C,
                                 BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
        # one (BLOCK x BLOCK) tile (bi, bj), bi <= bj, of one image's cosine matrix: its row maxima are
        # the candidates of block bi's tokens among block bj, its column maxima those of block bj's
        # tokens among block bi (the matrix is symmetric: each pair of blocks is multiplied once).
        # Partial k of a row = its best among column block k, stored at BEST/SCORE[k, b, row].
        bi = tl.program_id(0)
        bj = tl.program_id(1)
        b = tl.program_id(2)
        if bi <= bj:
            n = tl.load(NIMG + b)
            row0 = tl.load(START + b) + P
            offs_m = bi * BLOCK + tl.arange(0, BLOCK)
            offs_n = bj * BLOCK + tl.arange(0, BLOCK)
            mask_m = offs_m < n
            mask_n = offs_n < n
            rows_m = (row0 + offs_m).to(tl.int64) * stride_x
            rows_n = (row0 + offs_n).to(tl.int64) * stride_x
            k_end = tl.where(bj * BLOCK < n, C, 0)  # a tile past the image's tokens: no product
            acc, _ = _tile_dot(X, rows_m, rows_n, mask_m, mask_n, C, k_end, BLOCK, BLOCK, BLOCK_K, PRECISION, False)
            inv_m = tl.load(INV + row0 + offs_m, mask=mask_m, other=1.0)
            inv_n = tl.load(INV + row0 + offs_n, mask=mask_n, other=1.0)
            s = (acc * inv_n[None, :]) * inv_m[:, None]
            s = tl.where(mask_m[:, None] & mask_n[None, :] & (offs_n[None, :] != offs_m[:, None]), s,
                         float("-inf"))
            base = b.to(tl.int64) * stride_o
            # rows of block bi against columns of block bj: partial bj of those rows
            row_max = tl.max(s, axis=1)
            row_arg = (tl.argmax(s, axis=1) + bj * BLOCK).to(tl.int64)
            row_arg = tl.where(mask_m, row_arg, offs_m.to(tl.int64))  # past the tokens: own index, -inf
            out_m = bj.to(tl.int64) * stride_part + base + offs_m
            tl.store(BEST + out_m, row_arg, mask=offs_m < stride_o)
            tl.store(SCORE + out_m, row_max, mask=offs_m < stride_o)
            if bi < bj:  # columns of block bj against rows of block bi: partial bi of those rows
                col_max = tl.max(s, axis=0)
                col_arg = (tl.argmax(s, axis=0) + bi * BLOCK).to(tl.int64)
                col_arg = tl.where(mask_n, col_arg, offs_n.to(tl.int64))
                out_n = bi.to(tl.int64) * stride_part + base + offs_n
                tl.store(BEST + out_n, col_arg, mask=offs_n < stride_o)
                tl.store(SCORE + out_n, col_max, mask=offs_n < stride_o)

    @triton.jit(do_not_specialize=["total"])
    def _combine_splits_kernel(BEST_PART, SCORE_PART, BEST, SCORE, total, SPLITS: tl.constexpr,
                               BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = i < total
        best_val = tl.load(SCORE_PART + i, mask=mask, other=float("-inf"))
        best_idx = tl.load(BEST_PART + i, mask=mask, other=0)
        for k in tl.static_range(1, SPLITS):
            val = tl.load(SCORE_PART + k * total + i, mask=mask, other=float("-inf"))
            idx = tl.load(BEST_PART + k * total + i, mask=mask, other=0)
            better = val > best_val  # strict: the earlier split (lower columns) keeps ties
            best_idx = tl.where(better, idx, best_idx)
            best_val = tl.where(better, val, best_val)
        tl.store(BEST + i, best_idx, mask=mask)
        tl.store(SCORE + i, best_val, mask=mask)

    @triton.jit
    def _mutual_image(BEST, SCORE, DEST, PARTNER, SURV, OUTLEN, b, n, stride, stride_part, BLOCK: tl.constexpr,
                      PARTS: tl.constexpr, CACHE: tl.constexpr):
        """Image ``b``'s mutual test, representatives and output slots from its ``n`` tokens' partners
        (PARTS > 1: partial maxima per column range (PARTS, B, S), folded first, the earlier keeping ties);
        ``CACHE``: the loads' cache modifier (".cg": partners written by other programs of this launch)."""
        j = tl.arange(0, BLOCK)
        valid = j < n
        base = b.to(tl.int64) * stride
        best = tl.load(BEST + base + j, mask=valid, other=0, cache_modifier=CACHE)
        score = tl.load(SCORE + base + j, mask=valid, other=float("-inf"), cache_modifier=CACHE)
        for k in tl.static_range(1, PARTS):
            val = tl.load(SCORE + k * stride_part + base + j, mask=valid, other=float("-inf"), cache_modifier=CACHE)
            idx = tl.load(BEST + k * stride_part + base + j, mask=valid, other=0, cache_modifier=CACHE)
            better = val > score
            best = tl.where(better, idx, best)
            score = tl.where(better, val, score)
        if PARTS > 1:  # the folded partners, through PARTNER (written again below), for the mutual test
            tl.store(PARTNER + base + j, best, mask=valid)
            tl.debug_barrier()
            back = tl.load(PARTNER + base + best, mask=valid, other=-1, cache_modifier=CACHE)
            tl.debug_barrier()
        else:
            back = tl.load(BEST + base + best, mask=valid, other=-1, cache_modifier=CACHE)
        mutual = valid & (back == j) & (best != j) & (score > float("-inf"))
        rep = tl.where(mutual, tl.minimum(j.to(tl.int64), best), j.to(tl.int64))
        surv = (rep == j) & valid
        slot = tl.cumsum(surv.to(tl.int32), axis=0) - 1
        tl.store(DEST + base + j, slot.to(tl.int64), mask=valid)
        tl.debug_barrier()
        dest = tl.load(DEST + base + rep, mask=valid, other=0, cache_modifier=CACHE)
        tl.debug_barrier()
        tl.store(DEST + base + j, dest, mask=valid)
        tl.store(PARTNER + base + j, tl.where(mutual, best, j.to(tl.int64)), mask=valid)
        tl.store(SURV + base + j, surv.to(tl.int8), mask=valid)
        tl.store(OUTLEN + b, tl.sum(surv.to(tl.int64), axis=0))

    @triton.jit(do_not_specialize=["stride", "stride_part"])
    def _mutual_kernel(BEST, SCORE, NIMG, DEST, PARTNER, SURV, OUTLEN, stride, stride_part, BLOCK: tl.constexpr,
                       PARTS: tl.constexpr):
        b = tl.program_id(0)
        _mutual_image(BEST, SCORE, DEST, PARTNER, SURV, OUTLEN, b, tl.load(NIMG + b), stride, stride_part, BLOCK,
                      PARTS, "")

    @triton.jit(do_not_specialize=["P", "S"])
    def _plan_kernel(X, stride_x, START, NIMG, BEST, SCORE, DEST, PARTNER, SURV, OUTLEN, TICKETS, S, P, C,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLITS: tl.constexpr,
                     PRECISION: tl.constexpr, BLOCK_S: tl.constexpr, UNIFORM: tl.constexpr):
        # the whole plan in one launch: each program searches its rows' partners over its column range
        # (norms computed here, no pre-pass), then takes a ticket of its image; the image's last program
        # (every partial written and released before its ticket) folds the ranges and runs the mutual test
        b = tl.program_id(1)
        n = S if UNIFORM else tl.load(NIMG + b)
        stride_part = tl.num_programs(1).to(tl.int64) * S
        _partner_rows(X, stride_x, X, tl.load(START + b) + P, n, tl.program_id(0), b, tl.program_id(2), BEST,
                      SCORE, S, stride_part, C, BLOCK_M, BLOCK_N, BLOCK_K, SPLITS, PRECISION, False)
        tl.debug_barrier()  # this program's partials stored before its ticket (released at GPU scope)
        ticket = tl.atomic_add(TICKETS + b, 1, sem="acq_rel", scope="gpu")
        if ticket == tl.num_programs(0) * SPLITS - 1:
            tl.store(TICKETS + b, 0)  # ready for the next launch
            tl.debug_barrier()
            _mutual_image(BEST, SCORE, DEST, PARTNER, SURV, OUTLEN, b, n, S, stride_part, BLOCK_S, SPLITS, ".cg")

    @triton.jit(do_not_specialize=["stride", "B", "P", "L_OUT", "R_OUT", "N"])
    def _sources_kernel(DEST, PARTNER, SURV, NIMG, IN_START, OUTLEN, stride, SRC1, SRC2, OUT_START, OUT_LENGTH, CU,
                        B, P, L_OUT, R_OUT, INDEX, OUT_INDEX, N, PACKED: tl.constexpr, HAS_PARTNER: tl.constexpr,
                        BLOCK: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr, PAD_BLOCK: tl.constexpr,
                        UNIFORM: tl.constexpr, COMPOSE: tl.constexpr, CLAMP: tl.constexpr):
        b = tl.program_id(0)
        n = stride if UNIFORM else tl.load(NIMG + b)
        m = tl.load(OUTLEN + b)
        in_start = tl.load(IN_START + b)
        if PACKED:  # back to back; rows past R_OUT - 1 are cut (a count over a speculative capacity)
            bs = tl.arange(0, BLOCK_B)
            lens = tl.load(OUTLEN + bs, mask=bs < B, other=0) + P
            lens = tl.where(bs < B, lens, 0)
            last = m - m + R_OUT - 1  # int64
            out_start = tl.minimum(tl.sum(tl.where(bs < b, lens, 0), axis=0), last)
            length = tl.maximum(tl.minimum(m + P, last - out_start), 0)
            total = tl.minimum(tl.sum(lens, axis=0), last)
            end = last + 1
        else:
            out_start = b.to(tl.int64) * L_OUT
            length = tl.minimum(m + P, m - m + L_OUT)
            total = out_start + length
            end = out_start + L_OUT
        base = b.to(tl.int64) * stride
        j = tl.arange(0, BLOCK)
        valid = j < n
        surv = (tl.load(SURV + base + j, mask=valid, other=0) != 0) & valid
        dest = tl.load(DEST + base + j, mask=valid, other=0)
        fits = surv & (P + dest < length)
        out_row = out_start + P + dest
        tl.store(SRC1 + out_row, in_start + P + j, mask=fits)
        if HAS_PARTNER:
            partner = tl.load(PARTNER + base + j, mask=valid, other=0)
            tl.store(SRC2 + out_row, in_start + P + partner, mask=fits)
        p = tl.arange(0, BLOCK_P)
        tl.store(SRC1 + out_start + p, in_start + p, mask=(p < P) & (p < length))
        if HAS_PARTNER:
            tl.store(SRC2 + out_start + p, in_start + p, mask=(p < P) & (p < length))
        if PACKED:
            tl.store(CU + b, out_start.to(tl.int32))
            pad_from = total
            fill_row = in_start - in_start  # pad rows copy row 0 (finite)
            run = b == B - 1
        else:
            pad_from = out_start + length
            fill_row = in_start  # this image's pad rows copy its first row
            run = b >= 0
        if run:
            if PACKED:
                tl.store(CU + B, total.to(tl.int32))
                tl.store(CU + B + 1, end.to(tl.int32))
            for r0 in range(pad_from, end, PAD_BLOCK):
                r = r0 + tl.arange(0, PAD_BLOCK)
                fill = tl.zeros([PAD_BLOCK], dtype=tl.int64) + fill_row
                tl.store(SRC1 + r, fill, mask=r < end)
                if HAS_PARTNER:
                    tl.store(SRC2 + r, fill, mask=r < end)
        tl.store(OUT_START + b, out_start)
        tl.store(OUT_LENGTH + b, length)
        if COMPOSE:  # the map after the merge, dest[b, index[b, i]] (no launch of its own)
            cut = tl.maximum(length - P - 1, 0)
            for i0 in range(0, N, BLOCK):
                i = i0 + tl.arange(0, BLOCK)
                mi = i < N
                k = tl.load(INDEX + b.to(tl.int64) * N + i, mask=mi, other=0)
                d = tl.load(DEST + base + k, mask=mi, other=0)
                if CLAMP:  # inside the image's kept tokens (a speculative capacity may have cut them)
                    d = tl.minimum(d, cut)
                tl.store(OUT_INDEX + b.to(tl.int64) * N + i, d, mask=mi)

    @triton.jit(do_not_specialize=["R"])
    def _gather_mean_kernel(X, stride_x, SRC1, SRC2, OUT, stride_o, R, C, HAS2: tl.constexpr,
                            BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mr = r < R
        mask = mr[:, None] & (c < C)[None, :]
        s1 = tl.load(SRC1 + r, mask=mr, other=0)
        v = tl.load(X + s1[:, None] * stride_x + c[None, :], mask=mask, other=0.0)
        if HAS2:
            s2 = tl.load(SRC2 + r, mask=mr, other=0)
            w = tl.load(X + s2[:, None] * stride_x + c[None, :], mask=mask, other=0.0)
            v = (v + w) * 0.5
        tl.store(OUT + r[:, None].to(tl.int64) * stride_o + c[None, :], v, mask=mask)


    @triton.jit
    def _unmerge_kernel(X, stride_x, START, INDEX, TOKENS, PREFIX, B, N, C, last_row, P: tl.constexpr,
                        CLAMP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
        # output rows: B * N image tokens (image r // N, grid position r % N), then B * P prefix tokens
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mc = c < C
        n_tok = B * N
        is_tok = r < n_tok
        mr = r < n_tok + B * P
        j = tl.load(INDEX + r, mask=mr & is_tok, other=0)
        if P > 0:
            q = tl.where(is_tok, 0, r - n_tok)
            img = tl.where(is_tok, r // N, q // P)
            start = tl.load(START + img, mask=mr, other=0)
            src = tl.where(is_tok, start + P + j, start + q % P)
        else:
            q = r
            src = tl.load(START + r // N, mask=mr, other=0) + j
        if CLAMP:
            src = tl.minimum(src, last_row)
        v = tl.load(X + src[:, None].to(tl.int64) * stride_x + c[None, :], mask=mr[:, None] & mc[None, :], other=0.0)
        tl.store(TOKENS + r[:, None].to(tl.int64) * C + c[None, :], v, mask=(mr & is_tok)[:, None] & mc[None, :])
        if P > 0:
            tl.store(PREFIX + q[:, None].to(tl.int64) * C + c[None, :], v,
                     mask=(mr & (r >= n_tok))[:, None] & mc[None, :])


@dataclass(frozen=True)
class TileConfig:
    """Tiling of the best-partner kernel: (BLOCK_M, BLOCK_N) similarity tiles, BLOCK_K features per
    step, warps and pipeline stages per program; ``norms``: inverse norms from one pre-pass
    (:func:`inv_norms`) instead of recomputing each column tile's norms in every program;
    ``symmetric``: one program per pair of token blocks (square ``block_m`` tiles of the upper
    triangle only, each read along its rows and along its columns; norms always from the pre-pass);
    ``split_tiles``: the fewest column tiles a program searches when the columns are split
    (:func:`column_splits`: small batches)."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 3
    norms: bool = False
    symmetric: bool = False
    split_tiles: int = 2

    def label(self) -> str:
        if self.symmetric:
            return f"sym {self.block_m}x{self.block_m}x{self.block_k} w{self.num_warps} s{self.num_stages}"
        return (f"{self.block_m}x{self.block_n}x{self.block_k} w{self.num_warps} s{self.num_stages}"
                f"{' norms' if self.norms else ''}{'' if self.split_tiles == 2 else f' split{self.split_tiles}'}")


#: the kernel's tiling until the sweep of ``benchmarks/merge_kernels.py --sweep`` chose another
BASE_TILES = TileConfig()
#: feature width -> tiling (widths not listed take :data:`BASE_TILES`; BLOCK_K is cut to 16 below 64 features).
#: The fastest checked tilings of ``merge_kernels.py --sweep`` at batch 32 on the H200
#: (results/reference/h200/run5/tiles.log; kernel alone, CUDA-graph replay): Seg-T 0.086 -> 0.061 ms,
#: Seg-S 0.136 -> 0.083, Seg-B 0.232 -> 0.132, Seg-L 0.603 -> 0.331 ms, every row's partner
#: attaining its row maximum (384 taken from the table by hand: the sweep's float32 mean of its
#: checks rounded to 0.99999994, so its best-out skipped that width; the check is now exact)
TILES: dict[int, TileConfig] = {
    192: TileConfig(64, 128, 64, num_warps=4, num_stages=3, norms=True),
    384: TileConfig(64, 128, 64, num_warps=4, num_stages=3, norms=True),
    768: TileConfig(128, 128, 64, num_warps=8, num_stages=3, norms=True),
    1024: TileConfig(128, 128, 64, num_warps=8, num_stages=3, norms=True),
}


#: feature width -> tiling of the symmetric kernel (:class:`TileConfig` ``symmetric``), which
#: :func:`partner_tiles` takes over the row kernel when its grid alone fills the GPU (large batches).
#: The sweep's winner at every width (``merge_kernels.py --sweep --sweep-set symmetric``, batch 32,
#: H200, results/reference/h200/sym/tiles.log; kernel alone, CUDA-graph replay): against the row
#: kernel of :data:`TILES`, Seg-T 0.0616 -> 0.0485 ms, Seg-S 0.0835 -> 0.0577, Seg-B 0.1340 ->
#: 0.0917, Seg-L 0.3325 -> 0.2006 ms, every partner attaining its row maximum
SYMMETRIC_BASE_TILES = TileConfig(128, 128, 64, num_warps=4, num_stages=3, norms=True, symmetric=True)
SYMMETRIC_TILES: dict[int, TileConfig] = {192: SYMMETRIC_BASE_TILES, 384: SYMMETRIC_BASE_TILES,
                                          768: SYMMETRIC_BASE_TILES, 1024: SYMMETRIC_BASE_TILES}
#: set False (or MPM_TRITON_SYMMETRIC=0) to keep the row kernel at every batch size (A/B timings)
symmetric_best_partner = os.environ.get("MPM_TRITON_SYMMETRIC", "1") != "0"


#: the small batches' first guess (``merge_kernels.py --sweep --sweep-set small`` times it first)
SMALL_BASE_TILES = TileConfig(64, 64, 64, num_warps=4, num_stages=3, norms=True, split_tiles=1)
_ROW_64x128 = TileConfig(64, 128, 64, num_warps=4, num_stages=3, norms=True, split_tiles=1)
_SYM_64 = TileConfig(64, 64, 64, num_warps=4, num_stages=3, norms=True, symmetric=True)
#: feature width -> {batch: tiling} of the best-partner search when the row kernel's own tiling
#: (:data:`TILES`) leaves most multiprocessors idle (:func:`partner_tiles`: batch 1, a few images):
#: smaller tiles, so that rows and column ranges give every multiprocessor programs. A batch takes
#: the entry of the largest batch listed that is not above it. The sweep's winners per batch
#: (``--sweep --sweep-set small --batches 1,4``, H200, results/reference/h200/small/tiles.json, its
#: log in logs.tar.gz there, the table in small_tiles.json (``--rows``); the whole plan, CUDA-graph replay), in ms against the batch-32 tiling: batch 1, Seg-T 0.0161 ->
#: 0.0118, Seg-S 0.0194 -> 0.0129, Seg-B 0.0314 -> 0.0153, Seg-L 0.0283 -> 0.0204; batch 4, 0.0186
#: -> 0.0176, 0.0223 -> 0.0203, 0.0345 -> 0.0252, 0.0520 -> 0.0414; every partner attaining its row
#: maximum
SMALL_TILES: dict[int, dict[int, TileConfig]] = {
    192: {1: _ROW_64x128, 4: _ROW_64x128},
    384: {1: _ROW_64x128, 4: _SYM_64},
    768: {1: _ROW_64x128, 4: _SYM_64},
    1024: {1: TileConfig(128, 128, 64, num_warps=8, num_stages=3, norms=True, split_tiles=1), 4: _SYM_64},
}
#: set False (or MPM_TRITON_SMALL=0) to keep :data:`TILES` at small batches too (A/B timings)
small_batch_tiles = os.environ.get("MPM_TRITON_SMALL", "1") != "0"


def load_tiles(path: str | os.PathLike, per_batch: bool = False) -> dict:
    """A tiling table from JSON ``{"<width>": {"block_m": ..., ...}}`` (``merge_kernels.py --sweep``'s
    ``best``), or with ``per_batch`` ``{"<width>": {"<batch>": {...}}}`` (``--sweep-set small``'s);
    ``MPM_TRITON_TILES`` / ``..._SYMMETRIC_TILES`` / ``..._SMALL_TILES=<file>`` make it :data:`TILES` /
    :data:`SYMMETRIC_TILES` / :data:`SMALL_TILES` at import (A/B timings)."""
    import json

    with open(path) as f:
        table = json.load(f)
    if per_batch:
        return {int(width): {int(batch): TileConfig(**fields) for batch, fields in row.items()}
                for width, row in table.items()}
    return {int(width): TileConfig(**fields) for width, fields in table.items()}


if os.environ.get("MPM_TRITON_TILES"):
    TILES = load_tiles(os.environ["MPM_TRITON_TILES"])
if os.environ.get("MPM_TRITON_SYMMETRIC_TILES"):  # ``--sweep-set symmetric``'s winners; a row-kernel winner drops its width
    SYMMETRIC_TILES = {w: t for w, t in load_tiles(os.environ["MPM_TRITON_SYMMETRIC_TILES"]).items() if t.symmetric}
if os.environ.get("MPM_TRITON_SMALL_TILES"):  # ``--sweep-set small``'s winners
    SMALL_TILES = load_tiles(os.environ["MPM_TRITON_SMALL_TILES"], per_batch=True)


def tile_config(c: int) -> TileConfig:
    """The best-partner kernel's tiling for ``c`` features (:data:`TILES`, else :data:`BASE_TILES`)."""
    cfg = TILES.get(c, BASE_TILES)
    if c < 64 and cfg.block_k > 16:
        cfg = replace(cfg, block_k=16)
    return cfg


def partner_tiles(c: int, batch: int, slots: int, device: torch.device) -> TileConfig:
    """The best-partner kernel's tiling for ``batch`` images of up to ``slots`` tokens of ``c`` features:
    the symmetric kernel's (:data:`SYMMETRIC_TILES`) when its tiles alone fill the GPU (it halves the
    products but has fewer programs), else the row kernel's (:func:`tile_config`), or, when its row
    blocks are too few for the GPU, the small batches' (:data:`SMALL_TILES`); columns are split
    over programs at small batches either way."""
    if device.type != "cuda":
        return tile_config(c)
    sym = SYMMETRIC_TILES.get(c)
    if sym is not None and symmetric_best_partner:
        blocks = -(-slots // sym.block_m)
        if batch * blocks * (blocks + 1) // 2 >= _programs_wanted(device):
            return sym
    cfg = tile_config(c)
    if small_batch_tiles and batch * -(-slots // cfg.block_m) < _programs_wanted(device):
        return small_tiles(c, batch) or cfg
    return cfg


def small_tiles(c: int, batch: int) -> TileConfig | None:
    """:data:`SMALL_TILES`' tiling for ``batch`` images of ``c`` features: the entry of the largest
    batch listed that is not above ``batch`` (None: no entry)."""
    listed = [b for b in SMALL_TILES.get(c, {}) if b <= batch]
    return SMALL_TILES[c][max(listed)] if listed else None


def norm_tiling(r: int, c: int, device: torch.device) -> tuple[int, int]:
    """(rows, features) per program and step of :func:`inv_norms` for (R, C) rows: 64 rows where that
    gives the GPU enough programs (:func:`_programs_wanted`), else fewer, down to 4 (batch 1: 1,024 rows
    were 16 programs), with up to 4,096 elements a step."""
    block_r = 64
    if device.type == "cuda":
        want = _programs_wanted(device)
        while block_r > 4 and -(-r // block_r) < want:
            block_r //= 2
    return block_r, min(max(_pow2(c), 16), max(64, 4096 // block_r))


def inv_norms(x: Tensor, tiling: tuple[int, int] | None = None) -> Tensor:
    """(R,) float32 ``1 / max(||x_r||, 1e-12)`` of every row of (R, C) ``x``; ``tiling``: (rows, features)
    per program and step (default :func:`norm_tiling`)."""
    r, c = x.shape
    out = torch.empty(r, dtype=torch.float32, device=x.device)
    if r == 0:
        return out
    block_r, block_k = tiling or norm_tiling(r, c, x.device)
    _inv_norm_kernel[(triton.cdiv(r, block_r),)](x, x.stride(0), out, r, c, BLOCK_R=block_r, BLOCK_K=block_k,
                                                 num_warps=4)
    return out


def best_partners_rows(x: Tensor, start: Tensor, n_img: Tensor, num_prefix: int, slots: int,
                       splits: int | None = None, tiles: TileConfig | None = None,
                       combine: bool = True) -> tuple[Tensor, Tensor]:
    """Each image token's most cosine-similar other token of its image.

    Args:
        x: (R, C) rows (row stride may exceed C).
        start: (B,) long first row of each image; n_img: (B,) long image tokens per image.
        num_prefix: P rows before the image tokens of each image.
        slots: S >= max(n_img), the width of the outputs.
        splits: column ranges searched by separate programs, then combined (default: enough
            programs to fill the GPU, :func:`column_splits`; 1 on the CPU).
        tiles: the kernel's tiling (default :func:`partner_tiles`; a ``symmetric`` one takes that kernel).
        combine: fold the column ranges' partial maxima here (one more kernel); False: return
            them as (K, B, S) for :func:`mutual_plan` to fold (K = 1 without a split), folded here
            first when more than :data:`FOLD_PARTS` (then K = 1).
    Returns:
        best (B, S) long local index (first on ties; 0 for a token alone), score (B, S)
        float32 cosine (``-inf`` for a token alone); past ``n_img[b]``, the slot's own index
        and ``-inf``.
    """
    b = start.shape[0]
    c = x.shape[1]
    best = torch.empty(b, slots, dtype=torch.long, device=x.device)
    score = torch.empty(b, slots, dtype=torch.float32, device=x.device)
    if b == 0 or slots == 0:
        return (best, score) if combine else (best.unsqueeze(0), score.unsqueeze(0))
    cfg = tiles or partner_tiles(c, b, slots, x.device)
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    if cfg.symmetric:
        return _best_partners_symmetric(x, start, n_img, num_prefix, slots, cfg, precision, best, score, combine)
    row_blocks = triton.cdiv(slots, cfg.block_m)
    if splits is None:
        splits = column_splits(row_blocks * b, triton.cdiv(slots, cfg.block_n), x.device, cfg.split_tiles)
    part_best, part_score = _partials(splits, best, score)
    inv = inv_norms(x) if cfg.norms else score  # (not read without norms)
    _best_partner_kernel[(row_blocks, b, splits)](
        x, x.stride(0), inv, start, n_img, part_best, part_score, slots, b * slots, num_prefix, c,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, SPLITS=splits, PRECISION=precision,
        NORMS=cfg.norms, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return _fold(part_best, part_score, best, score, combine)


#: the most partial maxima that :func:`mutual_plan` folds itself (``best_partners_rows(combine=False)``):
#: its one program per image reads them in turn, so beyond a few the combine kernel's many programs
#: are faster (H200, batch 1, per call: 4 partials cost the plan 2.3 us against the combine kernel's
#: 2.7; 8-16 partials 5-18 us against its 2-6; NOTES 48)
FOLD_PARTS = 4


def _fold(part_best: Tensor, part_score: Tensor, best: Tensor, score: Tensor, combine: bool) -> tuple[Tensor, Tensor]:
    """The partial maxima folded into (B, S) ``best`` / ``score`` (``combine``, or more than
    :data:`FOLD_PARTS` of them), else left as (K, B, S) for :func:`mutual_plan`."""
    if not combine and (part_best.dim() == 2 or part_best.shape[0] <= FOLD_PARTS):
        return (part_best, part_score) if part_best.dim() == 3 else (part_best.unsqueeze(0), part_score.unsqueeze(0))
    _combine_partials(part_best, part_score, best, score)
    return (best, score) if combine else (best.unsqueeze(0), score.unsqueeze(0))


def _partials(parts: int, best: Tensor, score: Tensor) -> tuple[Tensor, Tensor]:
    """(parts, B, S) buffers of per-range partial maxima, or ``best`` and ``score`` themselves for one range."""
    if parts == 1:
        return best, score
    shape = (parts, *best.shape)
    return (torch.empty(shape, dtype=best.dtype, device=best.device),
            torch.empty(shape, dtype=score.dtype, device=score.device))


def _combine_partials(part_best: Tensor, part_score: Tensor, best: Tensor, score: Tensor) -> None:
    """Fold (parts, B, S) partial maxima into (B, S) ``best`` / ``score``, the earlier part keeping ties;
    nothing to do when the partials are the outputs (one part)."""
    if part_best is best:
        return
    total = best.numel()
    _combine_splits_kernel[(triton.cdiv(total, 256),)](part_best, part_score, best, score, total,
                                                        SPLITS=part_best.shape[0], BLOCK=256, num_warps=4)


def _best_partners_symmetric(x: Tensor, start: Tensor, n_img: Tensor, num_prefix: int, slots: int,
                             cfg: TileConfig, precision: str, best: Tensor, score: Tensor,
                             combine: bool = True) -> tuple[Tensor, Tensor]:
    """:func:`best_partners_rows` by the symmetric kernel: a (blocks, B, S) partial per column block,
    then the column blocks combined in order (the earlier keeps ties: the first index)."""
    b = start.shape[0]
    blocks = triton.cdiv(slots, cfg.block_m)
    part_best, part_score = _partials(blocks, best, score)
    _best_partner_sym_kernel[(blocks, blocks, b)](
        x, x.stride(0), inv_norms(x), start, n_img, part_best, part_score, slots, b * slots, num_prefix,
        x.shape[1], BLOCK=cfg.block_m, BLOCK_K=cfg.block_k, PRECISION=precision, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages)
    return _fold(part_best, part_score, best, score, combine)


#: programs per streaming multiprocessor that :func:`column_splits` aims at
PROGRAMS_PER_SM = 2
_SM_COUNT: dict[int, int] = {}


def _device_index(device: torch.device) -> int:
    """CUDA ``device``'s index (the current device's for a bare ``cuda``)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def _programs_wanted(device: torch.device) -> int:
    """:data:`PROGRAMS_PER_SM` x the multiprocessors of CUDA ``device``."""
    index = _device_index(device)
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return PROGRAMS_PER_SM * _SM_COUNT[index]


def column_splits(programs: int, column_tiles: int, device: torch.device, split_tiles: int = 2) -> int:
    """How many column ranges the best-partner search is split into: 1 when ``programs`` (row
    blocks x images) already fill the GPU, else up to one range per ``split_tiles`` column tiles
    and 16 ranges (batch 1: one program per row block would leave most multiprocessors idle)."""
    if device.type != "cuda":
        return 1
    want = _programs_wanted(device)
    if programs >= want:
        return 1
    return max(1, min(-(-want // programs), column_tiles // max(split_tiles, 1), 16))


def mutual_plan(best: Tensor, score: Tensor, n_img: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mutual pairs and output slots from :func:`best_partners_rows` (one program per image).

    Args:
        best, score: (B, S) partners and cosines, or (K, B, S) partial maxima of K column ranges
            (``best_partners_rows(..., combine=False)``), folded first (the earlier keeping ties).
        n_img: (B,) image tokens per image.
    Returns:
        dest (B, S) long output slot of each token, partner (B, S) long the token it is
        averaged with (itself if unpaired), survivor (B, S) int8 (1: the token represents
        its slot), kept (B,) long image tokens kept per image. Entries past ``n_img[b]``
        unspecified.
    """
    if best.dim() == 2:
        best, score = best.unsqueeze(0), score.unsqueeze(0)
    parts, b, s = best.shape
    dest = torch.empty(b, s, dtype=best.dtype, device=best.device)
    partner = torch.empty_like(dest)
    surv = torch.empty(b, s, dtype=torch.int8, device=best.device)
    kept = torch.empty(b, dtype=torch.long, device=best.device)
    if b == 0:
        return dest, partner, surv, kept
    block = max(_pow2(s), 16)
    _mutual_kernel[(b,)](best, score, n_img, dest, partner, surv, kept, s, b * s, BLOCK=block, PARTS=parts,
                         num_warps=4 if block <= 1024 else 8)
    return dest, partner, surv, kept


#: when MPM's plan runs as one launch (:func:`plan_one_launch`) instead of three or four (pre-pass,
#: search, combine, mutual plan): ``"eager"`` (default; MPM_TRITON_ONE_LAUNCH) while the stream is not
#: being captured into a CUDA graph and the search is small (there each launch costs the host about as
#: much as the GPU work of a whole merge; replayed graphs pay no host cost per launch and keep the
#: multi-kernel plan, faster on the GPU: at batch 1 0.011-0.020 ms per call against one launch's
#: 0.018-0.060), ``"always"``, ``"never"`` (A/B timings)
ONE_LAUNCH_MODES = ("eager", "always", "never")
one_launch_plan = os.environ.get("MPM_TRITON_ONE_LAUNCH", "eager")
#: the most products of the search (images x slots^2 x features) a one-launch plan takes: beyond it the GPU
#: work outweighs the launches saved. H200, eager loops per call (launch cost included), one launch /
#: kernels (``merge_kernels.py``, results/reference/h200/eager/): batch 1, 0.090-0.105 / 0.16-0.23 ms at every
#: size; batch 32, Seg-T 0.154 / 0.394, Seg-S 0.123 / 0.145 (13e9 products), Seg-B 0.208 / 0.174 (26e9),
#: Seg-L 0.519 / 0.209 ms (84e9)
ONE_LAUNCH_MAX_PRODUCTS = 16e9
#: images a one-launch plan takes at most (its tickets, one counter per image, are allocated once)
MAX_TICKETS = 4096
_TICKETS: dict[int, Tensor] = {}


def plans_in_one_launch(x: Tensor, batch: int, slots: int) -> bool:
    """Whether :func:`mpm.merging.mpm.plan_rows` takes :func:`plan_one_launch` for ``batch`` images of up to ``slots``
    of ``x``'s rows (:data:`one_launch_plan`; ``"eager"``: outside capture, up to :data:`ONE_LAUNCH_MAX_PRODUCTS`)."""
    if one_launch_plan not in ONE_LAUNCH_MODES:
        raise ConfigError(f"environment variable MPM_TRITON_ONE_LAUNCH={one_launch_plan!r}; expected one of "
                          f"{', '.join(ONE_LAUNCH_MODES)}")
    if one_launch_plan == "never" or batch > MAX_TICKETS:
        return False
    if one_launch_plan == "always":
        return True
    small = batch * slots * slots * x.shape[1] <= ONE_LAUNCH_MAX_PRODUCTS
    return small and not (x.is_cuda and torch.cuda.is_current_stream_capturing())


def _tickets(device: torch.device) -> Tensor:
    """(MAX_TICKETS,) int32 zeros of ``device``, one per image; each launch of :func:`plan_one_launch` leaves them zero."""
    key = _device_index(device) if device.type == "cuda" else -1
    t = _TICKETS.get(key)
    if t is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():  # would live in the graph's pool
            raise ConfigError("plan_one_launch: its first call on a device must be outside CUDA graph capture "
                              "(MPM_TRITON_ONE_LAUNCH=always under graphs)")
        t = _TICKETS[key] = torch.zeros(MAX_TICKETS, dtype=torch.int32, device=device)
    return t


def one_launch_tiles(c: int, batch: int, slots: int, device: torch.device) -> tuple[TileConfig, int]:
    """The tiling and column ranges of :func:`plan_one_launch`: the row kernel's (:func:`partner_tiles`; the
    symmetric kernel's partials come from several programs per row) with norms computed in place and at most
    :data:`FOLD_PARTS` ranges (the image's last program folds them)."""
    cfg = partner_tiles(c, batch, slots, device)
    if cfg.symmetric:
        cfg = tile_config(c)
    cfg = replace(cfg, norms=False, symmetric=False)
    splits = column_splits(batch * triton.cdiv(slots, cfg.block_m), triton.cdiv(slots, cfg.block_n), device,
                           cfg.split_tiles)
    return cfg, min(splits, FOLD_PARTS)


def plan_one_launch(x: Tensor, start: Tensor, n_img: Tensor | None, num_prefix: int, slots: int,
                    tiles: tuple[TileConfig, int] | None = None, return_partials: bool = False):
    """:func:`mutual_plan` of :func:`best_partners_rows` in one launch: the same decision (cosines in float32, first
    index on ties, the earlier column range keeping ties), rounding aside (norms are summed in the search's steps).

    Args:
        x: (R, C) rows; start: (B,) first row of each image; n_img: (B,) image tokens per image, or None
            (every image has ``slots``); num_prefix: P; slots: S >= max(n_img).
        tiles: (tiling, column ranges), default :func:`one_launch_tiles`.
        return_partials: also return the (K, B, S) partial partners and cosines (checks).
    Returns:
        dest, partner, survivor, kept as :func:`mutual_plan` (+ the partials).

    The tickets are one buffer per device: one plan at a time per device (the runner's one stream).
    """
    b, c = start.shape[0], x.shape[1]
    dev = x.device
    dest = torch.empty(b, slots, dtype=torch.long, device=dev)
    partner = torch.empty_like(dest)
    surv = torch.empty(b, slots, dtype=torch.int8, device=dev)
    kept = torch.empty(b, dtype=torch.long, device=dev)
    cfg, splits = tiles or one_launch_tiles(c, b, slots, dev)
    part_best = torch.empty(splits, b, slots, dtype=torch.long, device=dev)
    part_score = torch.empty(splits, b, slots, dtype=torch.float32, device=dev)
    if b and slots:
        if b > MAX_TICKETS:
            raise ValueError(f"plan_one_launch takes at most {MAX_TICKETS} images, got {b}")
        block = max(_pow2(slots), 16)
        _plan_kernel[(triton.cdiv(slots, cfg.block_m), b, splits)](
            x, x.stride(0), start, n_img if n_img is not None else start, part_best, part_score, dest, partner, surv,
            kept, _tickets(dev), slots, num_prefix, c, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
            SPLITS=splits, PRECISION="ieee" if x.dtype == torch.float32 else "tf32", BLOCK_S=block,
            UNIFORM=n_img is None, num_warps=max(cfg.num_warps, 4 if block <= 1024 else 8), num_stages=cfg.num_stages)
    out = (dest, partner, surv, kept)
    return out + (part_best, part_score) if return_partials else out


def gather_sources(dest: Tensor, partner: Tensor | None, surv: Tensor, n_img: Tensor | None, in_start: Tensor,
                   kept: Tensor, num_prefix: int, packed: bool, slots_out: int, rows_out: int,
                   index: Tensor | None = None, clamp_index: bool = False):
    """The output layout of a merge and the input rows of every output row.

    Args:
        dest, partner, surv: (B, S) from :func:`mutual_plan` (partner None: one source per row).
        n_img, in_start: (B,) image tokens (None: S each) and first row of each image in the input.
        kept: (B,) image tokens kept per image.
        packed: output images back to back (then ``rows_out - total`` pad rows, a
            sequence of their own in ``cu_seqlens``), else padded to ``slots_out`` rows each.
        rows_out: R_out, rows of the output buffer.
        index: (B, N) long map before the merge, composed here with ``dest``
            (:func:`mpm.merging.maps.compose_rows_index`; with ``clamp_index`` kept below each output length),
            or None.
    Returns:
        src1 (R_out,) long, src2 (R_out,) long or None, out_start (B,) long,
        out_length (B,) long (prefix included), cu_seqlens (B + 2,) int32 or None, the composed
        (B, N) map or None.
    """
    b, s = dest.shape
    dev = dest.device
    src1 = torch.empty(rows_out, dtype=torch.long, device=dev)
    src2 = torch.empty(rows_out, dtype=torch.long, device=dev) if partner is not None else None
    out_start = torch.empty(b, dtype=torch.long, device=dev)
    out_length = torch.empty(b, dtype=torch.long, device=dev)
    cu = torch.empty(b + 2, dtype=torch.int32, device=dev) if packed else None
    composed = None
    if index is not None:
        index = index.contiguous()
        composed = torch.empty(index.shape, dtype=dest.dtype, device=dev)
    if b == 0:
        return src1, src2, out_start, out_length, cu, composed
    block = max(_pow2(s), 16)
    dest = dest.contiguous()
    _sources_kernel[(b,)](dest, partner if partner is not None else dest, surv, n_img if n_img is not None else kept,
                          in_start, kept, s, src1, src2 if src2 is not None else src1, out_start, out_length,
                          cu if cu is not None else out_start, b, num_prefix, slots_out, rows_out,
                          index if index is not None else dest, composed if composed is not None else dest,
                          index.shape[1] if index is not None else 0, PACKED=packed, HAS_PARTNER=partner is not None,
                          BLOCK=block, BLOCK_B=max(_pow2(b), 16), BLOCK_P=max(_pow2(num_prefix), 16), PAD_BLOCK=256,
                          UNIFORM=n_img is None, COMPOSE=index is not None, CLAMP=clamp_index,
                          num_warps=4 if block <= 1024 else 8)
    return src1, src2, out_start, out_length, cu, composed


def gather_mean(x: Tensor, src1: Tensor, src2: Tensor | None) -> Tensor:
    """(R_out, C): ``(x[src1] + x[src2]) * 0.5`` row by row, or ``x[src1]``."""
    r, c = src1.shape[0], x.shape[1]
    out = torch.empty(r, c, dtype=x.dtype, device=x.device)
    if r == 0:
        return out
    block_c = min(max(_pow2(c), 16), 256)
    grid = (triton.cdiv(r, 16), triton.cdiv(c, block_c))
    _gather_mean_kernel[grid](x, x.stride(0), src1, src2 if src2 is not None else src1, out, out.stride(0), r, c,
                              HAS2=src2 is not None, BLOCK_R=16, BLOCK_C=block_c, num_warps=4)
    return out


def unmerge_rows(x: Tensor, start: Tensor, index: Tensor, num_prefix: int, clamp: bool) -> tuple[Tensor, Tensor]:
    """Image tokens (B, N, C) ``x[start[b] + P + index[b, i]]`` and prefix tokens (B, P, C) ``x[start[b] + p]``
    in one launch; ``clamp``: rows kept below R (:func:`mpm.merging.maps.unmerge_rows`)."""
    b, n = index.shape
    r, c = x.shape
    tokens = torch.empty(b, n, c, dtype=x.dtype, device=x.device)
    prefix = torch.empty(b, num_prefix, c, dtype=x.dtype, device=x.device)
    rows = b * (n + num_prefix)
    if rows == 0 or c == 0:
        return tokens, prefix
    block_c = min(max(_pow2(c), 16), 256)
    grid = (triton.cdiv(rows, 16), triton.cdiv(c, block_c))
    _unmerge_kernel[grid](x, x.stride(0), start, index.contiguous(), tokens, prefix, b, n, c, r - 1, P=num_prefix,
                          CLAMP=clamp, BLOCK_R=16, BLOCK_C=block_c, num_warps=4)
    return tokens, prefix
