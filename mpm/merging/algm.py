"""ALGM: Adaptive Local-then-Global Merging (Norouzi et al., CVPR 2024), training-free.

Two steps, both inside a block between attention and MLP (as in the authors'
``TurboBlock``), both comparing the *tokens* themselves (the block's output
after the attention residual; the reference code computes the mean query but
matches on ``x``):

1. **Local merging** (first scheduled block, ALGM: the first layer). The full
   patch grid is cut into non-overlapping 2x2 windows; a window whose mean
   pairwise cosine similarity (the 4*3 off-diagonal pairs) is at least
   ``local_threshold`` becomes one token, the size-weighted mean of its four
   (size 4). Output order is the reference's: the merged windows first (most
   similar first), then the unmerged tokens in raster order.
2. **Global merging** (each later scheduled block, ALGM: one block halfway).
   ToMe's bipartite soft matching (:mod:`mpm.merging.tome`) with an adaptive
   ``r``: every A token whose best B similarity is at least a threshold
   merges. The threshold is ``mean + std / l`` of the A tokens' best
   similarities, ``l`` the 1-based layer index of the block, or a fixed
   ``global_threshold`` when given.

Published defaults (tue-mps/algm-segmenter):

* schedule ``--selected-layers 1 5`` (1-based; ViT-L: ``1 7``), i.e. blocks
  ``(0, 4)`` here (0-based); local step in the first, global in the second.
* 2x2 windows (``--merging-window-size 2 2``), local threshold ``0.88``: the
  default of ``apply_patch`` and of ``segm/eval/miou.py --threshold``, and the
  README command; per-backbone training commands (TRAINING.md) use ADE20K
  T 0.90, S 0.88, B 0.94, L 0.95, Cityscapes S 0.955, Pascal-Context S 0.88
  (:data:`ALGM_LOCAL_THRESHOLDS`, :meth:`ALGM.published`).
* global threshold: adaptive ``mean + std / l`` (``algm/global_merge.py``).

Departures from the reference code, all so that a batch gives each image what
it would get alone (policy ``"exact"``): the reference takes the number of
merged windows/pairs as the minimum over the batch and the global threshold
from batch-averaged mean/std. Here ``"exact"`` keeps per-image counts (padded
layout: real tokens first, ``lengths`` per image) and per-image statistics;
``"batch-min"`` merges in every image only as many windows (resp. pairs) as the
image with the fewest, keeping the most similar ones (dense output, the
reference's batching). Grids with odd sides are handled: the last row/column
outside full windows is never merged locally (the reference asserts a square
grid of even side). The unbiased standard deviation is used (torch default,
as in the reference).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mpm.errors import ConfigError
from mpm.merging.base import MergeContext, MergeMethod, register
from mpm.merging.maps import TokenMerge
from mpm.methods import ALGM_DEFAULT_LOCAL_THRESHOLD, ALGM_DEFAULT_SCHEDULE
from mpm.merging.tome import (
    Matching,
    bipartite_matching,
    bipartite_scores,
    clamp_r,
    identity_matching,
    matching_from_route,
    merge_wavg,
)

#: published local-merging thresholds, (dataset, ViT size) -> threshold (ALGM repo, TRAINING.md)
ALGM_LOCAL_THRESHOLDS: dict[tuple[str, str], float] = {
    ("ade20k", "T"): 0.90,
    ("ade20k", "S"): 0.88,
    ("ade20k", "B"): 0.94,
    ("ade20k", "L"): 0.95,
    ("cityscapes", "S"): 0.955,
    ("pascal_context", "S"): 0.88,
}
#: published schedules, ViT size -> (local block, global block), 0-based ("--selected-layers 1 5" / "1 7")
ALGM_SCHEDULES: dict[str, tuple[int, int]] = {"T": (0, 4), "S": (0, 4), "B": (0, 4), "L": (0, 6)}
#: defaults of the reference code (apply_patch / eval --threshold, README)
DEFAULT_SCHEDULE: tuple[int, int] = ALGM_DEFAULT_SCHEDULE
DEFAULT_LOCAL_THRESHOLD = ALGM_DEFAULT_LOCAL_THRESHOLD

Metric = Literal["tokens", "keys"]


# --------------------------------------------------------------------------- #
# local merging: windows of the full grid
# --------------------------------------------------------------------------- #


def window_index(grid: tuple[int, int], window: tuple[int, int] = (2, 2),
                 device: torch.device | str | None = None) -> Tensor:
    """Raster token indices of the non-overlapping windows of a grid.

    Args:
        grid: (H, W) token grid, raster order.
        window: (kh, kw) window size.
    Returns:
        (num_windows, kh * kw) long; windows in raster order (rows of windows
        first), tokens of a window in raster order. Tokens of a last partial
        row/column of windows belong to no window.
    """
    (h, w), (kh, kw) = grid, window
    gh, gw = h // kh, w // kw
    rows = torch.arange(gh * kh, device=device).view(gh, 1, kh, 1)
    cols = torch.arange(gw * kw, device=device).view(1, gw, 1, kw)
    return (rows * w + cols).reshape(gh * gw, kh * kw)


def window_similarity(metric: Tensor, windows: Tensor) -> Tensor:
    """Mean pairwise cosine similarity inside each window (self-pairs excluded).

    Args:
        metric: (B, N, D) token features.
        windows: (Nw, k) from :func:`window_index`, k >= 2.
    Returns:
        (B, Nw): ``sum_{i != j} cos(t_i, t_j) / (k (k - 1))``.
    """
    k = windows.shape[1]
    f = F.normalize(metric, dim=-1)[:, windows]  # (B, Nw, k, D)
    sims = f @ f.transpose(-1, -2)  # (B, Nw, k, k)
    off = sims.sum(dim=(-1, -2)) - sims.diagonal(dim1=-2, dim2=-1).sum(-1)
    return off / (k * (k - 1))


def local_window_matching(metric: Tensor, grid: tuple[int, int], threshold: float, policy: str = "exact",
                          window: tuple[int, int] = (2, 2)) -> Matching:
    """ALGM's local merging module: merge each window similar enough into one token.

    Args:
        metric: (B, N, D) features of the full grid (N = H * W, no padding).
        grid: (H, W).
        threshold: a window merges when its mean similarity is ``>= threshold``.
        policy: ``"exact"`` (per-image count, padded output) or ``"batch-min"``
            (every image merges its ``min_b count_b`` most similar windows).
        window: (kh, kw).
    Returns:
        :class:`~mpm.merging.tome.Matching`; output per image: merged windows
        (most similar first, ties by window position), then the other tokens
        in raster order.
    """
    b, n, _ = metric.shape
    if n != grid[0] * grid[1]:
        raise ConfigError(f"algm: local merging needs the full {grid[0]}x{grid[1]} grid, got {n} tokens")
    device = metric.device
    windows = window_index(grid, window, device)
    nw, k = windows.shape
    if nw == 0 or k < 2:
        return identity_matching(b, n, None, device)
    sim = window_similarity(metric, windows)  # (B, Nw)
    count = (sim >= threshold).sum(1)  # (B,)
    if policy == "batch-min":
        count = count.min().expand(b)
    elif policy != "exact":
        raise ValueError(f"unknown batch policy {policy!r}; expected 'exact' or 'batch-min'")
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(nw, device=device).expand(b, nw))
    # window of each token (nw for tokens outside every window)
    tok_win = torch.full((n,), nw, dtype=torch.long, device=device)
    tok_win[windows.reshape(-1)] = torch.arange(nw, device=device).repeat_interleave(k)
    tok_rank = torch.cat([rank, rank.new_full((b, 1), nw)], dim=1)[:, tok_win]  # (B, N), nw outside windows
    merged = tok_rank < count.unsqueeze(1)
    unmerged = ~merged
    route = torch.where(merged, tok_rank, count.unsqueeze(1) + unmerged.cumsum(1) - 1)
    return matching_from_route(route, n - (k - 1) * count)


# --------------------------------------------------------------------------- #
# global merging: bipartite matching with an adaptive r
# --------------------------------------------------------------------------- #


def adaptive_threshold(node_max: Tensor, valid: Tensor, layer: int) -> Tensor:
    """ALGM's global threshold per image: ``mean + std / layer`` of the best similarities.

    Args:
        node_max: (B, Na) best B similarity of each A token.
        valid: (B, Na) bool, real A tokens.
        layer: 1-based layer index of the block.
    Returns:
        (B,) threshold (NaN when an image has fewer than 2 real A tokens, so
        nothing merges).
    """
    cnt = valid.sum(1).to(node_max.dtype)
    v = torch.where(valid, node_max, torch.zeros_like(node_max))
    mean = v.sum(1) / cnt
    var = torch.where(valid, (node_max - mean.unsqueeze(1)) ** 2, torch.zeros_like(node_max)).sum(1) / (cnt - 1)
    return mean + var.sqrt() / layer


def global_adaptive_matching(metric: Tensor, layer: int, lengths: Tensor | None = None,
                             threshold: float | None = None, policy: str = "exact") -> Matching:
    """ALGM's global merging module: bipartite matching, ``r`` = edges above a threshold.

    Args:
        metric: (B, N, D) features (padded layout if ``lengths``).
        layer: 1-based layer index (for the adaptive threshold).
        lengths: (B,) real tokens per image, or None.
        threshold: fixed similarity threshold, or None for ``mean + std / layer``.
        policy: ``"exact"`` or ``"batch-min"``.
    Returns:
        :class:`~mpm.merging.tome.Matching` (ToMe's order: unmerged A, then B).
    """
    b, n, _ = metric.shape
    node_max, node_idx = bipartite_scores(metric, lengths)
    lens = torch.full((b,), n, dtype=torch.long, device=metric.device) if lengths is None else lengths
    valid_a = torch.arange(node_max.shape[1], device=metric.device) * 2 < lens.unsqueeze(1)
    if threshold is None:
        thr = adaptive_threshold(node_max, valid_a & torch.isfinite(node_max), layer)
    else:
        thr = node_max.new_full((b,), float(threshold))
    r = ((node_max >= thr.unsqueeze(1)) & valid_a).sum(1)
    r = clamp_r(r, b, n, lengths, policy, metric.device)
    return bipartite_matching(node_max, node_idx, r, n, lengths)


# --------------------------------------------------------------------------- #
# the merge method
# --------------------------------------------------------------------------- #


@register
class ALGM(MergeMethod):
    """ALGM, training-free: local 2x2 merging in the first scheduled block, global after.

    Args:
        schedule: blocks (0-based); the first runs the local step, every later
            one the global step. Empty: the published ``(0, 4)``.
        batch_policy: ``"exact"`` (per-image counts, padded layout) or
            ``"batch-min"`` (every image merges as many as the batch minimum).
        local_threshold: window mean cosine similarity needed to merge
            (published default 0.88; see :data:`ALGM_LOCAL_THRESHOLDS`).
        global_threshold: fixed similarity threshold of the global step, or
            None (published) for the adaptive ``mean + std / l``.
        window: local window size (published (2, 2)).
        metric: ``"tokens"`` (published: compare the tokens) or ``"keys"``
            (the block's keys averaged over heads, as ToMe).
        prop_attn: proportional attention after merging (the reference passes
            sizes to attention but does not use them: default off).
    """

    name = "algm"
    site = "after_attention"

    def __init__(self, schedule: Sequence[int] = DEFAULT_SCHEDULE, batch_policy: str = "exact",
                 local_threshold: float = DEFAULT_LOCAL_THRESHOLD, global_threshold: float | None = None,
                 window: Sequence[int] = (2, 2), metric: Metric = "tokens", prop_attn: bool = False) -> None:
        schedule = tuple(schedule) or DEFAULT_SCHEDULE
        super().__init__(schedule, batch_policy)
        checked = self._checked(schedule, local_threshold=local_threshold, global_threshold=global_threshold,
                                window=window, metric=metric, prop_attn=prop_attn)  # mpm.methods.ALGMSpec
        self.local_threshold: float = checked["local_threshold"]
        self.global_threshold: float | None = checked["global_threshold"]
        self.window: tuple[int, int] = tuple(checked["window"])  # type: ignore[assignment]
        self.metric: Metric = checked["metric"]
        self.proportional_attention = checked["prop_attn"]

    @classmethod
    def published(cls, size: str = "S", dataset: str = "ade20k", batch_policy: str = "exact") -> "ALGM":
        """The configuration the ALGM authors trained with for a ViT size (T/S/B/L) and dataset."""
        key = (dataset.lower(), size.upper())
        if key not in ALGM_LOCAL_THRESHOLDS:
            raise ConfigError(f"algm: no published setting for {key}; known: {sorted(ALGM_LOCAL_THRESHOLDS)}")
        return cls(ALGM_SCHEDULES[key[1]], batch_policy, local_threshold=ALGM_LOCAL_THRESHOLDS[key])

    @property
    def local_block(self) -> int:
        return self.schedule[0]

    def merge(self, x: Tensor, ctx: MergeContext) -> TokenMerge:
        feats = x if self.metric == "tokens" or ctx.metric is None else ctx.metric
        if ctx.block == self.local_block:
            self._check_full_grid(x, ctx)
            m = local_window_matching(feats, ctx.grid, self.local_threshold, self.batch_policy, self.window)
        else:
            m = global_adaptive_matching(feats, ctx.block + 1, ctx.lengths, self.global_threshold, self.batch_policy)
        merged, _ = merge_wavg(m.merge, x, ctx.size)
        return TokenMerge(merged, m.index, m.lengths)

    def _check_full_grid(self, x: Tensor, ctx: MergeContext) -> None:
        h, w = ctx.grid
        n = x.shape[1]
        untouched = ctx.lengths is None and n == h * w
        if untouched and ctx.index is not None:
            untouched = ctx.index.shape[1] == n and bool(
                (ctx.index == torch.arange(n, device=ctx.index.device)).all())
        if not untouched:
            raise ConfigError(
                f"algm: the local merging step (block {ctx.block}) must see the full {h}x{w} token grid, "
                f"but it gets {n} tokens after an earlier merge; run ALGM first and alone"
            )

    def params(self) -> dict:
        return {
            "local_threshold": self.local_threshold,
            "global_threshold": self.global_threshold,
            "window": list(self.window),
            "metric": self.metric,
            "prop_attn": self.proportional_attention,
        }
