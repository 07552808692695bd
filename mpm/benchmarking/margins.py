"""How close MPM's partner choices come to ties, to tell a rounding flip from a wrong merge.

Two runtimes that compute a merge site's tokens with different rounding (PyTorch and ONNX
Runtime, fp32: ~2e-6 in the tokens) pick different partners wherever a token's best and
second-best cosine similarities lie closer than that difference; the merge maps then differ
on that image although both are right. :class:`MarginProbe` records, at every site, the
smallest such gap (float64, on the features the step compares).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mpm.merging.mpm import MPM


def top2_margin(x: Tensor) -> float:
    """The smallest gap between a token's best and second-best cosine similarity; x: (B, M, C)."""
    xn = torch.nn.functional.normalize(x.double(), dim=-1)
    sim = xn @ xn.transpose(1, 2)
    sim.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    top = sim.topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


class MarginProbe(MPM):
    """MPM that records :func:`top2_margin` of its features at every site, then merges as MPM does."""

    def __init__(self, schedule) -> None:
        super().__init__(schedule)
        self.margins: list[float] = []

    def merge(self, x, ctx):
        self.margins.append(top2_margin(x if ctx.metric is None else ctx.metric))
        return super().merge(x, ctx)


def site_margins(model, image: Tensor, schedule, backend: str = "math") -> list[float]:
    """:func:`top2_margin` at each of MPM(``schedule``)'s sites for one normalised (1, 3, H, W) image."""
    probe = MarginProbe(schedule)
    with torch.inference_mode():
        model(image, method=probe, backend=backend)
    return probe.margins
