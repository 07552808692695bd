"""Export a Segmenter with merging to ONNX as segments between its merge sites.

A traced graph freezes shapes, and merging makes the token count depend on the image.
So the model is cut at its merge sites and every piece is exported with a *dynamic
token axis* (the TorchScript exporter, ``dynamo=False``, opset 17):

* **encoder segments**: segment 0 takes the images (padding to the patch size,
  patch and position embedding, then the blocks up to the first site); segment k
  runs from site k to site k+1 on ``tokens`` (B, P + M, C) with any M; the last one ends
  with the final norm. A site ``before_block`` b cuts before block b; a site
  ``after_attention`` b cuts block b after its attention residual (the segment then
  also outputs the block's keys, mean over heads, when the step compares keys).
* **score graphs** (one per kind of step): the O(M^2 D) similarity part of a merge
  step, computed from the features at the site: ``mutual`` (each token's most
  similar other token, MPM), ``bipartite`` (each even token's best odd partner,
  ToMe / ALGM global), ``windows`` (mean similarity in 2x2 windows, ALGM local).
* **decoder**: the unmerge (one gather with the composed merge map, shape (B, N)),
  the decoder and the bilinear upsampling to the input size.

Every plain attention (no bias, no key mask) of the encoder and decoder graphs is then
fused into ORT's ``com.microsoft.MultiHeadAttention`` (:mod:`mpm.benchmarking.onnx_fusion`),
the dense graph's as well, so the dense baseline gets the same kernel.

The O(M) rest of each merge step runs in NumPy between the sessions
(:mod:`mpm.benchmarking.onnx_merge`); :mod:`mpm.benchmarking.onnx_runtime` runs the
whole chain and needs only onnxruntime and numpy. Everything the runtime needs is in
the output folder: the ``.onnx`` files and ``manifest.json``.

Batches of more than one image with per-image counts (policy ``exact``) are padded
after the first merge: the segments then take ``lengths`` (B,) real image tokens
and mask padded keys in attention, as the PyTorch runner does. Proportional attention
(ToMe's ``prop_attn``) adds a ``bias`` input (B, 1, 1, P + M), log token sizes.

>>> manifest = export_segments(model, build_method("mpm", (2, 5)), images, "out/seg-t-mpm")
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpm.backends import exportable_backends
from mpm.benchmarking.onnx_merge import MergeStep, plan_steps
from mpm.errors import ConfigError
from mpm.merging.algm import window_similarity
from mpm.merging.maps import unmerge, valid_mask
from mpm.merging.tome import bipartite_scores
from mpm.models.decoders import crop_to, upsample
from mpm.models.encoder import block_forward, embed, mlp_forward

OPSET = 17
MANIFEST = "manifest.json"
FORMAT = "mpm.onnx-segments/1"
#: attention backends whose computation exports to plain ONNX ops
EXPORTABLE_BACKENDS = exportable_backends()
EXPORTER = "torch.onnx.export (TorchScript, dynamo=False)"


def check_exportable(method, backend: str, batch_size: int = 1, dtype: str = "float32") -> None:
    """Refuse, in one line, what the segmented export cannot reproduce faithfully."""
    if backend not in EXPORTABLE_BACKENDS:
        raise ConfigError(f"--runtime onnxruntime exports the {' or '.join(EXPORTABLE_BACKENDS)} attention, not "
                          f"backend {backend!r} (a FlashAttention kernel has no ONNX form)")
    if dtype != "float32":
        raise ConfigError(f"--runtime onnxruntime runs float32 only, not {dtype}")
    plan_steps(method)  # a method without an ONNX Runtime path fails here
    if method.identity.merges and method.batch_policy != "exact" and batch_size > 1:
        raise ConfigError(f"--runtime onnxruntime merges each image as if alone (batch policy 'exact'); "
                          f"{method.name} with batch policy {method.batch_policy!r} at batch size {batch_size} "
                          "needs the whole batch's counts (use --runtime torch)")


# --------------------------------------------------------------------------- #
# the pieces
# --------------------------------------------------------------------------- #


def _ops(depth: int) -> list[tuple[int, str]]:
    """The encoder as a sequence of half-blocks: (0, attn), (0, mlp), (1, attn), ..."""
    return [(b, part) for b in range(depth) for part in ("attn", "mlp")]


def _cut(block: int, site: str) -> int:
    """Position in :func:`_ops` where a site cuts the encoder."""
    if site == "before_block":
        return 2 * block
    if site == "after_attention":
        return 2 * block + 1
    raise ConfigError(f"ONNX export: unknown merge site {site!r}")


class EncoderSegment(nn.Module):
    """Half-blocks ``ops`` of the encoder; the first segment embeds, the last applies the norm.

    Inputs (in order, those that apply): ``images`` (first) or ``tokens``; ``lengths`` (masked);
    ``bias`` (biased). Outputs: ``x`` and, with ``keys``, the last attention's keys.
    """

    def __init__(self, model, ops: Sequence[tuple[int, str]], first: bool, last: bool, keys: bool, masked: bool,
                 biased: bool, backend: str) -> None:
        super().__init__()
        self.model, self.ops = model, list(ops)
        self.first, self.last, self.keys, self.masked, self.biased = first, last, keys, masked, biased
        self.backend = backend
        self.num_prefix = model.encoder.num_prefix_tokens

    def input_names(self) -> list[str]:
        names = ["images" if self.first else "tokens"]
        names += ["lengths"] if self.masked else []
        return names + (["bias"] if self.biased else [])

    def output_names(self) -> list[str]:
        return ["x", "keys"] if self.keys else ["x"]

    def forward(self, *inputs: Tensor):
        args = dict(zip(self.input_names(), inputs))
        vit = self.model.encoder
        if self.first:
            images = args["images"]
            h, w = images.shape[-2:]
            p = self.model.patch_size
            ph, pw = -(-h // p) * p, -(-w // p) * p
            if (ph, pw) != (h, w):
                images = F.pad(images, (0, pw - w, 0, ph - h))
            x, _ = embed(vit, images, self.model.config.pos_embed_interpolation)
        else:
            x = args["tokens"]
        lengths = args["lengths"] + self.num_prefix if self.masked else None
        bias = args.get("bias")
        keys = None
        for i, (b, part) in enumerate(self.ops):
            blk = vit.blocks[b]
            if part == "attn":
                want = self.keys and i == len(self.ops) - 1
                x, keys = block_forward(blk, x, backend=self.backend, lengths=lengths, bias=bias, return_keys=want)
            else:
                x = mlp_forward(blk, x)
        if self.last:
            x = vit.norm(x)
        return (x, keys) if self.keys else x


class DecoderHead(nn.Module):
    """Unmerge (one gather with the composed map), decoder, upsampling: ``tokens``, ``index`` -> ``logits``."""

    def __init__(self, model, grid: tuple[int, int], image_size: tuple[int, int], backend: str) -> None:
        super().__init__()
        self.model, self.grid, self.image_size, self.backend = model, tuple(grid), tuple(image_size), backend
        self.num_prefix = model.encoder.num_prefix_tokens

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        tokens = unmerge(x[:, self.num_prefix:], index)
        masks = self.model.decoder(tokens, self.grid, backend=self.backend)
        p = self.model.patch_size
        h, w = self.image_size
        return crop_to(upsample(masks, (self.grid[0] * p, self.grid[1] * p)), h, w)


class _TokenScores(nn.Module):
    """A scoring graph on the image tokens of ``feats`` (B, P + M, D), the prefix's ``P`` tokens skipped;
    ``masked``: it takes the (B,) ``lengths`` of a padded batch too."""

    def __init__(self, num_prefix: int, masked: bool) -> None:
        super().__init__()
        self.num_prefix, self.masked = num_prefix, masked

    def input_names(self) -> list[str]:
        return ["feats", "lengths"] if self.masked else ["feats"]


#: row blocks of MPM's similarity product in the score graph (see :class:`MutualScores`)
MUTUAL_BLOCKS = 3


def _best_along(sim: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Maximum of ``sim`` (B, R, C) along ``dim`` (2: per row, 1: per column) and its first index."""
    index = sim.argmax(dim=dim)
    return sim.gather(dim, index.unsqueeze(dim)).squeeze(dim), index


class MutualScores(_TokenScores):
    """Each image token's most cosine-similar *other* real token (MPM's
    :func:`~mpm.merging.mpm.best_partners`): ``feats`` (B, P + M, D) [, ``lengths``] ->
    ``best`` (B, M) int64, ``score`` (B, M).

    The (M x M) similarity is symmetric, so the tokens are cut into ``blocks`` row blocks
    and each pair of blocks is multiplied once: k(k + 1) / 2 of the k^2 block products
    (3 blocks: 6 of 9). A diagonal block is read along its rows with its diagonal written
    in place (``ScatterND``, no mask); an off-diagonal block along its rows (for the first
    block's tokens) and its columns (for the second's). The candidates of a token are
    then taken in block order, a later block only when strictly greater: the first index
    on ties, as one ``argmax`` over the whole row. ``blocks`` must not exceed the fewest
    tokens the graph will see (an empty block has no maximum)."""

    def __init__(self, num_prefix: int, masked: bool, blocks: int = 1) -> None:
        super().__init__(num_prefix, masked)
        self.blocks = max(int(blocks), 1)

    def forward(self, feats: Tensor, lengths: Tensor | None = None):
        x = feats[:, self.num_prefix:]
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # F.normalize's values, without its Expand
        m, k = x.shape[1], self.blocks
        starts = [m * j // k for j in range(k + 1)]
        parts = [x[:, a:b] for a, b in zip(starts, starts[1:])]
        valid = None if lengths is None else valid_mask(lengths, m, x.shape[0])
        keep = [None if valid is None else valid[:, a:b] for a, b in zip(starts, starts[1:])]
        found: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}  # (rows' block, columns' block) -> best
        for p in range(k):
            for q in range(p, k):
                sim = parts[p] @ parts[q].transpose(1, 2)  # (B, Mp, Mq)
                if p == q:
                    pos = torch.arange(sim.shape[-1], device=x.device)
                    sim[:, pos, pos] = float("-inf")  # j != i
                if keep[q] is not None:
                    sim = sim.masked_fill(~keep[q].unsqueeze(1), float("-inf"))
                found[p, q] = _best_along(sim, 2)
                if p != q:
                    if keep[p] is not None:
                        sim = sim.masked_fill(~keep[p].unsqueeze(2), float("-inf"))
                    found[q, p] = _best_along(sim, 1)
        best, score = [], []
        for p in range(k):
            value, index = found[p, 0]
            for q in range(1, k):
                value_q, index_q = found[p, q]
                later = value_q > value
                value, index = torch.where(later, value_q, value), torch.where(later, index_q + starts[q], index)
            best.append(index)
            score.append(value)
        return torch.cat(best, 1), torch.cat(score, 1)


class BipartiteScores(_TokenScores):
    """ToMe's :func:`~mpm.merging.tome.bipartite_scores` of the image tokens:
    ``feats`` [, ``lengths``] -> ``node_max``, ``node_idx`` (B, ceil(M/2))."""

    def forward(self, feats: Tensor, lengths: Tensor | None = None):
        node_max, node_idx = bipartite_scores(feats[:, self.num_prefix:], lengths)
        return node_max, node_idx


class WindowScores(nn.Module):
    """ALGM's :func:`~mpm.merging.algm.window_similarity` on the full grid: ``feats`` -> ``window_sim`` (B, Nw)."""

    def __init__(self, num_prefix: int, windows: Tensor) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.register_buffer("windows", windows, persistent=False)

    def input_names(self) -> list[str]:
        return ["feats"]

    def forward(self, feats: Tensor):
        return window_similarity(feats[:, self.num_prefix:], self.windows)


#: score graph kind -> (factory(num_prefix, masked, step, fewest), output names); ``fewest``: the
#: fewest image tokens the graph can be fed
SCORE_GRAPHS: dict[str, tuple[Callable[[int, bool, MergeStep, int], nn.Module], tuple[str, ...]]] = {
    "mutual": (lambda p, masked, step, fewest: MutualScores(p, masked, min(MUTUAL_BLOCKS, fewest)),
               ("best", "score")),
    "bipartite": (lambda p, masked, step, fewest: BipartiteScores(p, masked), ("node_max", "node_idx")),
    "windows": (lambda p, masked, step, fewest: WindowScores(p, torch.tensor(step.windows, dtype=torch.long)
                                                     .reshape(-1, step.window_size)), ("window_sim",)),
}


# --------------------------------------------------------------------------- #
# export
# --------------------------------------------------------------------------- #


def export_graph(module: nn.Module, args: tuple, path: Path, input_names: Sequence[str],
                 output_names: Sequence[str], dynamic: dict[str, dict[int, str]] | None = None,
                 fuse: bool = True) -> int:
    """``torch.onnx.export`` with the TorchScript exporter (opset :data:`OPSET`), warnings silenced;
    with ``fuse``, its plain attention chains fused into ORT's ``MultiHeadAttention``
    (:func:`~mpm.benchmarking.onnx_fusion.fuse_attention`). Returns how many were fused."""
    kwargs: dict[str, Any] = dict(input_names=list(input_names), output_names=list(output_names),
                                  opset_version=OPSET, do_constant_folding=True, dynamic_axes=dynamic or None)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
        except TypeError as err:  # torch without the dynamo switch
            if "dynamo" not in str(err):
                raise
            torch.onnx.export(module, args, str(path), **kwargs)
    return fuse_file(path) if fuse else 0


def fuse_file(path: Path) -> int:
    """Fuse the attention of the ONNX file ``path`` in place (written whole, then renamed)."""
    import onnx

    from mpm.benchmarking.onnx_fusion import fuse_attention

    model = onnx.load(str(path))
    fused = fuse_attention(model)
    if fused:
        tmp = path.with_name(path.name + ".tmp")
        onnx.save(model, str(tmp))
        tmp.replace(path)
    return fused


def export_dense(model, example: Tensor, path: str | Path, backend: str = "math", fuse: bool = True) -> float:
    """Export the dense ``model`` as one static graph (``images`` -> ``logits``), its attention
    fused as the segments' is (``fuse``); seconds taken."""
    from mpm.merging import build_method

    class Dense(nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return self.inner(images, method=build_method("none"), backend=backend)

    start = time.perf_counter()
    export_graph(Dense(model), (example,), Path(path), ["images"], ["logits"], fuse=fuse)
    return time.perf_counter() - start


def export_segments(model, method, example: Tensor, out_dir: str | Path, backend: str = "math",
                    fuse: bool = True) -> dict:
    """Export ``model`` with ``method``'s merge sites as segments into ``out_dir``; returns the manifest.

    Args:
        model: a :class:`~mpm.models.segmenter.Segmenter` (float32, eval).
        method: a :class:`~mpm.merging.base.MergeMethod` with an ONNX Runtime path.
        example: (B, 3, H, W) normalised images: fixes the batch size and input size.
        out_dir: folder for the ``.onnx`` files and ``manifest.json`` (created).
        fuse: fuse each plain attention into ORT's ``MultiHeadAttention`` (the manifest
            counts them per file under ``fused_attention``).
    """
    start = time.perf_counter()
    batch = int(example.shape[0])
    check_exportable(method, backend, batch)
    method.validate(model.config.depth)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    vit = model.encoder
    p = model.patch_size
    h, w = (int(v) for v in example.shape[-2:])
    grid = (-(-h // p), -(-w // p))
    n = grid[0] * grid[1]
    num_prefix = vit.num_prefix_tokens
    dim = model.config.embed_dim
    steps = plan_steps(method, grid)
    masked = batch > 1 and bool(steps)
    biased = bool(method.proportional_attention)
    dyn = {1: "tokens"}

    cuts = [_cut(b, site) for b, site, _ in steps]
    bounds = [0, *cuts, 2 * model.config.depth]
    ops = _ops(model.config.depth)
    segments = []
    fused: dict[str, int] = {}
    for k in range(len(bounds) - 1):
        first, last = k == 0, k == len(bounds) - 2
        step = None if last else steps[k][2]
        keys = step is not None and step.metric == "keys"
        if keys and steps[k][1] != "after_attention":
            raise ConfigError(f"{method.name}: a step comparing keys needs an after_attention site")
        seg = EncoderSegment(model, ops[bounds[k]:bounds[k + 1]], first, last, keys, masked and not first,
                             biased and not first, backend)
        args: list[Tensor] = [example] if first else [torch.randn(batch, num_prefix + n, dim)]
        if seg.masked:
            args.append(torch.full((batch,), n, dtype=torch.long))
        if seg.biased:
            args.append(torch.zeros(batch, 1, 1, num_prefix + n))
        dynamic = {} if first else {"tokens": dyn}
        if seg.biased:
            dynamic["bias"] = {3: "tokens"}
        for name in seg.output_names():
            dynamic[name] = dyn
        file = f"segment{k}.onnx"
        fused[file] = export_graph(seg, tuple(args), out / file, seg.input_names(), seg.output_names(), dynamic,
                                   fuse=fuse)
        segments.append({"file": file, "ops": [f"{b}.{part}" for b, part in seg.ops], "inputs": seg.input_names(),
                         "outputs": seg.output_names()})

    sites, score_files = [], {}
    fewest = -(-n // 2 ** max(len(steps) - 1, 0))  # no step removes more than half the tokens
    for k, (b, site, step) in enumerate(steps):
        kind = step.score_graph()
        factory, outputs = SCORE_GRAPHS[kind]
        head = factory(num_prefix, masked, step, fewest)
        key = (kind, json.dumps(step.params(), sort_keys=True) if kind == "windows" else "")
        if key not in score_files:
            file = f"score_{kind}{len(score_files)}.onnx"
            feat_dim = dim if step.metric == "tokens" else vit.blocks[b].attn.head_dim
            args = [torch.randn(batch, num_prefix + n, feat_dim)]
            if "lengths" in head.input_names():
                args.append(torch.full((batch,), n, dtype=torch.long))
            dynamic = {"feats": dyn, **{name: dyn for name in outputs}} if kind != "windows" else None
            export_graph(head, tuple(args), out / file, head.input_names(), outputs, dynamic)
            score_files[key] = file
        sites.append({"block": b, "site": site, "kind": step.kind, "params": step.params(),
                      "score": score_files[key], "metric": step.metric})

    head = DecoderHead(model, grid, (h, w), backend)
    fused["decoder.onnx"] = export_graph(
        head, (torch.randn(batch, num_prefix + n, dim), torch.zeros(batch, n, dtype=torch.long)),
        out / "decoder.onnx", ["tokens", "index"], ["logits"], {"tokens": dyn}, fuse=fuse)
    manifest = {
        "format": FORMAT,
        "opset": OPSET,
        "exporter": EXPORTER,
        "torch": torch.__version__,
        "backend": backend,
        "method": method.describe(),
        "model": model.config.to_dict(),
        "batch_size": batch,
        "image_size": [h, w],
        "grid": list(grid),
        "num_prefix": num_prefix,
        "padded": masked,
        "proportional_attention": biased,
        "uses_size": bool(method.uses_size),
        "segments": segments,
        "sites": sites,
        "decoder": {"file": "decoder.onnx", "inputs": ["tokens", "index"], "outputs": ["logits"]},
        "fused_attention": fused,
        "export_s": round(time.perf_counter() - start, 3),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
