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
