"""The merge steps of the ONNX Runtime path, in NumPy: one image at a time, torch-free.

The segmented ONNX model (:mod:`mpm.benchmarking.onnx_export`) runs the heavy part of
every merge step, the token similarities, as a small *score* graph in ONNX Runtime;
what is left is O(N) bookkeeping and a gather / scatter of the tokens, done here
exactly as :mod:`mpm.merging` does it in PyTorch, so that the merge maps are the same:

===========  =====================  ===============================================
step         score graph outputs    NumPy step (PyTorch reference)
===========  =====================  ===============================================
``mpm``      ``best``, ``score``    mutual pairs, plain means
                                    (:func:`mpm.merging.mpm.merge_pairs`)
``tome``     ``node_max``,          the ``r`` best A->B edges, size-weighted means
             ``node_idx``           (:func:`mpm.merging.tome.bipartite_matching`)
``algm``     ``window_sim`` (first  local: windows above the threshold; global:
             site), ``node_max``,   edges above ``mean + std / l``
             ``node_idx`` (later)   (:mod:`mpm.merging.algm`)
===========  =====================  ===============================================

Steps work on the real tokens of one image (``(N, C)``, no padding): with batch policy
``exact`` every image of a batch gets what it would get alone, which is what the
PyTorch padded layout computes too. A method gets an ONNX Runtime path by registering
a planner here (:func:`register_planner`); :func:`plan_steps` raises a one-line
:class:`~mpm.errors.ConfigError` for a method without one.

>>> steps = plan_steps(build_method("mpm", (2, 5)))        # [(2, 'before_block', MPMStep()), ...]
>>> merged, index, size = steps[0][2].apply(x, None, {"best": best, "score": score})
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from mpm.errors import ConfigError

#: score outputs of one image: name -> (N,) or (Nw,) array
Scores = dict[str, np.ndarray]


def stable_descending(values: np.ndarray) -> np.ndarray:
    """Indices sorting ``values`` (1-D) in descending order, ties in position order
    (``torch.sort(descending=True, stable=True)``)."""
    return np.argsort(-values, kind="stable")


def rank_of(order: np.ndarray) -> np.ndarray:
    """Inverse permutation: ``rank[order[i]] = i``."""
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0], dtype=order.dtype)
    return rank


def weighted_merge(x: np.ndarray, size: np.ndarray | None, route: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Size-weighted mean of the tokens routed to each output slot (ToMe's ``merge_wavg``).

    Args:
        x: (N, C) tokens; size: (N,) patches per token or None (all 1).
        route: (N,) output slot of every token, in ``[0, m)``.
    Returns:
        (m, C) means and (m,) summed sizes.
    """
    s = np.ones(x.shape[0], dtype=x.dtype) if size is None else size.astype(x.dtype, copy=False)
    x_sum = np.zeros((m, x.shape[1]), dtype=x.dtype)
    np.add.at(x_sum, route, x * s[:, None])
    s_sum = np.zeros(m, dtype=x.dtype)
    np.add.at(s_sum, route, s)
    return x_sum / np.where(s_sum > 0, s_sum, 1)[:, None], s_sum


def bipartite_route(node_max: np.ndarray, node_idx: np.ndarray, r: int, n: int) -> tuple[np.ndarray, int]:
    """Route of ToMe's bipartite matching on one image: the ``r`` A tokens (even positions) with
    the most similar B partner (odd positions) go into it; order: unmerged A, then B.

    Args:
        node_max, node_idx: (ceil(N/2),) best similarity of each A token and its partner in B.
        r: tokens to remove (clamped to ``N // 2``).
        n: N.
    Returns:
        (N,) route into ``[0, N - r)`` and ``N - r``.
    """
    nb = n // 2
    if nb == 0:
        return np.arange(n, dtype=np.int64), n
    r = min(max(int(r), 0), nb)
    merged = rank_of(stable_descending(node_max)) < r
    unmerged = ~merged
    n_unm = int(unmerged.sum())
    b_slot = n_unm + np.arange(nb, dtype=np.int64)
    route = np.empty(n, dtype=np.int64)
    route[0::2] = np.where(merged, b_slot[node_idx], np.cumsum(unmerged) - 1)
    route[1::2] = b_slot
    return route, n - r


class MergeStep:
    """One merge site of the ONNX Runtime path.

    Attributes (class level):
        kind: the step's name in the export manifest (the method's registry name).
        metric: which features the score graph compares: ``"tokens"`` (the image
            tokens at the site) or ``"keys"`` (the block's keys, mean over heads).
    """

    kind: ClassVar[str]
    metric: str = "tokens"

    def score_graph(self) -> str:
        """Which score graph this step reads (see :data:`mpm.benchmarking.onnx_export.SCORE_GRAPHS`)."""
        raise NotImplementedError

    def apply(self, x: np.ndarray, size: np.ndarray | None, scores: Scores) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray | None]:
        """Merge the (N, C) image tokens of one image; returns merged (M, C), map (N,) and sizes (M,) or None."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class MPMStep(MergeStep):
    """MPM: mutual pairs merge into their smaller index (plain mean); survivors keep raster order."""

    kind: ClassVar[str] = "mpm"

    def score_graph(self) -> str:
        return "mutual"

    def apply(self, x, size, scores):
        best = scores["best"].astype(np.int64, copy=False)
        n = x.shape[0]
        idx = np.arange(n, dtype=np.int64)
        mutual = (best[best] == idx) & (best != idx) & np.isfinite(scores["score"])
        rep = np.where(mutual, np.minimum(idx, best), idx)
        survivor = rep == idx
        slot = np.cumsum(survivor) - 1
        src = idx[survivor]
        partner = np.where(mutual, best, idx)[src]
        merged = (x[src] + x[partner]) * np.asarray(0.5, dtype=x.dtype)
        return merged, slot[rep], None


@dataclass
class ToMeStep(MergeStep):
    """ToMe: bipartite soft matching removing ``r`` tokens, size-weighted means."""

    kind: ClassVar[str] = "tome"
    r: int = 8
    metric: str = "keys"

    def score_graph(self) -> str:
        return "bipartite"

    def apply(self, x, size, scores):
        route, m = bipartite_route(scores["node_max"], scores["node_idx"].astype(np.int64, copy=False), self.r,
                                   x.shape[0])
        merged, new_size = weighted_merge(x, size, route, m)
        return merged, route, new_size


@dataclass
class ALGMLocalStep(MergeStep):
    """ALGM's local step: every window whose mean similarity reaches ``threshold`` becomes one token.

    ``windows``: (Nw, k) raster token indices (:func:`mpm.merging.algm.window_index`).
    """

    kind: ClassVar[str] = "algm_local"
    threshold: float = 0.88
    windows: list = None  # type: ignore[assignment]
    metric: str = "tokens"
    window_size: int = 4

    def score_graph(self) -> str:
        return "windows"

    def apply(self, x, size, scores):
        windows = np.asarray(self.windows, dtype=np.int64).reshape(-1, self.window_size)
        n = x.shape[0]
        if windows.size == 0:  # no full window in the grid: nothing merges
            return x, np.arange(n, dtype=np.int64), size
        nw, k = windows.shape
        sim = scores["window_sim"]
        count = int((sim >= np.float32(self.threshold)).sum())
        rank = rank_of(stable_descending(sim))
        tok_win = np.full(n, nw, dtype=np.int64)
        tok_win[windows.reshape(-1)] = np.repeat(np.arange(nw, dtype=np.int64), k)
        tok_rank = np.append(rank, nw)[tok_win]
        merged = tok_rank < count
        route = np.where(merged, tok_rank, count + np.cumsum(~merged) - 1)
        m = n - (k - 1) * count
        out, new_size = weighted_merge(x, size, route, m)
        return out, route, new_size


@dataclass
class ALGMGlobalStep(MergeStep):
    """ALGM's global step: bipartite matching of every A token whose best edge reaches the
    threshold, ``mean + std / layer`` of the image's best edges (or a fixed one)."""

    kind: ClassVar[str] = "algm_global"
    layer: int = 1
    threshold: float | None = None
    metric: str = "tokens"

    def score_graph(self) -> str:
        return "bipartite"

    def apply(self, x, size, scores):
        node_max = scores["node_max"]
        finite = np.isfinite(node_max)
        if self.threshold is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                cnt = np.float32(finite.sum())
                mean = np.where(finite, node_max, 0).sum(dtype=np.float32) / cnt
                var = np.where(finite, (node_max - mean) ** 2, 0).sum(dtype=np.float32) / (cnt - 1)
                thr = mean + np.sqrt(var) / np.float32(self.layer)
        else:
            thr = np.float32(self.threshold)
        r = int((node_max >= thr).sum())
        route, m = bipartite_route(node_max, scores["node_idx"].astype(np.int64, copy=False), r, x.shape[0])
        merged, new_size = weighted_merge(x, size, route, m)
        return merged, route, new_size


#: step kind (as written in the manifest) -> class
STEPS: dict[str, type[MergeStep]] = {cls.kind: cls for cls in (MPMStep, ToMeStep, ALGMLocalStep, ALGMGlobalStep)}

#: ``planner(method, grid) -> [(block, site, step), ...]`` per merge-method registry name
Planner = Callable[[Any, tuple[int, int]], list[tuple[int, str, MergeStep]]]
_PLANNERS: dict[str, Planner] = {}


def register_planner(name: str) -> Callable[[Planner], Planner]:
    """Decorator: the ONNX Runtime steps of merge method ``name`` (its :mod:`mpm.merging` registry name)."""
    def deco(fn: Planner) -> Planner:
        _PLANNERS[name] = fn
        return fn
    return deco


def onnx_methods() -> list[str]:
    """Merge methods with an ONNX Runtime path (besides ``none``)."""
    return sorted(_PLANNERS)


def plan_steps(method, grid: tuple[int, int] = (0, 0)) -> list[tuple[int, str, MergeStep]]:
    """The merge sites of ``method`` (a :class:`~mpm.merging.base.MergeMethod`) as NumPy steps, in block order.

    Raises :class:`ConfigError` (one line) when the method has no ONNX Runtime path.
    """
    if not method.identity.merges:
        return []
    if method.name not in _PLANNERS:
        raise ConfigError(f"--runtime onnxruntime: merge method {method.name!r} has no ONNX Runtime path "
                          f"(available: none, {', '.join(onnx_methods())})")
    return _PLANNERS[method.name](method, grid)


def step_from_manifest(entry: dict) -> MergeStep:
    """The step of one manifest entry (``{"kind": ..., "params": {...}}``)."""
    kind = entry.get("kind")
    if kind not in STEPS:
        raise ConfigError(f"ONNX manifest: unknown merge step {kind!r}; known: {', '.join(sorted(STEPS))}")
    return STEPS[kind](**entry.get("params", {}))


@register_planner("mpm")
def _plan_mpm(method, grid):
    return [(b, method.site, MPMStep()) for b in method.schedule]


@register_planner("tome")
def _plan_tome(method, grid):
    return [(b, method.site, ToMeStep(r=int(method.r_per_block.get(b, 0)))) for b in method.schedule]


@register_planner("algm")
def _plan_algm(method, grid):
    from mpm.merging.algm import window_index  # torch: only when exporting

    steps: list[tuple[int, str, MergeStep]] = []
    for b in method.schedule:
        if b == method.local_block:
            windows = window_index(tuple(grid), method.window).tolist()
            steps.append((b, method.site, ALGMLocalStep(method.local_threshold, windows, method.metric,
                                                        method.window[0] * method.window[1])))
        else:
            steps.append((b, method.site, ALGMGlobalStep(b + 1, method.global_threshold, method.metric)))
    return steps
