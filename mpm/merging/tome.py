"""ToMe: Token Merging by bipartite soft matching (Bolya et al., ICLR 2023).

At one merge site (inside a block, between attention and MLP) the image tokens
are split alternately into a set A (even positions) and a set B (odd
positions). Every A token picks its most cosine-similar B token (similarity of
the block's attention keys, averaged over heads); the ``r`` most similar of
these edges are merged: the A token is folded into its B token by a
size-weighted mean (``sum(size * x) / sum(size)``). Exactly ``r`` tokens go per
image (at most half of them).

Token order is ToMe's: the unmerged A tokens (in their original relative
order, as ToMe does when the model has a class token) come first, then every B
token in order. The merge map ``index`` (B, N_in) says exactly where each
input token went, so one gather with the composed map restores the grid
(:func:`mpm.merging.maps.unmerge`).

Differences from the reference code (facebookresearch/ToMe, ``tome/merge.py``):

* The runner hands over the image tokens only (the class token is split off),
  so A = even *image* positions. In the reference code the class token sits at
  position 0 of A, which puts the odd image positions in A. Same algorithm,
  the alternation is shifted by one.
* Ties between equally similar edges are broken by position (stable sort), the
  reference's ``argsort`` leaves them unspecified.
* Padded layouts (``lengths`` not None, e.g. after a method whose token count
  differs per image) are supported: each image removes ``min(r, L_b // 2)`` of
  its ``L_b`` real tokens, exactly as if it ran alone; the output is padded
  again unless every image ends with the same count.

>>> m = bipartite_soft_matching(keys, r=8)           # keys: (B, N, D)
>>> x, size = merge_wavg(m.merge, x, size)          # (B, N - 8, C), (B, N - 8)
>>> full = m.unmerge(x)                             # (B, N, C)
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mpm.merging.base import MergeContext, MergeMethod, register
from mpm.merging.maps import identity_map, TokenMerge, valid_mask

MergeFn = Callable[..., Tensor]
UnmergeFn = Callable[[Tensor], Tensor]


class Matching(NamedTuple):
    """A merge decided on a metric, to apply to any per-token tensor.

    Attributes:
        merge: ``merge(x, mode="sum")``: (B, N, C) -> (B, M, C), reducing the
            tokens that share an output slot with ``mode`` (``"sum"``,
            ``"mean"``, ``"amax"``, ... as :meth:`torch.Tensor.scatter_reduce`).
            Padded input slots are ignored; padded output slots are 0.
        unmerge: ``unmerge(x)``: (B, M, C) -> (B, N, C), each input token
            receiving the output token it went into (one gather).
        index: (B, N) long merge map, input token -> output slot in ``[0, M)``
            (padded input slots: unspecified but valid).
        lengths: (B,) long real output tokens per image, or None when every
            image keeps ``M`` tokens.
    """

    merge: MergeFn
    unmerge: UnmergeFn
    index: Tensor
    lengths: Tensor | None


# --------------------------------------------------------------------------- #
# generic: a matching from a routing of the input tokens
# --------------------------------------------------------------------------- #


def matching_from_route(route: Tensor, out_lengths: Tensor, uniform_length: int | None = None) -> Matching:
    """Build merge/unmerge from where each input token goes.

    Args:
        route: (B, N) long, output slot of each input token in
            ``[0, out_lengths[b])``; padded input tokens carry ``M`` (a dump
            slot past the output, ``M = out_lengths.max()``).
        out_lengths: (B,) long, real output tokens per image.
        uniform_length: when the caller knows every image keeps this many
            tokens (no padding), the host-side value: avoids device syncs.
    Returns:
        :class:`Matching` with output padded to ``M`` tokens.
    """
    b, n = route.shape
    if uniform_length is not None:
        m, lengths = uniform_length, None
    else:
        m = int(out_lengths.max()) if b > 0 else 0
        lengths = None if bool((out_lengths == m).all()) else out_lengths
    index = route.clamp(max=max(m - 1, 0))

    def merge(x: Tensor, mode: str = "sum") -> Tensor:
        """(B, N, C) -> (B, M, C); tokens of one output slot reduced with ``mode``."""
        c = x.shape[-1]
        dst = route.unsqueeze(-1).expand(b, n, c)
        out = x.new_zeros(b, m + 1, c)
        if mode == "sum":
            out.scatter_add_(1, dst, x)
        else:
            out = out.scatter_reduce(1, dst, x, reduce=mode, include_self=False)
        return out[:, :m]

    def unmerge(x: Tensor) -> Tensor:
        """(B, M, C) -> (B, N, C): one gather with the map."""
        return x.gather(1, index.unsqueeze(-1).expand(b, n, x.shape[-1]))

    return Matching(merge, unmerge, index, lengths)


def identity_matching(batch: int, num_tokens: int, lengths: Tensor | None = None,
                      device: torch.device | str | None = None) -> Matching:
    """The matching of no merge: every token keeps its slot (padding stays padding)."""
    route = torch.arange(num_tokens, device=device).expand(batch, num_tokens)
    if lengths is None:
        return matching_from_route(route, torch.full((batch,), num_tokens, dtype=torch.long, device=device))
    out_lengths = lengths.to(torch.long)
    m = int(out_lengths.max()) if batch > 0 else 0
    route = torch.where(route < out_lengths.unsqueeze(1), route, m)
    return matching_from_route(route, out_lengths)


def merge_wavg(merge: MergeFn, x: Tensor, size: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Size-weighted mean of the tokens merged together (ToMe's ``merge_wavg``).

    Args:
        merge: a :attr:`Matching.merge`.
        x: (B, N, C) tokens.
        size: (B, N) original patches per token (0 on padding), default all 1.
    Returns:
        ``(x, size)``: (B, M, C) ``sum(size * x) / sum(size)`` per output slot
        (0 on padded output slots) and (B, M) summed sizes.
    """
    if size is None:
        size = x.new_ones(x.shape[:2])
    s = size.to(x.dtype).unsqueeze(-1)
    x_sum = merge(x * s, "sum")
    s_sum = merge(s, "sum")
    out = x_sum / torch.where(s_sum > 0, s_sum, torch.ones_like(s_sum))
    return out, s_sum.squeeze(-1)


# --------------------------------------------------------------------------- #
# bipartite soft matching
# --------------------------------------------------------------------------- #


def bipartite_scores(metric: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Each A token's most similar B token (A = even, B = odd positions).

    Args:
        metric: (B, N, D) features to compare (cosine similarity).
        lengths: (B,) real tokens per image (padded layout) or None.
    Returns:
        node_max: (B, ceil(N/2)) best cosine similarity of each A token
            (``-inf`` for padded A tokens and when an image has no real B).
        node_idx: (B, ceil(N/2)) long, its B partner (index into B).
    """
    b, n, _ = metric.shape
    m = F.normalize(metric, dim=-1)
    a, bb = m[:, ::2], m[:, 1::2]
    na, nb = a.shape[1], bb.shape[1]
    if nb == 0:
        return metric.new_full((b, na), float("-inf")), torch.zeros(b, na, dtype=torch.long, device=metric.device)
    scores = a @ bb.transpose(1, 2)  # (B, Na, Nb)
    if lengths is not None:
        valid = valid_mask(lengths, n, b, metric.device)
        scores = scores.masked_fill(~valid[:, 1::2].unsqueeze(1), float("-inf"))
    node_max, node_idx = scores.max(dim=-1)
    if lengths is not None:
        node_max = node_max.masked_fill(~valid[:, ::2], float("-inf"))
    return node_max, node_idx


def clamp_r(r: int | Tensor, batch: int, num_tokens: int, lengths: Tensor | None = None,
            policy: str = "exact", device: torch.device | str | None = None) -> Tensor:
    """Tokens to remove per image: ``r`` clamped to ``[0, L_b // 2]`` (ToMe's "at most half").

    Args:
        r: int or (B,) requested removals.
        batch: B.
        num_tokens: N (slots of the layout).
        lengths: (B,) real tokens per image, or None (all N).
        policy: ``"exact"`` (per image) or ``"batch-min"`` (every image
            removes as many as the image removing the fewest).
    Returns:
        (B,) long.
    """
    if policy not in ("exact", "batch-min"):
        raise ValueError(f"unknown batch policy {policy!r}; expected 'exact' or 'batch-min'")
    if lengths is not None:
        device = lengths.device
        half = lengths.to(torch.long) // 2
    else:
        half = torch.full((batch,), num_tokens // 2, dtype=torch.long, device=device)
    r_t = torch.as_tensor(r, dtype=torch.long, device=device).expand(batch)
    out = torch.minimum(r_t.clamp(min=0), half)
    if policy == "batch-min" and batch > 0:
        out = out.min().expand(batch)
    return out.contiguous()


def bipartite_matching(node_max: Tensor, node_idx: Tensor, r: int | Tensor, num_tokens: int,
                       lengths: Tensor | None = None, uniform_length: int | None = None) -> Matching:
    """Merge, per image, the ``r`` A tokens with the most similar B partner.

    Args:
        node_max, node_idx: (B, ceil(N/2)) from :func:`bipartite_scores`.
        r: int or (B,) long tokens to remove per image (clamped to ``L_b // 2``).
        num_tokens: N.
        lengths: (B,) real input tokens per image (padded layout) or None.
    Returns:
        :class:`Matching`; output per image: unmerged A (original order), then B.
    """
    b, na = node_max.shape
    n = num_tokens
    nb = n // 2
    device = node_max.device
    if nb == 0:
        return identity_matching(b, n, lengths, device)
    full = torch.full((b,), n, dtype=torch.long, device=device)
    lens = full if lengths is None else lengths.to(torch.long)
    rb = clamp_r(r, b, n, lens)
    pos_a = torch.arange(na, device=device) * 2
    pos_b = torch.arange(nb, device=device) * 2 + 1
    valid_a = pos_a < lens.unsqueeze(1)  # (B, Na)
    valid_b = pos_b < lens.unsqueeze(1)  # (B, Nb)
    # rank A tokens by their best edge (stable: ties keep position order)
    order = torch.sort(node_max, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(na, device=device).expand(b, na))
    merged_a = (rank < rb.unsqueeze(1)) & valid_a
    unm_a = valid_a & ~merged_a
    n_unm = unm_a.sum(1, keepdim=True)  # (B, 1)
    b_slot = n_unm + torch.arange(nb, device=device)  # (B, Nb): B tokens after the unmerged A
    a_slot = torch.where(merged_a, b_slot.gather(1, node_idx), unm_a.cumsum(1) - 1)
    out_lengths = lens - rb
    m = uniform_length if uniform_length is not None else int(out_lengths.max())
    route = torch.empty(b, n, dtype=torch.long, device=device)
    route[:, ::2] = torch.where(valid_a, a_slot, m)
    route[:, 1::2] = torch.where(valid_b, b_slot, m)
    return matching_from_route(route, out_lengths, uniform_length)


def bipartite_soft_matching(metric: Tensor, r: int | Tensor, lengths: Tensor | None = None,
                            policy: str = "exact") -> Matching:
    """ToMe's bipartite soft matching of (B, N, D) ``metric``, removing ``r`` tokens per image.

    Args:
        metric: (B, N, D), e.g. attention keys averaged over heads.
        r: int or (B,) tokens to remove; clamped to half the (real) tokens.
        lengths: (B,) real tokens per image (padded layout) or None.
        policy: ``"exact"`` or ``"batch-min"`` (see :func:`clamp_r`).
    Returns:
        :class:`Matching` (``merge``, ``unmerge``, ``index``, ``lengths``).
    """
    if metric.dim() != 3:
        raise ValueError(f"bipartite_soft_matching expects (B, N, D) metric, got shape {tuple(metric.shape)}")
    n = metric.shape[1]
    rb = clamp_r(r, metric.shape[0], n, lengths, policy, metric.device)
    node_max, node_idx = bipartite_scores(metric, lengths)
    # dense input and one r for all: every image keeps n - r tokens, known without a device sync
    uniform = n - min(max(r, 0), n // 2) if lengths is None and isinstance(r, int) else None
    return bipartite_matching(node_max, node_idx, rb, n, lengths, uniform)


def tome_merge(x: Tensor, size: Tensor | None, metric: Tensor | None, r: int | Tensor,
               lengths: Tensor | None = None, policy: str = "exact", return_size: bool = False):
    """One ToMe step on image tokens.

    Args:
        x: (B, N, C) image tokens (class token excluded by the caller).
        size: (B, N) patches per token (0 on padding) or None (all 1).
        metric: (B, N, D) features to match by (ToMe: keys mean over heads),
            or None to use ``x``.
        r: int or (B,) tokens to remove per image (clamped to half).
        lengths: (B,) real tokens per image (padded layout) or None.
        policy: ``"exact"`` or ``"batch-min"``.
        return_size: also return the (B, M) merged sizes.
    Returns:
        :class:`~mpm.merging.maps.TokenMerge` ``(x, index, lengths)``: merged
        (B, M, C) size-weighted means, map (B, N), lengths (B,) or None; and
        with ``return_size`` the tuple ``(TokenMerge, size)``.
    """
    if lengths is None and isinstance(r, int) and not isinstance(r, bool):
        out, new_size = _tome_dense(x, size, x if metric is None else metric, r)
        return (out, new_size) if return_size else out
    m = bipartite_soft_matching(x if metric is None else metric, r, lengths, policy)
    merged, new_size = merge_wavg(m.merge, x, size)
    out = TokenMerge(merged, m.index, m.lengths)
    return (out, new_size) if return_size else out


def _tome_dense(x: Tensor, size: Tensor | None, metric: Tensor, r: int) -> tuple[TokenMerge, Tensor]:
    """:func:`tome_merge` on a dense batch with one ``r``: the same result in a third of the
    operations and no host sync (the forward is launch-bound at ToMe's per-layer merges).

    Args:
        x: (B, N, C); size: (B, N) or None; metric: (B, N, D).
    Returns:
        ``(TokenMerge(x (B, N - r, C), index (B, N), None), size (B, N - r))``.
    """
    b, n, c = x.shape
    na, nb = (n + 1) // 2, n // 2
    r = min(max(r, 0), nb)
    if size is None:
        size = x.new_ones(b, n)
    if nb == 0:  # a single token: nothing to pair
        return TokenMerge(x, identity_map(b, n, x.device), None), size
    node_max, node_idx = bipartite_scores(metric)
    order = torch.sort(node_max, dim=1, descending=True, stable=True).indices  # ties keep position order
    merged = torch.zeros(b, na, dtype=torch.bool, device=x.device).scatter_(1, order[:, :r], True)
    n_unm = na - r
    index = torch.empty(b, n, dtype=torch.long, device=x.device)
    index[:, ::2] = torch.where(merged, node_idx + n_unm, (~merged).cumsum(1) - 1)  # unmerged A keep their order
    index[:, 1::2] = torch.arange(n_unm, n_unm + nb, device=x.device)  # then every B token
    m = n - r
    s = size.to(x.dtype)
    x_sum = x.new_zeros(b, m, c).scatter_add_(1, index.unsqueeze(-1).expand(b, n, c), x * s.unsqueeze(-1))
    s_sum = s.new_zeros(b, m).scatter_add_(1, index, s)
    return TokenMerge(x_sum / s_sum.unsqueeze(-1), index, None), s_sum


# --------------------------------------------------------------------------- #
# the merge method
# --------------------------------------------------------------------------- #


@register
class ToMe(MergeMethod):
    """ToMe between attention and MLP of each scheduled block, e.g. ``ToMe(range(12), r=8)``.

    Args:
        schedule: blocks (0-based) where ToMe runs (ToMe itself: every block).
        batch_policy: ``"exact"`` or ``"batch-min"``; both give the same result
            on dense input (every image removes ``r``); on a padded input the
            first keeps per-image counts, the second removes the batch minimum.
        r: tokens removed per scheduled block: an int, or one int per scheduled
            block (in the order of ``schedule``). Clamped to half the tokens.
        prop_attn: proportional attention (the runner adds ``log(size)`` to the
            attention logits; not available with FlashAttention backends).
    """

    name = "tome"
    site = "after_attention"
    #: on dense input every image keeps ``N - r`` tokens, known on the host: no sync, so a
    #: CUDA graph may hold the merge (:class:`mpm.models.segmenter.SegmenterRunner`)
    sync_free_when_dense = True

    def __init__(self, schedule: Sequence[int] = (), batch_policy: str = "exact", r: int | Sequence[int] = 8,
                 prop_attn: bool = False) -> None:
        super().__init__(schedule, batch_policy)
        given = [int(b) for b in schedule]
        checked = self._checked(given, r=r, prop_attn=prop_attn)  # mpm.methods.ToMeSpec
        self.r: int | list[int] = checked["r"]
        rs = self.r if isinstance(self.r, list) else [self.r] * len(given)
        self.r_per_block: dict[int, int] = dict(zip(given, rs))
        self.proportional_attention = checked["prop_attn"]

    def merge(self, x: Tensor, ctx: MergeContext) -> TokenMerge:
        r = self.r_per_block.get(ctx.block, 0)
        return tome_merge(x, ctx.size, ctx.metric, r, ctx.lengths, self.batch_policy)

    def params(self) -> dict:
        return {"r": self.r, "prop_attn": self.proportional_attention}
