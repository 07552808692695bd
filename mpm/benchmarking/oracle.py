"""The oracle of a merge method: its token counts at zero merge cost (PyTorch side).

At each of the method's sites the oracle keeps the first ``count`` image tokens (a
slice) where the method would compute which tokens to merge, so a forward costs
what the method's token counts cost and nothing more: the best speed-up any merge
step with these counts could reach. Its logits are meaningless; only its timing is
used (``benchmarks/edge.py``). The ONNX Runtime counterpart is
:meth:`mpm.benchmarking.onnx_runtime.SegmentedModel.oracle`.

>>> oracle = SliceOracle(method)               # method: MPM((2, 5)), for example
>>> oracle.set_counts([785, 676])              # one image: its counts after each site
>>> model(images, method=oracle, backend="math")
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from mpm.merging.base import MergeContext, MergeMethod
from mpm.merging.maps import TokenMerge


class SliceOracle(MergeMethod):
    """Keep the first ``counts[k]`` image tokens at the k-th site of ``method`` (batch size 1).

    Not registered: it is a timing reference, not a merge method.
    """

    name = "oracle"
    uses_size = False

    def __init__(self, method: MergeMethod) -> None:
        super().__init__(method.schedule)
        self.site = method.site  # type: ignore[misc]
        self.of = method.name
        self._maps: dict[int, Tensor] = {}
        self.counts: list[int] = []

    def set_counts(self, counts: Sequence[int]) -> None:
        """Image tokens to keep after each site (one image), e.g. a real run's ``tokens_left``."""
        counts = [int(c) for c in counts]
        if len(counts) != len(self.schedule):
            raise ValueError(f"oracle of {self.of}: {len(counts)} counts for {len(self.schedule)} sites")
        self.counts = counts

    def merge(self, x: Tensor, ctx: MergeContext) -> TokenMerge:
        """x (1, M, C) -> (1, counts[k], C) and a valid map (input slot i -> min(i, count - 1))."""
        k = self.schedule.index(ctx.block)
        m = self.counts[k]
        n = x.shape[1]
        key = (n << 20) | m
        if key not in self._maps:  # built once per (n, m): not part of the timed cost
            self._maps[key] = torch.arange(n, device=x.device).clamp_(max=m - 1).unsqueeze(0)
        return TokenMerge(x[:, :m], self._maps[key].expand(x.shape[0], n), None)

    def describe(self) -> dict:
        return {**super().describe(), "of": self.of, "counts": list(self.counts)}
