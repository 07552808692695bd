"""Merge maps: how tokens moved, how maps compose, and how to undo them.

A *merge map* ``index`` of shape (B, N_in) sends input token ``i`` of image ``b``
to output slot ``index[b, i]`` in ``[0, N_out)``. Maps of successive merges
compose (``r* = r2 o r1``) and a single gather with the composed map restores
the full token grid (the *unmerge*).

Images of one batch may keep different numbers of tokens. Tokens are then held
in a *padded layout*: ``x`` of shape (B, M, C) with ``lengths`` (B,) giving how
many leading slots of each image are real; slots ``>= lengths[b]`` are padding
and carry no meaning. ``lengths=None`` means every slot is real.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mpm.merging import triton_kernels as tk


class TokenMerge(NamedTuple):
    """The result of one merge step.

    Attributes:
        x: (B, M, C) merged tokens in the method's order (MPM keeps raster order;
            ToMe and ALGM reorder); ``index`` is exact either way.
        index: (B, N) long, input token -> output slot. Entries of padded input
            slots are unspecified (but valid indices).
        lengths: (B,) long, real output tokens per image, or ``None`` when all
            images keep ``M`` tokens.
    """

    x: Tensor
    index: Tensor
    lengths: Tensor | None


def identity_map(batch: int, num_tokens: int, device: torch.device | str | None = None) -> Tensor:
    """The map of no merge: (B, N) with ``index[b, i] = i``."""
    return torch.arange(num_tokens, device=device).expand(batch, num_tokens).contiguous()


def compose(first: Tensor, second: Tensor) -> Tensor:
    """Compose two merge maps: ``second o first``.

    Args:
        first: (B, N0) map into ``[0, N1)``.
        second: (B, N1) map into ``[0, N2)``.
    Returns:
        (B, N0) map into ``[0, N2)``.
    """
    return second.gather(1, first)


def unmerge(x: Tensor, index: Tensor) -> Tensor:
    """Restore the full token grid with one gather.

    Args:
        x: (B, M, C) merged tokens.
        index: (B, N) composed map into ``[0, M)``.
    Returns:
        (B, N, C), token ``i`` being the merged token it went into.
    """
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def valid_mask(lengths: Tensor | None, num_slots: int, batch: int, device=None) -> Tensor:
    """(B, M) bool, True on the real slots of a padded layout."""
    if lengths is None:
        return torch.ones(batch, num_slots, dtype=torch.bool, device=device)
    return torch.arange(num_slots, device=lengths.device) < lengths.unsqueeze(1)


def tokens_per_image(index: Tensor) -> Tensor:
    """(B,) number of output slots a map from a full (unpadded) grid reaches."""
    return index.max(dim=1).values + 1


def merge_sizes(size: Tensor, index: Tensor, num_out: int) -> Tensor:
    """Sizes after a merge: each output slot sums the sizes that went into it.

    Args:
        size: (B, N) float, original patches per input token.
        index: (B, N) map into ``[0, num_out)``.
    Returns:
        (B, num_out) float.
    """
    out = size.new_zeros(size.shape[0], num_out)
    return out.scatter_add_(1, index, size)


# --------------------------------------------------------------------------- #
# row buffers: the fast runner's layout (mpm.models.encoder.RowState)
# --------------------------------------------------------------------------- #


def rows_to_padded(x: Tensor, first: Tensor, slots: int) -> Tensor:
    """(B, slots, C) view-like copy of rows ``first[b] + j`` of a (R, C) buffer (indices past R clamped)."""
    rows = (first[:, None] + torch.arange(slots, device=x.device)).clamp_(max=max(x.shape[0] - 1, 0))
    return x.index_select(0, rows.flatten()).view(first.shape[0], slots, x.shape[-1])


def round_up(n: int, step: int) -> int:
    """Smallest multiple of ``step`` >= n."""
    return -(-int(n) // step) * step


class RowSources(NamedTuple):
    """Where a merge's output rows come from, and the output layout (device tensors).

    Attributes:
        src1, src2: (R_out,) long input row(s) of each output row (``src2`` None: one source).
        start: (B,) long first output row of each image; length: (B,) long rows per image.
        cu_seqlens: (B + 2,) int32 (packed output: images, then the pad rows), or None.
        index: (B, N) long the map after the merge (:func:`compose_rows_index`) when asked, else None.
    """

    src1: Tensor
    src2: Tensor | None
    start: Tensor
    length: Tensor
    cu_seqlens: Tensor | None
    index: Tensor | None = None


def row_sources(dest: Tensor, partner: Tensor | None, survivor: Tensor, n_img: Tensor | None, in_start: Tensor,
                kept: Tensor, num_prefix: int, packed: bool, slots_out: int, rows_out: int,
                index: Tensor | None = None, clamp_index: bool = False) -> RowSources:
    """The output rows of a merge planned per image (PyTorch; Triton twin on CUDA).

    Args:
        dest, partner, survivor: (B, S) a :class:`~mpm.merging.mpm.RowPlan`'s fields.
        n_img: (B,) real image tokens per input image, or None (all S).
        in_start: (B,) first input row of each image.
        kept: (B,) image tokens kept per image.
        packed: output images back to back, pad rows after the last (their own
            sequence in ``cu_seqlens``); else ``slots_out`` rows per image.
        rows_out: R_out >= the rows the images need.
        index: (B, N) the map before the merge, to compose with ``dest`` (:func:`compose_rows_index`, clamped to
            the output lengths with ``clamp_index``), or None.
    Returns:
        :class:`RowSources` (with the composed map when ``index`` is given: on CUDA in the same launch).
        Prefix rows copy their input rows; output token
        ``dest[b, j]`` of a survivor ``j`` averages input tokens ``j`` and ``partner[b, j]``;
        pad rows copy a real row (finite values). Counts over the capacity are cut
        (lengths clamped, nothing written out of bounds): the runner's speculative
        capacities rely on it, and run such a forward again.
    """
    if tk.available(dest):
        return RowSources(*tk.gather_sources(dest, partner, survivor.to(torch.int8), n_img, in_start, kept,
                                             num_prefix, packed, slots_out, rows_out, index, clamp_index))
    b, s = dest.shape
    dev = dest.device
    full = kept + num_prefix
    if packed:  # back to back; rows past rows_out - 1 are cut (a count over a speculative capacity)
        last = rows_out - 1
        start = (full.cumsum(0) - full).clamp(max=last)
        length = torch.minimum(full, last - start).clamp(min=0)
        total = full.sum().clamp(max=last).reshape(1)
        cu = torch.cat([start, total, total.new_full((1,), rows_out)]).to(torch.int32)
        fill = torch.zeros(rows_out + 1, dtype=torch.long, device=dev)
    else:
        start = torch.arange(b, device=dev) * slots_out
        length = full.clamp(max=slots_out)
        cu = None
        fill = torch.cat([in_start.repeat_interleave(slots_out, output_size=b * slots_out), in_start.new_zeros(1)])
    j = torch.arange(s, device=dev)
    keep = survivor.bool() & (num_prefix + dest < length[:, None])
    if n_img is not None:
        keep = keep & (j < n_img[:, None])
    target = torch.where(keep, start[:, None] + num_prefix + dest, rows_out).flatten()
    p = torch.arange(num_prefix, device=dev)
    p_target = torch.where(p < length[:, None], start[:, None] + p, rows_out).flatten()
    p_source = (in_start[:, None] + p).flatten()
    base = in_start[:, None] + num_prefix

    def sources(local: Tensor) -> Tensor:
        out = fill.clone()
        out.scatter_(0, target, (base + local).flatten())
        return out.scatter_(0, p_target, p_source)[:rows_out]

    src1 = sources(j.expand(b, s))
    src2 = sources(partner) if partner is not None else None
    composed = None if index is None else compose_rows_index(dest, index, length if clamp_index else None, num_prefix)
    return RowSources(src1, src2, start, length, cu, composed)


def gather_mean(x: Tensor, src1: Tensor, src2: Tensor | None) -> Tensor:
    """(R_out, C): ``(x[src1] + x[src2]) * 0.5`` (MPM's plain mean, as :func:`mpm.merging.mpm.merge_pairs`)
    or ``x[src1]``; one Triton kernel on CUDA."""
    if tk.available(x) and x.stride(-1) == 1:
        return tk.gather_mean(x, src1, src2)
    out = x.index_select(0, src1)
    return out if src2 is None else (out + x.index_select(0, src2)) * 0.5


def compose_rows_index(dest: Tensor, index: Tensor, length: Tensor | None = None, num_prefix: int = 0) -> Tensor:
    """The map after a merge planned per image: (B, N) ``dest[b, index[b, i]]`` (:func:`compose`), and with
    ``length`` (B,) (output rows per image, prefix included) kept below each image's kept tokens, as a
    speculative capacity that cut some needs (on CUDA :func:`row_sources` composes in its own launch)."""
    out = compose(index, dest)
    if length is not None:
        out = torch.minimum(out, (length - num_prefix - 1).clamp(min=0)[:, None])
    return out


def unmerge_rows(x: Tensor, start: Tensor, index: Tensor, num_prefix: int, clamp: bool = False) -> tuple[Tensor, Tensor]:
    """The full token grid of every image of a row buffer, and its prefix tokens.

    Args:
        x: (R, C) rows, image ``b``'s first at ``start[b]`` (B,), its P prefix rows first.
        index: (B, N) map of each grid token into its image's tokens.
        clamp: keep the rows looked up below R (a speculative capacity; such a forward is discarded).
    Returns:
        tokens (B, N, C) ``x[start[b] + P + index[b, i]]`` and prefix (B, P, C); one Triton kernel on CUDA.
    """
    if tk.available(x) and x.stride(-1) == 1:
        return tk.unmerge_rows(x, start, index, num_prefix, clamp)
    b, c = index.shape[0], x.shape[-1]
    rows = start[:, None] + num_prefix + index
    if clamp:
        rows = rows.clamp(max=x.shape[0] - 1)
    tokens = x.index_select(0, rows.flatten()).view(b, -1, c)
    prefix_rows = start[:, None] + torch.arange(num_prefix, device=x.device)
    return tokens, x.index_select(0, prefix_rows.flatten()).view(b, num_prefix, c)

