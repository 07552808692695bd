"""Analytic FLOP count of a Segmenter forward that follows the token count at every layer.

Convention (the paper's, = fvcore x 2): **one multiply-add counts as 2 FLOPs** and the
headline :attr:`FlopReport.total` counts *matmul-type operations only*: the patch-embedding
convolution, every ``nn.Linear``, the attention products ``q k^T`` and ``attn v``, the
mask transformer's products, and the similarity matrices of the merge steps. Biases,
LayerNorm, softmax, GELU, residual adds, L2 normalisations, arg-maxes and the final
bilinear upsampling are estimated separately in :attr:`FlopReport.elementwise` and are
**not** in the headline. This is what ``torch.utils.flop_counter.FlopCounterMode`` counts
for ``mm``/``addmm``/``bmm``/``convolution`` (2 per MAC), so the two agree exactly on a
forward with ``backend="math"``. Dense Seg-T/16 at 512 x 512 gives 25.28 GFLOPs
(paper: 25), Seg-B/16 258.6 (paper: 258). Seg-L/16 at 640 x 640 gives 1342 GFLOPs; the
paper's 800 is what Seg-L/16 gives at **512 x 512** (799.3), see ``tests/models/test_flops.py``.

How the count follows the runner (:func:`mpm.models.encoder.run_encoder`):

* the patch grid is ``ceil(H / p) x ceil(W / p)`` (Segmenter zero-pads the image);
* the prefix (class) token is counted in every encoder block and never merged;
* merge steps happen in the runner's order: for block ``i``, a ``"before_block"`` step
  (if ``method.active(i, "before_block")``) runs before the block, so the whole block runs
  at the new count (MPM); an ``"after_attention"`` step (ToMe, ALGM) runs inside the
  block, so its attention half runs at the old count and its MLP half at the new one;
* ``tokens_left[k]`` is the number of image tokens after the ``k``-th step (floats allowed,
  e.g. dataset means; the quadratic terms are then evaluated at the mean count, which
  slightly under-estimates the mean FLOPs; average per-image reports with
  :func:`flops_of_run` for the exact mean);
* the unmerge before the decoder is one gather: 0 FLOPs (its memory traffic is reported
  in :attr:`FlopReport.unmerge_bytes`);
* a padded batch (images keeping different counts, policy ``"exact"``) executes every
  step at the batch's largest count: ``flops_of_run(..., padded=True)`` counts that,
  the default counts each image at its own count;
* the decoder always runs on the full grid of ``N`` patch tokens (plus ``K`` class
  embeddings for the mask transformer).

Merge-step costs are functions keyed by ``method.name`` (see :data:`MERGE_COSTS`,
:func:`register_merge_cost`); each documents its formula. An unknown method name raises
:class:`~mpm.errors.ConfigError`.

>>> cfg = SegmenterConfig.preset("T", 150)
>>> round(segmenter_flops(cfg, (512, 512)).total, 2)                  # dense
25.28
>>> mpm = build_method("mpm", (2, 5))
>>> segmenter_flops(cfg, (512, 512), mpm, [620.0, 410.0]).total      # given (mean) counts
>>> logits, enc = model(x, method=mpm, backend="math", return_encoder=True)
>>> flops_of_run(model, x, mpm, enc).total                           # exact mean over the batch
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Sequence

from torch import Tensor

from mpm.errors import ConfigError
from mpm.merging.base import MergeMethod, NoMerge, Site
from mpm.models.segmenter import SegmenterConfig

__all__ = [
    "MERGE_COSTS",
    "FlopReport",
    "MergeCost",
    "MergeStep",
    "flops_of_run",
    "merge_steps",
    "per_image_flops",
    "register_merge_cost",
    "segmenter_flops",
]

GIGA = 1e9

# Elementwise FLOPs per element (estimates; none of them is in the headline total).
LAYERNORM_PER_ELEM = 5  # fvcore's convention for an affine LayerNorm
SOFTMAX_PER_ELEM = 5  # max, subtract, exp, sum, divide
GELU_PER_ELEM = 8  # erf-based GELU, rough
BILINEAR_PER_OUTPUT = 8  # 4 taps: 4 multiply-adds per output value
L2NORM_PER_ELEM = 3  # square, sum, divide (+ one sqrt per row, counted separately)


# --------------------------------------------------------------------------- merge steps


@dataclass(frozen=True)
class MergeStep:
    """One merge step as the runner performs it.

    Attributes:
        index: position ``k`` of the step in ``tokens_left``.
        block: encoder block of the site.
        site: ``"before_block"`` or ``"after_attention"``.
        n_in: image tokens entering the step.
        n_out: image tokens leaving it (``tokens_left[k]``).
        dim: width of the tokens (encoder embed dim).
        metric_dim: width of the features the runner offers for comparison: ``dim``
            at ``"before_block"`` sites (the tokens themselves), the head dim at
            ``"after_attention"`` sites (the attention keys averaged over heads).
            A method that compares the tokens anyway (ALGM's default) uses ``dim``.
        num_heads: encoder heads.
        grid: (H, W) patch grid of the image.
    """

    index: int
    block: int
    site: Site
    n_in: float
    n_out: float
    dim: int
    metric_dim: int
    num_heads: int
    grid: tuple[int, int]


@dataclass(frozen=True)
class MergeCost:
    """FLOPs of one merge step: matmul-type (headline) and elementwise (estimate)."""

    matmul: float
    elementwise: float = 0.0


MergeCostFn = Callable[[MergeMethod, MergeStep], MergeCost]

#: merge-step cost functions keyed by ``MergeMethod.name``
MERGE_COSTS: dict[str, MergeCostFn] = {}


def register_merge_cost(name: str) -> Callable[[MergeCostFn], MergeCostFn]:
    """Decorator registering the cost function of the merge method called ``name``."""

    def deco(fn: MergeCostFn) -> MergeCostFn:
        MERGE_COSTS[name] = fn
        return fn

    return deco


def _l2norm(n: float, d: int) -> float:
    return L2NORM_PER_ELEM * n * d + n


@register_merge_cost("mpm")
def mpm_merge_cost(method: MergeMethod, step: MergeStep) -> MergeCost:
    """MPM at one site with ``n`` = ``n_in`` tokens of width ``D`` = ``metric_dim``.

    * matmul: the full similarity matrix ``S = X X^T``: ``2 * n^2 * D``;
    * elementwise: L2 normalisation ``3 n D + n``, diagonal mask and row arg-max
      ``2 n^2``, the pair means of the ``n_out`` output slots ``2 n_out C``.
      Mutual-pair test, index arithmetic and gathers are integer work (0 FLOPs).
    """
    n, d = step.n_in, step.metric_dim
    return MergeCost(2.0 * n * n * d, _l2norm(n, d) + 2.0 * n * n + 2.0 * step.n_out * step.dim)


def _bipartite(n: float, d: int) -> tuple[float, float]:
    """ToMe's bipartite soft matching on ``n`` tokens: (matmul, elementwise) FLOPs."""
    na, nb = math.ceil(n / 2), math.floor(n / 2)
    if n != int(n):  # a mean count: split it evenly
        na = nb = n / 2
    return 2.0 * na * nb * d, _l2norm(n, d) + na * nb


def _weighted_mean_cost(step: MergeStep) -> float:
    """Size-weighted merging: x * size, scatter-add, / size (elementwise)."""
    n, m, c = step.n_in, step.n_out, step.dim
    return n * c + (n - m) * c + m * c + 2.0 * n


@register_merge_cost("tome")
def tome_merge_cost(method: MergeMethod, step: MergeStep) -> MergeCost:
    """ToMe (bipartite soft matching) with ``n`` = ``n_in``, ``D`` = ``metric_dim``.

    * matmul: similarities of set A (even tokens, ``ceil(n/2)``) to set B (odd
      tokens, ``floor(n/2)``): ``2 * ceil(n/2) * floor(n/2) * D`` (about
      ``2 (n/2)^2 D``; ``D`` is the head dim at ``"after_attention"`` sites, where
      the metric is the keys averaged over heads);
    * elementwise: averaging the keys over heads ``h n D`` (at ``"after_attention"``),
      L2 normalisation ``3 n D + n``, row max ``(n/2)^2``, size-weighted merge
      ``~2 n C + 2 n``. Sorting is not counted.
    """
    mm, ew = _bipartite(step.n_in, step.metric_dim)
    if step.site == "after_attention":
        ew += step.num_heads * step.n_in * step.metric_dim
    return MergeCost(mm, ew + _weighted_mean_cost(step))


def _algm_local_blocks(method: MergeMethod) -> set[int]:
    """Blocks whose ALGM step is the local (window) one: ``method.local_block(s)``, else the first."""
    for attr in ("local_blocks", "local_block"):
        val = getattr(method, attr, None)
        if val is not None:
            return {int(v) for v in (val if isinstance(val, Iterable) else (val,))}
    return {min(method.schedule)} if method.schedule else set()


def _algm_window(method: MergeMethod) -> tuple[int, int]:
    win = getattr(method, "window", None) or (2, 2)
    if isinstance(win, int):
        return win, win
    kh, kw = (int(v) for v in win)
    return kh, kw


@register_merge_cost("algm")
def algm_merge_cost(method: MergeMethod, step: MergeStep) -> MergeCost:
    """ALGM (training-free, :mod:`mpm.merging.algm`): local window merging, then global.

    Both steps compare ``D``-dim features: the tokens themselves (``method.metric ==
    "tokens"``, the published setting: ``D = C``) or the keys averaged over heads
    (``"keys"``: ``D`` = head dim).

    Local step (``method.local_block``, the first scheduled block) on the full
    ``H x W`` grid, windows ``kh x kw`` (``method.window``, published 2 x 2),
    ``w = kh kw``, ``n_w = floor(H / kh) floor(W / kw)`` windows:

    * matmul: each window's ``w x w`` cosine-similarity matrix: ``2 * n_w * w^2 * D``
      (``= 2 n w D`` when the windows tile the grid);
    * elementwise: L2 normalisation ``3 n D + n``, mean of the off-diagonal
      similarities ``n_w w^2``, threshold ``n_w``, size-weighted merge ``~2 n C + 2 n``.

    Global steps: ToMe's bipartite soft matching, ``2 * ceil(n/2) * floor(n/2) * D``,
    plus elementwise L2 normalisation, row max ``(n/2)^2``, the adaptive threshold
    (mean and std of the ``n/2`` best similarities) ``~4 (n/2)`` and the merge.
    """
    n = step.n_in
    d = step.dim if getattr(method, "metric", "tokens") == "tokens" else step.metric_dim
    if step.block in _algm_local_blocks(method):
        kh, kw = _algm_window(method)
        w = kh * kw
        nw = (step.grid[0] // kh) * (step.grid[1] // kw)
        return MergeCost(2.0 * nw * w * w * d, _l2norm(n, d) + nw * w * w + nw + _weighted_mean_cost(step))
    mm, ew = _bipartite(n, d)
    return MergeCost(mm, ew + 2.0 * n + _weighted_mean_cost(step))


def merge_cost(method: MergeMethod, step: MergeStep) -> MergeCost:
    """Cost of one merge step of ``method`` (looked up by ``method.name``)."""
    fn = MERGE_COSTS.get(method.name)
    if fn is None:
        raise ConfigError(
            f"no FLOP formula for merge method {method.name!r} ({type(method).__name__}); known: "
            f"{', '.join(sorted(MERGE_COSTS))}. Register one with "
            "mpm.models.flops.register_merge_cost(name)"
        )
    return fn(method, step)


# --------------------------------------------------------------------------- the report


@dataclass
class FlopReport:
    """FLOPs of one Segmenter forward (one image, or a mean / sum over images).

    Attributes:
        total: headline GFLOPs, matmul-type ops only, 1 MAC = 2 FLOPs (fvcore x 2,
            the paper's convention) = patch_embed + sum(encoder_blocks) + merge + decoder.
        breakdown: GFLOPs per part: ``patch_embed``, ``encoder_blocks`` (list, one per
            block, merge steps excluded), ``merge`` (sum), ``merge_steps`` (list, one
            per step), ``unmerge`` (0: a gather), ``decoder``, ``upsample`` (0: elementwise).
        elementwise: estimated GFLOPs of elementwise ops (biases, LayerNorm, softmax,
            GELU, residuals, normalisations, bilinear upsampling) per part, plus
            ``total``; **not** included in :attr:`total`.
        unmerge_bytes: bytes the unmerge gather moves (read index + read and write
            ``N x C`` values at ``dtype_bytes``), 0 without merge steps.
        tokens: ``image_tokens`` (grid N), ``prefix_tokens``, ``tokens_left`` (per step),
            ``attention_tokens`` / ``mlp_tokens`` (tokens incl. prefix in each block's
            attention / MLP half).
        method, schedule, model, image_size, grid: what was counted.
        num_images: images the report covers; ``reduction``: ``"single"``, ``"mean"``
            or ``"sum"`` (token fields are always means).
    """

    total: float
    breakdown: dict[str, Any]
    elementwise: dict[str, float]
    unmerge_bytes: float
    tokens: dict[str, Any]
    method: str
    schedule: list[int]
    model: str
    image_size: tuple[int, int]
    grid: tuple[int, int]
    num_images: int = 1
    reduction: str = "single"
    padded: bool = False

    @property
    def total_flops(self) -> float:
        """The headline in FLOPs (not GFLOPs)."""
        return self.total * GIGA

    @property
    def encoder(self) -> float:
        """GFLOPs of patch embedding + encoder blocks (merge steps excluded)."""
        return self.breakdown["patch_embed"] + sum(self.breakdown["encoder_blocks"])

    def to_dict(self) -> dict:
        """JSON-serialisable dict of every field."""
        return {
            "total_gflops": self.total,
            "breakdown_gflops": {k: (list(v) if isinstance(v, list) else v) for k, v in self.breakdown.items()},
            "elementwise_gflops": dict(self.elementwise),
            "unmerge_bytes": self.unmerge_bytes,
            "tokens": {k: (list(v) if isinstance(v, list) else v) for k, v in self.tokens.items()},
            "method": self.method,
            "schedule": list(self.schedule),
            "model": self.model,
            "image_size": list(self.image_size),
            "grid": list(self.grid),
            "num_images": self.num_images,
            "reduction": self.reduction,
            "padded": self.padded,
            "convention": "1 multiply-add = 2 FLOPs; total = matmul-type ops only (fvcore x 2)",
        }

    @staticmethod
    def combine(reports: Sequence["FlopReport"], reduction: Literal["mean", "sum"] = "mean") -> "FlopReport":
        """Mean or sum of per-image reports of the same model, size and method.

        FLOP fields are averaged or summed; token fields are always averaged.
        """
        if not reports:
            raise ValueError("FlopReport.combine needs at least one report")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"unknown reduction {reduction!r}; expected 'mean' or 'sum'")
        first = reports[0]
        for r in reports[1:]:
            if (r.model, r.method, r.schedule, r.grid) != (first.model, first.method, first.schedule, first.grid):
                raise ValueError("FlopReport.combine: reports of different models, methods or image sizes")
        scale = 1.0 if reduction == "sum" else 1.0 / len(reports)
        num = sum(r.num_images for r in reports)

        def red(values: list, s: float) -> Any:
            if isinstance(values[0], list):
                return [red(list(col), s) for col in zip(*values)]
            if isinstance(values[0], (int, float)):
                return s * sum(values)
            return values[0]

        breakdown = {k: red([r.breakdown[k] for r in reports], scale) for k in first.breakdown}
        elementwise = {k: red([r.elementwise[k] for r in reports], scale) for k in first.elementwise}
        tokens = {k: red([r.tokens[k] for r in reports], 1.0 / len(reports)) for k in first.tokens}
        return FlopReport(
            total=red([r.total for r in reports], scale),
            breakdown=breakdown,
            elementwise=elementwise,
            unmerge_bytes=red([r.unmerge_bytes for r in reports], scale),
            tokens=tokens,
            method=first.method,
            schedule=list(first.schedule),
            model=first.model,
            image_size=first.image_size,
            grid=first.grid,
            num_images=num,
            reduction=reduction,
            padded=first.padded,
        )


# --------------------------------------------------------------------------- counting


def _grid(config: SegmenterConfig, image_size: Sequence[int] | None) -> tuple[tuple[int, int], tuple[int, int]]:
    h, w = (int(s) for s in (image_size if image_size is not None else config.image_size))
    if h <= 0 or w <= 0:
        raise ConfigError(f"image size must be positive, got {(h, w)}")
    p = config.patch_size
    return (h, w), (math.ceil(h / p), math.ceil(w / p))


def _attn_half(n: float, d: int, heads: int) -> tuple[float, float]:
    """timm Block up to the attention residual on ``n`` tokens: (matmul, elementwise) FLOPs.

    qkv ``3 n d^2``, ``q k^T`` and ``attn v`` ``n^2 d`` each, proj ``n d^2`` multiply-adds.
    """
    mm = 2.0 * (4.0 * n * d * d + 2.0 * n * n * d)
    ew = LAYERNORM_PER_ELEM * n * d + 3 * n * d + n * d + SOFTMAX_PER_ELEM * heads * n * n + n * d + n * d
    return mm, ew


def _mlp_half(n: float, d: int, hidden: int) -> tuple[float, float]:
    """timm Block's MLP residual on ``n`` tokens: fc1 + fc2 ``2 n d h`` multiply-adds."""
    mm = 2.0 * (2.0 * n * d * hidden)
    ew = LAYERNORM_PER_ELEM * n * d + n * hidden + GELU_PER_ELEM * n * hidden + n * d + n * d
    return mm, ew


def _decoder(config: SegmenterConfig, n: int) -> tuple[float, float]:
    """Decoder on the full grid of ``n`` patch tokens: (matmul, elementwise) FLOPs."""
    c, k = config.embed_dim, config.num_classes
    if config.decoder == "linear":
        return 2.0 * n * c * k, n * k
    if config.decoder != "mask_transformer":
        raise ConfigError(f"unknown decoder {config.decoder!r}; expected 'mask_transformer' or 'linear'")
    dim = config.decoder_dim or c
    heads = config.decoder_heads or max(dim // 64, 1)
    hidden = int(config.decoder_mlp_dim or 4 * dim)
    t = n + k
    mm = 2.0 * n * c * dim  # proj_dec
    ew = float(n * dim)  # proj_dec bias
    for _ in range(config.decoder_depth):
        a_mm, a_ew = _attn_half(t, dim, heads)
        m_mm, m_ew = _mlp_half(t, dim, hidden)
        mm += a_mm + m_mm
        ew += a_ew + m_ew
    ew += LAYERNORM_PER_ELEM * t * dim  # decoder_norm
    mm += 2.0 * (n * dim * dim + k * dim * dim)  # proj_patch, proj_classes
    ew += _l2norm(n, dim) + _l2norm(k, dim)  # patches / ||patches||, classes / ||classes||
    mm += 2.0 * n * k * dim  # patches @ classes^T
    ew += LAYERNORM_PER_ELEM * n * k  # mask_norm
    return mm, ew


def merge_steps(config: SegmenterConfig, method: MergeMethod | None, tokens_left: Sequence[float] = (),
                image_size: Sequence[int] | None = None) -> list[MergeStep]:
    """The merge steps ``method`` performs on ``config``'s encoder, in the runner's order."""
    method = method or NoMerge()
    method.validate(config.depth)
    _, grid = _grid(config, image_size)
    n = float(grid[0] * grid[1])
    head_dim = config.embed_dim // config.num_heads
    sites = [(i, s) for i in range(config.depth) for s in ("before_block", "after_attention") if method.active(i, s)]
    left = _as_floats(tokens_left)
    if len(left) != len(sites):
        raise ConfigError(
            f"{method!r} performs {len(sites)} merge step(s) on a {config.depth}-block encoder "
            f"(at {[f'{b}:{s}' for b, s in sites]}) but {len(left)} tokens_left value(s) were given"
        )
    steps = []
    for k, ((block, site), out) in enumerate(zip(sites, left)):
        if not 0 < out <= n + 1e-6:
            raise ConfigError(
                f"tokens_left[{k}] = {out} after merge step {k} (block {block}) is not in (0, {n:g}], "
                "the image tokens entering that step"
            )
        steps.append(MergeStep(k, block, site, n, out, config.embed_dim,
                               head_dim if site == "after_attention" else config.embed_dim,
                               config.num_heads, grid))
        n = out
    return steps


def _as_floats(values: Sequence[Any]) -> list[float]:
    out = []
    for k, v in enumerate(values):
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise ConfigError(
                    f"tokens_left[{k}] holds {v.numel()} values (one per image); use per_image_flops / "
                    "flops_of_run for per-image counts, or pass means"
                )
            v = v.item()
        out.append(float(v))
    return out


@dataclass
class _EncoderPass:
    """What the encoder blocks and merge steps of one forward cost (FLOPs, not GFLOPs)."""

    blocks_mm: list[float]
    merge_mm: list[float]
    blocks_ew: float
    merge_ew: float
    attention_tokens: list[float]
    mlp_tokens: list[float]


def _patch_embed(config: SegmenterConfig, n_img: int, prefix: int) -> tuple[float, float]:
    """Patch-embedding convolution on ``n_img`` patches: (matmul, elementwise) FLOPs.

    Elementwise: the conv bias on ``n_img x C`` and the position embedding on ``(n_img + prefix) x C``.
    """
    c, p = config.embed_dim, config.patch_size
    return 2.0 * n_img * c * 3 * p * p, float(n_img * c + (n_img + prefix) * c)


def _encoder_pass(config: SegmenterConfig, method: MergeMethod, steps: Sequence[MergeStep],
                  n_img: int, prefix: int) -> _EncoderPass:
    """Walk the encoder blocks in the runner's order, each half at the token count it runs at.

    A ``"before_block"`` step runs the whole block at its new count; an ``"after_attention"``
    step runs the attention half at the old count and the MLP half at the new one.
    """
    c, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    by_site = {(s.block, s.site): s for s in steps}
    out = _EncoderPass([], [], 0.0, 0.0, [], [])
    n = float(n_img)

    def merge_at(i: int, site: Site, n: float) -> float:
        step = by_site.get((i, site))
        if step is None:
            return n
        cost = merge_cost(method, step)
        out.merge_mm.append(cost.matmul)
        out.merge_ew += cost.elementwise
        return step.n_out

    for i in range(config.depth):
        n = merge_at(i, "before_block", n)
        a_mm, a_ew = _attn_half(prefix + n, c, config.num_heads)
        out.attention_tokens.append(prefix + n)
        n = merge_at(i, "after_attention", n)
        m_mm, m_ew = _mlp_half(prefix + n, c, hidden)
        out.mlp_tokens.append(prefix + n)
        out.blocks_mm.append(a_mm + m_mm)
        out.blocks_ew += a_ew + m_ew
    out.blocks_ew += LAYERNORM_PER_ELEM * (prefix + n) * c  # final norm
    return out


def _breakdowns(patch: tuple[float, float], enc: _EncoderPass, decoder: tuple[float, float],
                upsample_ew: float) -> tuple[float, dict[str, Any], dict[str, float]]:
    """(headline GFLOPs, matmul breakdown, elementwise breakdown) of the counted parts."""
    g = 1.0 / GIGA
    breakdown = {
        "patch_embed": patch[0] * g,
        "encoder_blocks": [b * g for b in enc.blocks_mm],
        "merge": sum(enc.merge_mm) * g,
        "merge_steps": [m * g for m in enc.merge_mm],
        "unmerge": 0.0,
        "decoder": decoder[0] * g,
        "upsample": 0.0,
    }
    elementwise = {
        "patch_embed": patch[1] * g,
        "encoder_blocks": enc.blocks_ew * g,
        "merge": enc.merge_ew * g,
        "unmerge": 0.0,
        "decoder": decoder[1] * g,
        "upsample": upsample_ew * g,
    }
    elementwise["total"] = sum(elementwise.values())
    total = (patch[0] + sum(enc.blocks_mm) + sum(enc.merge_mm) + decoder[0]) * g
    return total, breakdown, elementwise


def segmenter_flops(config: SegmenterConfig, image_size: Sequence[int] | None = None,
                    method: MergeMethod | None = None, tokens_left: Sequence[float] = (),
                    *, dtype_bytes: int = 4) -> FlopReport:
    """FLOPs of one Segmenter forward on one ``image_size`` image.

    Args:
        config: the model.
        image_size: (H, W) of the input (default ``config.image_size``); padded up
            to a multiple of the patch size as :meth:`Segmenter.forward` does.
        method: the merge method and schedule (None: dense).
        tokens_left: image tokens after each merge step, in the runner's order
            (one value per step; floats allowed).
        dtype_bytes: element size for :attr:`FlopReport.unmerge_bytes`.
    Returns:
        :class:`FlopReport`; the headline ``total`` counts matmul-type ops only with
        1 multiply-add = 2 FLOPs (elementwise ops are in ``report.elementwise``).
    """
    method = method or NoMerge()
    (h, w), grid = _grid(config, image_size)
    n_img, prefix = grid[0] * grid[1], 1  # Segmenter's ViT: one class token, no register tokens
    steps = merge_steps(config, method, tokens_left, (h, w))
    enc = _encoder_pass(config, method, steps, n_img, prefix)
    p = config.patch_size
    upsample_ew = float(BILINEAR_PER_OUTPUT * config.num_classes * grid[0] * p * grid[1] * p)
    total, breakdown, elementwise = _breakdowns(_patch_embed(config, n_img, prefix), enc,
                                                _decoder(config, n_img), upsample_ew)
    return FlopReport(
        total=total,
        breakdown=breakdown,
        elementwise=elementwise,
        unmerge_bytes=float(n_img * 8 + 2 * n_img * config.embed_dim * dtype_bytes) if steps else 0.0,
        tokens={
            "image_tokens": n_img,
            "prefix_tokens": prefix,
            "tokens_left": [s.n_out for s in steps],
            "attention_tokens": enc.attention_tokens,
            "mlp_tokens": enc.mlp_tokens,
        },
        method=method.name,
        schedule=list(method.schedule),
        model=f"Seg-{config.size_name}/{config.patch_size}-{config.decoder}",
        image_size=(h, w),
        grid=grid,
    )


def _per_image_counts(tokens_left: Sequence[Any]) -> list[list[float]]:
    """(steps x B) counts -> B lists of per-step counts."""
    cols = []
    for _k, t in enumerate(tokens_left):
        if isinstance(t, Tensor):
            t = t.detach().reshape(-1).tolist()
        elif isinstance(t, (int, float)):
            t = [t]
        cols.append([float(v) for v in t])
    if not cols:
        return []
    b = len(cols[0])
    if any(len(c) != b for c in cols):
        raise ConfigError(f"tokens_left steps hold different numbers of images: {[len(c) for c in cols]}")
    return [[c[i] for c in cols] for i in range(b)]


def per_image_flops(config: SegmenterConfig, image_size: Sequence[int] | None, method: MergeMethod | None,
                    tokens_left: Sequence[Tensor | Sequence[float]], *, batch_size: int | None = None,
                    padded: bool = False, dtype_bytes: int = 4) -> list[FlopReport]:
    """One report per image from per-step (B,) counts (``EncoderOutput.tokens_left``).

    Args:
        tokens_left: one (B,) tensor (or list) per merge step.
        batch_size: B, needed only when there is no merge step.
        padded: count what a padded batch executes: at every step all images run
            at the batch's largest count (the ``"exact"`` policy's padded layout),
            instead of each image's own count.
    """
    per_image = _per_image_counts(tokens_left)
    if not per_image:
        per_image = [[] for _ in range(batch_size or 1)]
    if padded and per_image and per_image[0]:
        worst = [max(col) for col in zip(*per_image)]
        per_image = [worst for _ in per_image]
    reports = [segmenter_flops(config, image_size, method, counts, dtype_bytes=dtype_bytes) for counts in per_image]
    for r in reports:
        r.padded = padded
    return reports


def flops_of_run(model: Any, images_hw: Sequence[int] | Tensor, method: MergeMethod | None, run: Any, *,
                 reduction: Literal["mean", "sum", "none"] = "mean", padded: bool = False,
                 dtype_bytes: int = 4) -> FlopReport | list[FlopReport]:
    """FLOPs of a forward that was run, from the token counts it produced.

    Args:
        model: a :class:`~mpm.models.segmenter.Segmenter` (or its ``SegmenterConfig``).
        images_hw: (H, W) of the input, or the input tensor (B, 3, H, W).
        method: the merge method of the run (None: dense).
        run: the run's :class:`~mpm.models.encoder.EncoderOutput`, its ``tokens_left``
            (one (B,) tensor per step), or one image's per-step counts (floats).
        reduction: ``"mean"`` (GFLOPs per image, averaged exactly over images),
            ``"sum"`` (the whole batch) or ``"none"`` (a list, one per image).
        padded: see :func:`per_image_flops`.
    """
    config = model if isinstance(model, SegmenterConfig) else getattr(model, "config", None)
    if not isinstance(config, SegmenterConfig):
        raise ConfigError(f"flops_of_run needs a Segmenter or a SegmenterConfig, got {type(model).__name__}")
    batch = None
    if isinstance(images_hw, Tensor):
        batch = images_hw.shape[0] if images_hw.dim() == 4 else None
        images_hw = tuple(images_hw.shape[-2:])
    tokens_left = getattr(run, "tokens_left", run)
    grid = getattr(run, "grid", None)
    if grid is not None:
        _, expect = _grid(config, images_hw)
        if tuple(grid) != expect:
            raise ConfigError(f"the run's patch grid {tuple(grid)} does not match images of size "
                              f"{tuple(images_hw)} (grid {expect})")
        if batch is None and hasattr(run, "tokens"):
            batch = run.tokens.shape[0]
    if tokens_left and not isinstance(tokens_left[0], Tensor) and isinstance(tokens_left[0], (int, float)):
        tokens_left = [[float(t)] for t in tokens_left]  # one image
    reports = per_image_flops(config, images_hw, method, tokens_left, batch_size=batch, padded=padded,
                              dtype_bytes=dtype_bytes)
    if reduction == "none":
        return reports
    return FlopReport.combine(reports, reduction)
