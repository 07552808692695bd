"""MPM: Mutual Pair Merging.

At one merge site: L2-normalise the image tokens, take each token's most
similar other token ``b(i) = argmax_{j != i} <x_i, x_j>``; only *mutual* pairs
(``b(b(i)) = i``) merge. The token of smaller index represents the pair and
becomes the plain mean of the two; unpaired tokens pass unchanged; survivors
keep raster order. At most half of the tokens go, how many depends on the image.

No learned parameter and no knob: the schedule (where MPM runs) is the only
trade-off. Batches whose images keep different token counts come out in the
padded layout of :mod:`mpm.merging.maps` (exact), or, with
``policy="batch-min"``, every image merges only as many pairs as the image with
the fewest (the ALGM-style approximation, dense output).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mpm.merging.base import MergeContext, MergeMethod, register
from mpm.merging import triton_kernels as tk
from mpm.merging.maps import TokenMerge, rows_to_padded, valid_mask

BatchPolicy = Literal["exact", "batch-min"]


def best_partners(x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Each token's most cosine-similar other token.

    Args:
        x: (B, N, C) tokens.
        lengths: (B,) real tokens per image (padded layout) or None.
    Returns:
        best: (B, N) long, ``argmax_{j != i} S_ij`` over real tokens j (first
            index on ties).
        score: (B, N) the similarity of that pair (``-inf`` when a token has no
            other real token).
    """
    xn = F.normalize(x, dim=-1)
    sim = xn @ xn.transpose(1, 2)
    n = x.shape[1]
    sim.diagonal(dim1=1, dim2=2).fill_(float("-inf"))  # j != i
    if lengths is not None:
        invalid_key = ~valid_mask(lengths, n, x.shape[0])
        sim = sim.masked_fill(invalid_key.unsqueeze(1), float("-inf"))
    score, best = sim.max(dim=-1)
    return best, score


def partner_cosines(x: Tensor, best: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Each token's best cosine and its chosen partner's, in float64: the check of fast paths
    whose rounding may pick another partner at a near-tie (the choice must attain the maximum).

    Args:
        x: (B, N, C) tokens; best: (B, N) chosen partners; lengths: (B,) real tokens or None.
    Returns:
        top (B, N) ``max_{j != i} S_ij`` over real j (``-inf`` for a token alone), chosen (B, N)
        ``S_i,best(i)``, and valid (B, N) bool, the real tokens.
    """
    b, n, _ = x.shape
    xn = F.normalize(x.double(), dim=-1)
    sim = xn @ xn.transpose(1, 2)
    valid = valid_mask(lengths, n, b, x.device)
    sim = sim.masked_fill(~valid.unsqueeze(1), float("-inf"))
    sim.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    chosen = sim.gather(2, best.clamp(0, n - 1).unsqueeze(-1)).squeeze(-1)
    return sim.max(-1).values, chosen, valid


def mutual_pairs(best: Tensor, score: Tensor, lengths: Tensor | None = None) -> Tensor:
    """(B, N) bool: token i and ``best[i]`` choose each other (i != best[i])."""
    idx = torch.arange(best.shape[1], device=best.device)
    mutual = (best.gather(1, best) == idx) & (best != idx) & torch.isfinite(score)
    if lengths is not None:
        mutual &= valid_mask(lengths, best.shape[1], best.shape[0])
    return mutual


def keep_top_pairs(mutual: Tensor, best: Tensor, score: Tensor, num_pairs: Tensor) -> Tensor:
    """Keep, per image, only the ``num_pairs[b]`` most similar mutual pairs.

    Args:
        mutual: (B, N) bool from :func:`mutual_pairs`.
        best, score: (B, N) from :func:`best_partners`.
        num_pairs: (B,) long.
    Returns:
        (B, N) bool, a symmetric subset of ``mutual``.
    """
    idx = torch.arange(best.shape[1], device=best.device)
    lead = mutual & (idx < best)  # one entry per pair: its smaller index
    key = torch.where(lead, score, torch.full_like(score, float("-inf")))
    # rank pairs by similarity, ties broken by position (stable sort)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, idx.expand_as(order))
    kept_lead = lead & (rank < num_pairs.unsqueeze(1))
    b, n = best.shape
    kept_partner = torch.zeros(b, n + 1, dtype=torch.bool, device=best.device)
    kept_partner.scatter_(1, torch.where(kept_lead, best, n), True)
    return kept_lead | kept_partner[:, :n]


def merge_pairs(x: Tensor, best: Tensor, mutual: Tensor, lengths: Tensor | None = None) -> TokenMerge:
    """Merge each selected mutual pair into its smaller-index token (plain mean).

    Args:
        x: (B, N, C) tokens (padded layout if ``lengths`` is given).
        best: (B, N) partner of each token.
        mutual: (B, N) bool, symmetric: the pairs to merge.
        lengths: (B,) real input tokens per image, or None.
    Returns:
        :class:`TokenMerge` with output padded to the longest image.
    """
    b, n, c = x.shape
    idx = torch.arange(n, device=x.device).expand(b, n)
    valid = valid_mask(lengths, n, b, x.device)
    rep = torch.where(mutual, torch.minimum(idx, best), idx)  # representative
    survivor = (rep == idx) & valid
    slot = survivor.cumsum(1) - 1  # output slot of each survivor
    out_lengths = survivor.sum(1)
    m, m_min = torch.stack([out_lengths.max(), out_lengths.min()]).tolist() if b > 0 else (0, 0)  # one sync
    # source token and partner of every output slot (gathers, no atomics)
    src = torch.zeros(b, m + 1, dtype=torch.long, device=x.device)
    src.scatter_(1, torch.where(survivor, slot, m), idx)
    src = src[:, :m]
    partner = torch.where(mutual, best, idx).gather(1, src)
    gather = lambda t: x.gather(1, t.unsqueeze(-1).expand(-1, -1, c))  # noqa: E731
    merged = (gather(src) + gather(partner)) * 0.5
    index = slot.gather(1, rep).clamp_(0, max(m - 1, 0))
    return TokenMerge(merged, index, None if m == m_min else out_lengths)


def mpm_merge(
    x: Tensor,
    lengths: Tensor | None = None,
    policy: BatchPolicy = "exact",
    return_lengths: bool = False,
):
    """Mutual Pair Merging of image tokens (class token excluded by the caller).

    Args:
        x: (B, N, C) image tokens, raster order; padded layout if ``lengths``.
        lengths: (B,) real tokens per image, or None (all N real).
        policy: ``"exact"``: every image merges all its mutual pairs, output in
            the padded layout (each image gets what it would get alone);
            ``"batch-min"``: every image merges only as many pairs (its most
            similar ones) as the image of the batch with the fewest, so all
            images keep the same count and the output is dense.
        return_lengths: also return the (B,) output lengths (None when dense).
    Returns:
        ``(merged, index)``: merged (B, M, C) and index (B, N) long with
        ``merged[b, index[b, i]]`` the token input token ``i`` went into;
        ``(merged, index, lengths)`` with ``return_lengths``.
    """
    if x.dim() != 3:
        raise ValueError(f"mpm_merge expects (B, N, C) tokens, got shape {tuple(x.shape)}")
    best, score = best_partners(x, lengths)
    mutual = mutual_pairs(best, score, lengths)
    if policy == "batch-min":
        pairs = (mutual.sum(1) // 2)
        mutual = keep_top_pairs(mutual, best, score, pairs.min().expand_as(pairs))
    elif policy != "exact":
        raise ValueError(f"unknown batch policy {policy!r}; expected 'exact' or 'batch-min'")
    out = merge_pairs(x, best, mutual, lengths)
    if return_lengths:
        return out.x, out.index, out.lengths
    return out.x, out.index


# --------------------------------------------------------------------------- #
# fast path: the same decision on a flat row buffer, without a host sync
# (tests/merging/test_mpm_fast.py checks it against the functions above)
# --------------------------------------------------------------------------- #


class RowPlan(NamedTuple):
    """A merge decided on the device and not yet applied: no host sync so far.

    Attributes:
        dest: (B, S) long, output slot of each image token (its pair's slot).
        partner: (B, S) long, the token each token is averaged with (itself when
            unpaired), or None when every output token has one source.
        survivor: (B, S) bool or int8, nonzero where the token represents its slot.
        kept: (B,) long, image tokens kept per image.

    Entries past an image's real tokens are unspecified.
    """

    dest: Tensor
    partner: Tensor | None
    survivor: Tensor
    kept: Tensor


def plan_from_partners(best: Tensor, score: Tensor, n_img: Tensor | None = None) -> RowPlan:
    """The mutual test, representatives and output slots of :func:`merge_pairs`, as a :class:`RowPlan`.

    Args:
        best, score: (B, S) from :func:`best_partners`.
        n_img: (B,) real tokens per image, or None (all S).
    """
    b, s = best.shape
    idx = torch.arange(s, device=best.device)
    mutual = mutual_pairs(best, score, n_img)
    rep = torch.where(mutual, torch.minimum(idx, best), idx)
    survivor = rep == idx
    if n_img is not None:
        survivor &= valid_mask(n_img, s, b)
    slot = survivor.cumsum(1) - 1
    return RowPlan(slot.gather(1, rep), torch.where(mutual, best, idx), survivor, survivor.sum(1))


def plan_rows(x: Tensor, start: Tensor, n_img: Tensor | None, num_prefix: int, slots: int,
              view: Tensor | None = None) -> RowPlan:
    """MPM's decision for the images of a row buffer (no host sync).

    Args:
        x: (R, C) rows; image ``b``'s tokens are rows ``start[b] + num_prefix + j``, ``j < n_img[b]``.
        start: (B,) long; n_img: (B,) long or None (every image has ``slots`` tokens).
        slots: S >= max(n_img).
        view: (B, S, C) the same image tokens as a padded view, when the layout has one
            (saves the gather of the PyTorch path).
    Returns:
        :class:`RowPlan` (B, S). On CUDA outside graph capture and for small searches one Triton launch
        (``tk.plan_one_launch``: each launch costs the host time there); else two kernels (three
        with the inverse norms' pre-pass): the fused similarity-argmax (cosine in float32 accumulation;
        the twin's partners instead when ``tk.fused_best_partner`` is off), then the mutual test,
        representatives and slots, which also folds the similarity's column ranges at small batches (up
        to ``tk.FOLD_PARTS``; more take the combine kernel between them); elsewhere the reference functions.
    """
    on_triton = tk.available(x)
    if on_triton and tk.fused_best_partner and tk.plans_in_one_launch(x, start.shape[0], slots):
        return RowPlan(*tk.plan_one_launch(x, start, n_img, num_prefix, slots))
    if on_triton:
        counts = n_img if n_img is not None else torch.full_like(start, slots)
    if on_triton and tk.fused_best_partner:
        best, score = tk.best_partners_rows(x, start, counts, num_prefix, slots, combine=False)
    else:
        feats = view if view is not None else rows_to_padded(x, start + num_prefix, slots)
        best, score = best_partners(feats, n_img)
    if on_triton:
        return RowPlan(*tk.mutual_plan(best, score, counts))
    return plan_from_partners(best, score, n_img)


@register
class MPM(MergeMethod):
    """Mutual Pair Merging before each scheduled block, e.g. ``MPM((2, 5))``."""

    name = "mpm"
    site = "before_block"
    uses_size = False  # plain means: sizes play no part

    @property
    def plans_rows(self) -> bool:
        """Whether the fast runner may use :meth:`plan_rows` (exact batches; batch-min takes the plain path)."""
        return self.batch_policy == "exact"

    def plan_rows(self, x: Tensor, start: Tensor, n_img: Tensor | None, num_prefix: int, slots: int,
                  view: Tensor | None = None) -> RowPlan:
        """:func:`plan_rows` (the fast runner's protocol: plan on the device, then apply)."""
        return plan_rows(x, start, n_img, num_prefix, slots, view)

    def merge(self, x: Tensor, ctx: MergeContext) -> TokenMerge:
        feats = x if ctx.metric is None else ctx.metric
        best, score = best_partners(feats, ctx.lengths)
        mutual = mutual_pairs(best, score, ctx.lengths)
        if self.batch_policy == "batch-min":
            pairs = mutual.sum(1) // 2
            mutual = keep_top_pairs(mutual, best, score, pairs.min().expand_as(pairs))
        return merge_pairs(x, best, mutual, ctx.lengths)
