"""Segmenter (Strudel et al. 2021) on a timm ViT encoder, with merge sites.

>>> model = build_segmenter(SegmenterConfig.preset("T", num_classes=150))
>>> logits = model(images, method=build_method("mpm", (2, 5)), backend="math")
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from mpm.errors import ConfigError
from mpm.merging.base import MergeMethod, NoMerge
from mpm.merging.maps import round_up
from mpm.merging.mpm import RowPlan
from mpm.models.decoders import LinearDecoder, MaskTransformer, crop_to, upsample
from mpm.models.encoder import (VARLEN_BACKENDS, EncoderOutput, Layout, RowState, SectionTimer, _no_timer, check_vit,
                                embed, rows_apply, rows_attention, rows_fallback_merge, rows_initial, rows_mlp,
                                rows_unmerge, run_encoder)

#: (embed_dim, depth, num_heads) of the ViT sizes Segmenter uses (patch 16)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "T": (192, 12, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that fixes a Segmenter's architecture and its input normalisation.

    ``mean``/``std`` are per RGB channel on the 0..255 scale (127.5 for
    Segmenter's "vit" normalisation, the same as mean = std = 0.5 on [0, 1]).
    """

    num_classes: int
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: tuple[int, int] = (512, 512)
    decoder: str = "mask_transformer"
    decoder_depth: int = 2
    decoder_dim: int | None = None
    decoder_heads: int | None = None
    decoder_mlp_dim: int | None = None
    encoder_norm_eps: float = 1e-6
    decoder_norm_eps: float = 1e-5
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    drop_path_rate: float = 0.0
    #: resampling of the position embedding for inputs other than ``image_size``
    #: (no antialiasing): "bicubic" as mmsegmentation, "bilinear" as Segmenter's own code
    pos_embed_interpolation: str = "bicubic"

    @classmethod
    def preset(cls, size: str, num_classes: int, **overrides: Any) -> "SegmenterConfig":
        """Seg-T/S/B/L with patch 16 (``size`` in T, S, B, L), mask-transformer decoder."""
        key = size.upper().removeprefix("VIT-").removeprefix("SEG-").split("/")[0]
        if key not in VIT_SIZES:
            raise ConfigError(f"unknown ViT size {size!r}; expected one of {', '.join(VIT_SIZES)}")
        dim, depth, heads = VIT_SIZES[key]
        if key == "L" and "image_size" not in overrides:
            overrides["image_size"] = (640, 640)
        return cls(num_classes=num_classes, embed_dim=dim, depth=depth, num_heads=heads, **overrides)

    @property
    def size_name(self) -> str:
        for name, dims in VIT_SIZES.items():
            if dims == (self.embed_dim, self.depth, self.num_heads):
                return name
        return f"d{self.embed_dim}x{self.depth}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SegmenterConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SegmenterConfig keys: {unknown}")
        data = dict(data)
        for key in ("image_size", "mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class Segmenter(nn.Module):
    """Segmenter: timm ViT encoder (with merge sites) + mask-transformer or linear decoder."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=True,
            class_token=True,
            global_pool="",
            num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=config.encoder_norm_eps),
            dynamic_img_size=True,
            drop_path_rate=config.drop_path_rate,
        )
        check_vit(self.encoder)
        if config.decoder == "mask_transformer":
            dim = config.decoder_dim or config.embed_dim
            self.decoder: nn.Module = MaskTransformer(
                config.num_classes, config.embed_dim, dim, config.decoder_depth,
                config.decoder_heads or max(dim // 64, 1), config.decoder_mlp_dim or 4 * dim,
                norm_eps=config.decoder_norm_eps,
            )
        elif config.decoder == "linear":
            self.decoder = LinearDecoder(config.num_classes, config.embed_dim)
        else:
            raise ConfigError(f"unknown decoder {config.decoder!r}; expected 'mask_transformer' or 'linear'")
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def normalize(self, images_uint8: Tensor) -> Tensor:
        """(B, 3, H, W) images on the 0..255 scale -> model input."""
        return (images_uint8.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def encode(self, images: Tensor, method: MergeMethod | None = None, backend: str = "sdpa",
               timer: SectionTimer | None = None) -> EncoderOutput:
        """Run the encoder on normalised images whose sides are multiples of the patch size."""
        method = method or NoMerge()
        method.validate(self.config.depth)
        return run_encoder(self.encoder, images, method, backend, timer, self.config.pos_embed_interpolation)

    def forward(self, images: Tensor, method: MergeMethod | None = None, backend: str = "sdpa",
                timer: SectionTimer | None = None, return_encoder: bool = False):
        """Class logits (B, K, H, W) of normalised images (B, 3, H, W).

        Like Segmenter's own code, images are zero-padded (in normalised space)
        to a multiple of the patch size and the logits cropped back.
        Sections timed through ``timer``: ``encoder``, ``merge``, ``unmerge``, ``decoder``.
        """
        timer = timer or _no_timer
        h, w = images.shape[-2:]
        p = self.patch_size
        ph, pw = math.ceil(h / p) * p, math.ceil(w / p) * p
        if (ph, pw) != (h, w):
            images = F.pad(images, (0, pw - w, 0, ph - h))
        enc = self.encode(images, method, backend, timer)
        with timer("decoder"):
            masks = self.decoder(enc.tokens, enc.grid, backend=backend)
            logits = crop_to(upsample(masks, (ph, pw)), h, w)
        return (logits, enc) if return_encoder else logits

    def runner(self, method: MergeMethod | None = None, backend: str = "sdpa", mode: str = "eager",
               **kwargs: Any) -> "SegmenterRunner":
        """A :class:`SegmenterRunner` of this model: the fast path, eager or under CUDA graphs."""
        return SegmenterRunner(self, method, backend, mode, **kwargs)


def build_segmenter(config: SegmenterConfig | None = None, **kwargs: Any) -> Segmenter:
    """A randomly initialised Segmenter (``config`` or ``SegmenterConfig(**kwargs)``)."""
    if config is None:
        config = SegmenterConfig(**kwargs)
    elif kwargs:
        config = replace(config, **kwargs)
    return Segmenter(config).eval()


# --------------------------------------------------------------------------- #
# the fast runner: eager, or replayed from CUDA graphs
# --------------------------------------------------------------------------- #

#: execution modes of :class:`SegmenterRunner`
MODES = ("eager", "graphs")
#: under graphs, whether a speculative forward whose every capacity is guessed runs as one graph (the
#: counts copied to the host inside it after the last plan, an event recorded there) instead of one graph
#: per merge interval with a host step at each plan; False (or MPM_FUSE_SPECULATIVE=0): the host steps
#: stay (A/B timings)
FUSE_SPECULATIVE = os.environ.get("MPM_FUSE_SPECULATIVE", "1") != "0"


@dataclass(frozen=True)
class _Host:
    """What the host knows between two pieces of a forward (hashable: a graph's key)."""

    stage: str  # "images" | "rows" | "tokens" | "logits"
    layout: Layout | None = None
    target: Layout | None = None  # the capacity chosen for a pending plan
    plan: tuple[bool, ...] | None = None  # (has_partner,) of a pending plan
    keys: bool = False
    image_hw: tuple[int, int] = (0, 0)
    speculative: bool = False  # a capacity of this forward is a guess (maps are clamped to the rows)
    static: tuple | None = None  # host-side inputs of a method with static counts (the oracle's counts)
    guesses: tuple = ()  # ((site, capacity), ...): a fused speculative forward's capacities (part of its graphs' keys)
    checks: tuple = ()  # ((site, layout before the merge, capacity), ...): the counts it copied out, to check


@dataclass
class _Piece:
    """A run of ops without host work in between (one graph), or a host step."""

    kind: str  # "ops" | "counts" (read a plan's token counts) | "eager" (a merge that syncs)
    ops: list[tuple] = field(default_factory=list)

    @property
    def label(self) -> str:
        names = {op[0] for op in self.ops}
        if names <= {"plan", "counts", "apply", "static", "fallback"}:
            return "merge"
        if names == {"unmerge"}:
            return "unmerge"
        if names == {"decode"}:
            return "decoder"
        return "encoder"


class SegmenterRunner:
    """One method and backend of a :class:`Segmenter`, eager or under CUDA graphs.

    The forward is cut where the host must learn something (a plan's token counts)
    or where a method syncs on its own; each piece in between runs eagerly or is
    captured once per host-side shape into a CUDA graph and replayed.

    * Methods with a device-side plan (MPM, exact batches) decide on the device, the
      host reads the kept-token counts once per step, rounds the capacity up to a
      bucket (``graphs``: a few per step, so few graphs; ``eager``: a multiple of 8 on CUDA,
      the exact count on the CPU)
      and the next piece gathers the merged tokens into a buffer of that capacity.
      Pad rows are excluded from attention (a sequence of their own for
      FlashAttention-2's variable-length mode, masked keys otherwise); their share is
      kept in :attr:`pad_stats`.
    * Methods with static counts (the slice oracle of :mod:`mpm.benchmarking.bench`,
      ToMe with one ``r`` on dense input) stay inside one piece.
    * Any other method runs its plain ``merge`` eagerly between pieces.

    The output is the same as :meth:`Segmenter.forward` (tests/models/test_runner.py).
    Under ``graphs`` the returned tensors are the graphs' own buffers, valid until
    the next call: clone what you keep.

    Args:
        model: the segmenter (its device and dtype are used).
        method: merge method (None: dense).
        backend: attention backend.
        mode: ``"eager"`` or ``"graphs"`` (CUDA only).
        split: cut a piece around every merge step, the unmerge and the decoder
            too, so that :meth:`__call__` with a timer can time them under graphs.
        granularity: capacity buckets (rows, slots); default by mode.
        packed: keep merged batches packed (default: for FlashAttention-2 backends;
            with ``math``/``sdpa`` a testing path that unpacks around attention).
        speculate: go on with the largest capacity seen so far at each step instead of
            waiting for the counts; they are copied to the host asynchronously and
            checked at the end of the forward, which runs again with exact reads when one
            did not fit (results are the same either way: pad rows never reach an image).
            No host sync inside the forward then, in either mode (in eager mode the GPU
            queue is not drained at each merge). Default (None): packed batches of more
            than one image in either mode (the guess pads a batch's total by about 1%;
            NOTES 32) and batch size 1 under graphs (the waits are a large share of a
            short forward); True / False: on / off in every mode and batch size.
    """

    def __init__(self, model: Segmenter, method: MergeMethod | None = None, backend: str = "sdpa",
                 mode: str = "eager", split: bool = False, granularity: tuple[int, int] | None = None,
                 packed: bool | None = None, speculate: bool | None = None) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown execution mode {mode!r}; expected one of {', '.join(MODES)}")
        self.model, self.backend, self.mode = model, backend, mode
        self.method = method or NoMerge()
        self.method.validate(model.config.depth)
        #: merged batches packed back to back (default: with a variable-length attention kernel)
        self.packed = backend in VARLEN_BACKENDS if packed is None else packed
        self.num_prefix = model.encoder.num_prefix_tokens
        self.granularity = granularity
        self.pieces = self._pieces(split)
        #: the same ops with every plan's counts kept inside the graph, copied to the host after the last
        #: plan with an event recorded there (speculative forwards under graphs: one graph for the whole
        #: forward, or one per piece with ``split``; no host step in between)
        self.fused_pieces = self._pieces(split, inline_counts=True)
        self._sites = [piece.ops[0][1] for piece in self.pieces if piece.kind == "counts"]  # blocks whose counts are read
        self._keys = self._merge_kind() in ("inline", "eager")
        self.pad_stats: list[tuple[int, int]] = []  # (real rows, capacity rows) of each planned merge
        self.speculate = speculate
        self.respeculated = 0  # forwards run again because a count did not fit its speculative capacity
        self._guess: dict[int, Layout] = {}  # merge site (block) -> speculative capacity
        self._pinned: dict[tuple[int, int], Tensor] = {}  # (site, batch size) -> pinned copy of its counts
        self._fused: dict[int, tuple] = {}  # batch size -> a fused forward's counts (_fused_counts)
        self._graphs: _GraphCache | None = None
        self._simulate_graphs = False  # tests: graphs mode on the CPU, replay = re-run (tests/models/test_runner.py)

    # ---- the program ---------------------------------------------------- #

    def _merge_kind(self) -> str:
        m = self.method
        if getattr(m, "plans_rows", False):
            if m.site != "before_block":
                raise ConfigError(f"{m.name}: device-side plans are supported before blocks only")
            return "plan"
        if callable(getattr(m, "static_plan", None)):
            return "static"
        if getattr(m, "sync_free_when_dense", False):
            return "inline"
        return "eager"

    def _pieces(self, split: bool, inline_counts: bool = False) -> list[_Piece]:
        """The forward as pieces: runs of ops (a graph each) and host steps. ``inline_counts``: a plan's
        counts are copied out inside a piece instead of read in a host step (speculative forwards)."""
        kind = self._merge_kind()
        ops: list[tuple] = [("embed",)]
        for i in range(self.model.config.depth):
            for site in ("before_block", "after_attention"):
                if site == "after_attention":
                    ops.append(("attn", i))
                if not self.method.active(i, site):
                    continue
                if kind == "plan":
                    ops += [("plan", i), ("counts", i), ("apply", i)]
                elif kind == "static":
                    ops.append(("static", i))
                else:
                    ops.append(("fallback", i, kind == "inline"))
            ops.append(("mlp", i))
        ops += [("norm",), ("unmerge",), ("decode",)]
        pieces: list[_Piece] = [_Piece("ops")]
        for op in ops:
            host_step = (op[0] == "counts" and not inline_counts) or (op[0] == "fallback" and not op[2])
            own = split and op[0] in ("plan", "apply", "static", "fallback", "unmerge", "decode")
            if split and op[0] == "counts" and not host_step:  # inline counts: in its plan's piece
                pieces[-2].ops.append(op)
            elif host_step:
                pieces.append(_Piece("counts" if op[0] == "counts" else "eager", [op]))
                pieces.append(_Piece("ops"))
            elif own:
                pieces += [_Piece("ops", [op]), _Piece("ops")]
            else:
                pieces[-1].ops.append(op)
        return [p for p in pieces if p.ops]

    # ---- running ---------------------------------------------------------- #

    def __call__(self, images: Tensor, timer: SectionTimer | None = None, return_encoder: bool = False,
                 _exact: bool = False):
        """Class logits (B, K, H, W) of normalised images (B, 3, H, W), as :meth:`Segmenter.forward`."""
        timer = timer or _no_timer
        speculate = not _exact and self.speculates(images.shape[0])
        pending: list[tuple] = []
        if self.mode == "graphs" and self._graphs is None:
            if images.device.type != "cuda" and not self._simulate_graphs:
                raise ConfigError(f"execution mode 'graphs' needs a CUDA device, got {images.device}")
            self._graphs = (_SimulatedGraphs if images.device.type != "cuda" else _GraphCache)(self, images)
        h, w = images.shape[-2:]
        p = self.model.patch_size
        ph, pw = math.ceil(h / p) * p, math.ceil(w / p) * p
        if (ph, pw) != (h, w):
            images = F.pad(images, (0, pw - w, 0, ph - h))
        static_key = getattr(self.method, "static_key", None)
        host = _Host("images", image_hw=(h, w), static=static_key() if callable(static_key) else None)
        tensors = {"images": self._graphs.put_input(images) if self._graphs else images}
        fused = (FUSE_SPECULATIVE and speculate and self._graphs is not None and bool(self._sites)
                 and all(i in self._guess for i in self._sites))
        pieces = self.fused_pieces if fused else self.pieces
        if fused:  # every capacity is a guess, copied out and checked after the forward
            host = replace(host, guesses=tuple((i, self._guess[i]) for i in self._sites))
        # a timer whose markers go into the graphs (KernelSections): the graphs time themselves
        marked = self._graphs is not None and getattr(timer, "captures", False)
        with contextlib.ExitStack() as encoder_section:
            if not marked:
                encoder_section.enter_context(timer("encoder"))
            for k, piece in enumerate(pieces):
                site = piece.ops[0][1] if piece.kind == "counts" else None
                if piece.kind == "counts":
                    if speculate and site in self._guess:
                        kept = tensors["plan.kept"]
                        pinned = self._pinned_counts(site, kept)
                        pinned.copy_(kept, non_blocking=True)
                        done = torch.cuda.Event() if kept.is_cuda else None
                        if done is not None:
                            done.record()
                        pending.append((site, host.layout, self._guess[site], pinned, done))
                        host = replace(host, target=self._guess[site], speculative=True)
                    else:
                        host = self._capacity(tensors, host)
                        if speculate:
                            self._guess[site] = self._widen(self._guess.get(site), host.target)
                elif self._graphs is None:  # eager: the ops time themselves
                    tensors, host = self._run_ops(piece.ops, tensors, host, timer, encoder_section.close)
                else:  # graphs: a piece is timed as a whole (split=True gives merges their own pieces)
                    if piece.ops[0][0] == "unmerge":
                        encoder_section.close()
                    cut = piece.label != "encoder" and not marked
                    with timer(piece.label) if cut else contextlib.nullcontext():
                        if piece.kind == "eager":
                            tensors, host = self._run_ops(piece.ops, tensors, host, timer if marked else None)
                            tensors = {n: self._graphs.put((k, "eager"), n, t) for n, t in tensors.items()}
                        else:
                            tensors, host = self._graphs.run(("fused", k) if fused else k, piece, tensors, host,
                                                             last=k == len(pieces) - 1,
                                                             timer=timer if marked else None)
        if fused:  # the counts the graph copied to the host after the last plan (its event says when)
            _, pinned, ready = self._fused_counts(images.shape[0], images.device)
            pending = [(i, layout, guess, pinned[j], ready) for j, (i, layout, guess) in enumerate(host.checks)]
        for site, layout, guess, pinned, done in pending:  # check the speculative capacities
            if done is not None:
                done.synchronize()
            lens = [self.num_prefix + m for m in pinned.tolist()]
            need = self._target(lens, layout)
            if not self._fits(need, guess, sum(lens)):
                self._guess[site] = self._widen(guess, need)
                self.respeculated += 1
                return self(images, timer, return_encoder, _exact=True)
            self.pad_stats.append((sum(lens), guess.rows))
        if not return_encoder:
            return tensors["logits"]
        left = [tensors[f"st.left{k}"] for k in range(sum(n.startswith("st.left") for n in tensors))]
        enc = EncoderOutput(tensors["tokens"], tensors["prefix"], self._grid(host), tensors["st.index"], left)
        return tensors["logits"], enc

    def _pinned_counts(self, site: int, kept: Tensor) -> Tensor:
        """The host buffer that site ``site``'s counts are copied to (pinned on CUDA)."""
        key = (site, kept.shape[0])
        pinned = self._pinned.get(key)
        if pinned is None:
            pinned = self._pinned[key] = torch.empty(kept.shape, dtype=kept.dtype, pin_memory=kept.is_cuda)
        return pinned

    def _fused_counts(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor, object]:
        """Where a fused forward's graph keeps every site's counts: (sites, B) long on the device, its
        pinned host copy (written by the graph after the last plan) and the event the graph records
        then (CUDA; an external event, so that a graph replay records it). Fixed addresses: the
        captured copies write there."""
        bufs = self._fused.get(batch)
        if bufs is None:
            dev = torch.zeros(len(self._sites), batch, dtype=torch.long, device=device)
            pinned = torch.empty(dev.shape, dtype=dev.dtype, pin_memory=dev.is_cuda)
            bufs = self._fused[batch] = (dev, pinned, torch.cuda.Event(external=True) if dev.is_cuda else None)
        return bufs

    @property
    def fused_graphs(self) -> int:
        """CUDA graphs captured of whole speculative forwards (:data:`FUSE_SPECULATIVE`; split: of their first piece)."""
        if self._graphs is None:
            return 0
        return sum(key[0] == ("fused", 0) for key in self._graphs.entries)

    def speculates(self, batch_size: int) -> bool:
        """Whether forwards of ``batch_size`` images run on speculative capacities (``speculate``; only a
        method whose counts are read on the host has any)."""
        if not any(piece.kind == "counts" for piece in self.pieces):
            return False
        if self.speculate is not None:
            return self.speculate
        return (self.mode == "graphs" and batch_size == 1) or (self.packed and batch_size > 1)

    def _grid(self, host: _Host) -> tuple[int, int]:
        p = self.model.patch_size
        h, w = host.image_hw
        return math.ceil(h / p), math.ceil(w / p)

    def _capacity(self, tensors: dict[str, Tensor], host: _Host) -> _Host:
        """Read a plan's kept-token counts (the host sync) and choose the next buffer's capacity."""
        lens = [self.num_prefix + m for m in tensors["plan.kept"].tolist()]
        target = self._target(lens, host.layout)
        self.pad_stats.append((sum(lens), target.rows))
        return replace(host, target=target)

    def _target(self, lens: list[int], layout: Layout) -> Layout:
        """The buffer for images of ``lens`` rows each: packed rows or padded slots rounded up to a bucket."""
        b = len(lens)
        g_rows, g_slots = self._buckets(b, layout)
        if self.packed:
            return Layout(layout.slots, True, round_up(sum(lens) + 1, g_rows), False)  # >= 1 pad row
        longest = max(lens)
        slots = round_up(longest, g_slots)
        return Layout(slots, False, b * slots, slots == longest and min(lens) == longest)

    @staticmethod
    def _fits(need: Layout, guess: Layout, total: int) -> bool:
        """Whether images needing ``need`` fit a speculative ``guess`` (the pad sequence stays within ``max_len``)."""
        if need.packed:
            return need.rows <= guess.rows and guess.rows - total <= guess.slots
        return need.slots <= guess.slots

    @staticmethod
    def _widen(guess: Layout | None, need: Layout) -> Layout:
        """The larger of two capacities, with key masks (a speculative buffer may hold padding)."""
        if guess is None or (need.rows > guess.rows if need.packed else need.slots > guess.slots):
            guess = need
        return replace(guess, uniform=False)

    def _buckets(self, batch: int, layout: Layout) -> tuple[int, int]:
        if self.granularity is not None:
            return self.granularity
        n_all = self.model.encoder.patch_embed.num_patches + self.num_prefix if layout is None else layout.slots
        if self.mode == "eager":  # CUDA: shapes aligned for the matrix units; CPU: exact, so that a
            # single image needs no key mask (on the CPU the mask is one more pass over each N x N logits)
            return (8, 8) if next(self.model.parameters()).device.type == "cuda" else (1, 1)
        g_slots = round_up(max(8, n_all // 64), 8)
        g_rows = min(round_up(max(8, batch * n_all // 64), 8), n_all)
        return g_rows, g_slots

    def _run_ops(self, ops: list[tuple], tensors: dict[str, Tensor], host: _Host,
                 timer: SectionTimer | None = None, encoder_end=None) -> tuple[dict[str, Tensor], _Host]:
        """Run ``ops`` on the state ``(tensors, host)`` and return the new state. No host
        sync unless an op is an eager merge. ``timer`` times the merge, unmerge and
        decoder ops; ``encoder_end()`` is called where the encoder section ends."""
        timer = timer or _no_timer
        model, vit, method, p = self.model, self.model.encoder, self.method, self.num_prefix
        st = None
        if host.layout is not None:
            st = RowState.from_tensors({n[3:]: t for n, t in tensors.items() if n.startswith("st.")}, host.layout)
        plan = None
        if host.plan is not None:
            plan = RowPlan(tensors["plan.dest"], tensors.get("plan.partner"), tensors["plan.survivor"],
                           tensors["plan.kept"])
        keys, target = tensors.get("keys"), host.target
        speculative, checks = host.speculative, host.checks
        out = {n: tensors[n] for n in ("tokens", "prefix") if n in tensors}
        for op in ops:
            name = op[0]
            if name == "embed":
                x, _ = embed(vit, tensors["images"], model.config.pos_embed_interpolation)
                st = rows_initial(x, p, method.uses_size)
            elif name == "attn":
                mid = self._keys and method.active(op[1], "after_attention")
                st, keys = rows_attention(vit.blocks[op[1]], st, self.backend, p,
                                          method.proportional_attention and bool(st.tokens_left), mid)
            elif name == "mlp":
                st = rows_mlp(vit.blocks[op[1]], st)
            elif name == "plan":
                with timer("merge"):
                    view = None if st.layout.packed else st.padded()[:, p:]
                    n_img = None if st.layout.uniform else st.length - p
                    plan = method.plan_rows(st.x, st.start, n_img, p, st.layout.slots - p, view)
            elif name == "counts":  # fused speculative forward: keep the counts on the device, go on with the guess
                with timer("merge"):
                    device_counts, pinned, ready = self._fused_counts(plan.kept.shape[0], plan.kept.device)
                    device_counts[len(checks)].copy_(plan.kept)
                    if len(checks) + 1 == device_counts.shape[0]:  # the last site: all counts to the host, now
                        pinned.copy_(device_counts, non_blocking=True)
                        if ready is not None:
                            ready.record()  # an event node of the graph: the host checks while the rest runs
                    target = dict(host.guesses)[op[1]]
                    checks += ((op[1], st.layout, target),)
                    speculative = True
            elif name == "apply":
                with timer("merge"):
                    st = rows_apply(st, plan, p, target, clamp=speculative)
                plan, target = None, None
            elif name == "static":
                with timer("merge"):
                    static, layout = method.static_plan(op[1], st, p, self.packed)
                    st = rows_apply(st, static, p, layout)
            elif name == "fallback":
                with timer("merge"):
                    if op[2] and not st.layout.uniform:
                        raise ConfigError(f"{method.name}: runs inside a graph only on dense input")
                    st = rows_fallback_merge(st, method, op[1], p, self._grid(host), keys, self.packed,
                                             host_lengths=not op[2])
                keys = None
            elif name == "norm":
                st.x = vit.norm(st.x)
            elif name == "unmerge":
                if encoder_end is not None:
                    encoder_end()
                with timer("unmerge"):
                    out["tokens"], out["prefix"] = rows_unmerge(st, p, clamp=speculative)
            elif name == "decode":
                with timer("decoder"):
                    h, w = host.image_hw
                    grid = self._grid(host)
                    masks = model.decoder(out["tokens"], grid, backend=self.backend)
                    size = (grid[0] * model.patch_size, grid[1] * model.patch_size)
                    out["logits"] = crop_to(upsample(masks, size), h, w)
            else:  # pragma: no cover - the program holds only the ops above
                raise AssertionError(f"unknown op {op!r}")
        if st is not None:
            out.update({f"st.{n}": t for n, t in st.tensors().items()})
        if plan is not None:
            out.update({"plan.dest": plan.dest, "plan.survivor": plan.survivor, "plan.kept": plan.kept})
            if plan.partner is not None:
                out["plan.partner"] = plan.partner
        if keys is not None:
            out["keys"] = keys
        stage = "logits" if "logits" in out else ("tokens" if "tokens" in out else "rows")
        new_host = _Host(stage, st.layout if st is not None else None, target,
                         (plan.partner is not None,) if plan is not None else None, keys is not None, host.image_hw,
                         speculative, host.static, host.guesses, checks)
        return out, new_host


class _GraphCache:
    """CUDA graphs of a runner's pieces, one per (piece, host state), and the buffers between them.

    A piece's inputs are persistent buffers ("mailboxes", allocated once at their
    largest size), so a graph captured with one address reads the outputs of
    whichever graph of the previous piece ran; each graph copies its outputs into
    the next mailboxes as its last step.
    """

    def __init__(self, runner: SegmenterRunner, images: Tensor) -> None:
        self.runner = runner
        self.device = images.device
        self.entries: dict[tuple, tuple] = {}
        self.mail: dict[tuple, Tensor] = {}
        cfg = runner.model.config
        b = images.shape[0]
        n_all = (math.ceil(images.shape[-2] / cfg.patch_size) * math.ceil(images.shape[-1] / cfg.patch_size)
                 + runner.num_prefix)
        self.float_cap = (b * n_all + n_all + 64) * max(cfg.embed_dim, cfg.decoder_dim or cfg.embed_dim)
        self.int_cap = b * (n_all + 2) + 64
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        # one memory pool for all of the runner's graphs: they never run at the same time, and a pool
        # per graph kept every piece's peak reserved at once (a split Seg-L forward at batch 32 under
        # the math backend held 112 GB); outputs stay valid until the next call, as documented
        self.pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None

    def put(self, owner, name: str, t: Tensor) -> Tensor:
        """Copy ``t`` into the mailbox ``(owner, name)``; returns the mailbox view."""
        key = (owner, name, t.dtype)
        buf = self.mail.get(key)
        if buf is None:
            cap = max(t.numel(), self.float_cap if t.is_floating_point() else self.int_cap)
            buf = self.mail[key] = torch.empty(cap, dtype=t.dtype, device=t.device)
        if t.numel() > buf.numel():
            raise RuntimeError(f"graph mailbox {name} holds {buf.numel()} elements, {t.numel()} needed")
        view = buf[: t.numel()].view(t.shape)
        view.copy_(t)
        return view

    def put_input(self, images: Tensor) -> Tensor:
        return self.put("input", "images", images)

    def run(self, k: int, piece: _Piece, inputs: dict[str, Tensor], host: _Host, last: bool, timer=None):
        """Replay the graph of piece ``k`` for ``host`` and these inputs, captured first if new. ``timer``:
        a timer that :attr:`~mpm.benchmarking.timing.KernelSections.captures`, whose section markers are
        captured into the graph (a graph of its own) and logged at each replay."""
        key = (k, host, tuple((n, tuple(t.shape), t.dtype) for n, t in sorted(inputs.items())), timer is not None)
        entry = self.entries.get(key)
        if entry is None:
            marks: list[tuple[bool, str]] = []

            def body(record: bool = False):
                with timer.recording(marks) if record else contextlib.nullcontext():
                    ops_timer, encoder_end = None, None
                    if record:  # the sections' markers inside the graph, the encoder's included
                        ops_timer, encoder_end = timer, lambda: timer.mark(False, "encoder")
                        if piece.ops[0][0] == "embed":
                            timer.mark(True, "encoder")
                    outs, new_host = self.runner._run_ops(piece.ops, inputs, host, ops_timer, encoder_end)
                if not last:
                    outs = {n: self.put(k, n, t) for n, t in outs.items()}
                return outs, new_host

            entry = self.entries[key] = (*self._capture(body, record=timer is not None), marks)
        graph, outs, new_host, marks = entry
        graph.replay()
        if timer is not None:
            timer.replayed(marks)
        return outs, new_host

    def _capture(self, body, record: bool = False):
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for _ in range(2):  # warm-up: lazy initialisation, Triton compilation, cuBLAS workspaces
                body()
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        graph = torch.cuda.CUDAGraph()
        with _no_cyclic_gc(), torch.cuda.graph(graph, pool=self.pool):
            outs, new_host = body(record)
        return graph, outs, new_host

    @property
    def num_graphs(self) -> int:
        return len(self.entries)


@contextlib.contextmanager
def _no_cyclic_gc():
    """Python's cyclic collector off for a capture: a CUDA graph it frees meanwhile (a discarded
    runner's, kept alive by a reference cycle) destroys a graph during the capture, which
    invalidates it (``cudaErrorStreamCaptureInvalidated``); torch >= 2.6 no longer collects first."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _SimulatedGraphs(_GraphCache):
    """Graph semantics on the CPU (tests only): a "replay" re-runs the captured piece on the
    tensors it was captured with and writes into the outputs of the capture, as a CUDA graph
    reads and writes fixed addresses."""

    class _Replay:
        def __init__(self, body, outs) -> None:
            self.body, self.outs = body, outs

        def replay(self) -> None:
            fresh, _ = self.body()
            for name, t in fresh.items():
                if self.outs[name].data_ptr() != t.data_ptr():
                    self.outs[name].copy_(t)

    def _capture(self, body, record: bool = False):
        outs, new_host = body(record)
        return self._Replay(body, outs), outs, new_host
