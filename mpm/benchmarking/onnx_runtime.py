"""Run a segmented ONNX export (:mod:`mpm.benchmarking.onnx_export`) with ONNX Runtime.

Needs only onnxruntime and numpy (no torch): what a Raspberry Pi runs in production.
One forward: segment 0 on the images; at each merge site the score graph on the
site's features, then the NumPy step (:mod:`mpm.benchmarking.onnx_merge`) per image,
which also composes the merge map and the token sizes; the next segment on the
merged tokens; finally the decoder with the composed map.

>>> model = SegmentedModel.load("out/seg-t-mpm", threads=4)
>>> out = model(images)              # images: (B, 3, H, W) float32, normalised
>>> out.logits, out.index, out.tokens_left
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import numpy as np

from mpm.benchmarking.onnx_merge import MergeStep, step_from_manifest
from mpm.errors import ConfigError

#: ``timer(section)`` returns a context manager timing that section (``encoder``, ``merge``, ``decoder``)
SectionTimer = Callable[[str], ContextManager]


def _no_timer(name: str) -> ContextManager:
    return contextlib.nullcontext()


#: intra-op size of this process's global ORT thread pool once made (0: ORT's default), None before
_GLOBAL_POOL: list[int | None] = [None]


def shared_thread_pool(threads: int | None) -> bool:
    """Make every later session of this process share one pool of ``threads`` intra-op threads.

    A segmented model runs several sessions one after the other; with a pool per session
    their idle threads would spin beside the running one's. ORT makes the global pool
    once per process, before the first session: returns False (sessions then get their
    own pools) when that is past or the pool has another size.
    """
    import onnxruntime as ort

    want = int(threads or 0)
    if _GLOBAL_POOL[0] is None:
        try:
            ort.set_global_thread_pool_sizes(want, 1)
        except Exception:  # sessions exist already (env made without global pools)
            _GLOBAL_POOL[0] = -1
            return False
        _GLOBAL_POOL[0] = want
    return _GLOBAL_POOL[0] == want


def session_options(threads: int | None = None, spinning: bool = True, shared: bool | None = None):
    """ORT session options: all graph optimisations, ``threads`` intra-op threads, one inter-op thread;
    the process's shared pool where it has that size (``shared=None``: try to make it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if shared is None:
        shared = shared_thread_pool(threads)
    if shared:
        options.use_per_session_threads = False
    elif threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def thread_pool_kind(options) -> str:
    return "per-session" if options.use_per_session_threads else "shared"


class Graph:
    """One ONNX Runtime session fed by name: inputs it does not declare are not passed."""

    def __init__(self, path: Path, options, providers: Sequence[str]) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as err:  # onnxruntime raises its own exception types
            raise ConfigError(f"ONNX Runtime cannot load {path}: {type(err).__name__}: {err}") from err
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {name: feeds[name] for name in self.inputs})
        return dict(zip(self.outputs, values))


@dataclass
class SegmentedOutput:
    """What one forward returns.

    Attributes:
        logits: (B, K, H, W) float32.
        index: (B, N) int64 composed merge map, patch -> slot of the final tokens.
        tokens_left: one (B,) int64 array of image tokens per merge site.
    """

    logits: np.ndarray
    index: np.ndarray
    tokens_left: list[np.ndarray] = field(default_factory=list)


@dataclass
class Site:
    block: int
    site: str
    step: MergeStep
    score: Graph


class SegmentedModel:
    """The sessions of a segmented export and the merge steps between them."""

    def __init__(self, manifest: dict, root: Path, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",), spinning: bool = True,
                 options=None) -> None:
        """``options``: ORT ``SessionOptions`` for every session instead of :func:`session_options`
        of ``threads`` (e.g. with profiling on)."""
        if manifest.get("format") != "mpm.onnx-segments/1":
            raise ConfigError(f"{root}: not an mpm segmented ONNX export (format {manifest.get('format')!r})")
        self.manifest, self.root = manifest, root
        options = options if options is not None else session_options(threads, spinning)
        self.thread_pool = thread_pool_kind(options)
        self.segments = [Graph(root / s["file"], options, providers) for s in manifest["segments"]]
        scores: dict[str, Graph] = {}
        self.sites: list[Site] = []
        for entry in manifest["sites"]:
            if entry["score"] not in scores:
                scores[entry["score"]] = Graph(root / entry["score"], options, providers)
            self.sites.append(Site(entry["block"], entry["site"], step_from_manifest(entry), scores[entry["score"]]))
        self.decoder = Graph(root / manifest["decoder"]["file"], options, providers)
        self.num_prefix = int(manifest["num_prefix"])
        self.num_tokens = int(manifest["grid"][0]) * int(manifest["grid"][1])
        self.batch_size = int(manifest["batch_size"])
        self.padded = bool(manifest["padded"])
        self.biased = bool(manifest["proportional_attention"])
        self.uses_size = bool(manifest["uses_size"])
        self.providers = self.decoder.session.get_providers()

    def graphs(self) -> list[Graph]:
        """Every session of the model: the segments, the score graphs (once each), the decoder."""
        scores = list({id(s.score): s.score for s in self.sites}.values())
        return [*self.segments, *scores, self.decoder]

    @classmethod
    def load(cls, folder: str | Path, **kwargs) -> "SegmentedModel":
        root = Path(folder)
        try:
            manifest = json.loads((root / "manifest.json").read_text())
        except OSError as err:
            raise ConfigError(f"{root / 'manifest.json'}: cannot read: {err.strerror or err}") from None
        except ValueError as err:
            raise ConfigError(f"{root / 'manifest.json'}: not valid JSON: {err}") from None
        return cls(manifest, root, **kwargs)

    # -- one forward ---------------------------------------------------------------------------------------

    def _check(self, images: np.ndarray) -> np.ndarray:
        want = (self.batch_size, 3, *self.manifest["image_size"])
        if tuple(images.shape) != want:
            raise ConfigError(f"segmented ONNX model {self.root}: expects images of shape {want}, "
                              f"got {tuple(images.shape)}")
        return np.ascontiguousarray(images, dtype=np.float32)

    def _feeds(self, x: np.ndarray, lengths: np.ndarray | None, size: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {"tokens": x}
        if lengths is not None:
            feeds["lengths"] = lengths
        if self.biased and size is not None:
            b = x.shape[0]
            with np.errstate(divide="ignore"):
                bias = np.log(np.concatenate([np.ones((b, self.num_prefix), np.float32), size], axis=1))
            feeds["bias"] = bias[:, None, None, :].astype(np.float32)
        return feeds

    def __call__(self, images: np.ndarray, timer: SectionTimer | None = None) -> SegmentedOutput:
        """Forward of (B, 3, H, W) float32 normalised images with the method's merging."""
        timer = timer or _no_timer
        images = self._check(images)
        b, n = images.shape[0], self.num_tokens
        index = np.broadcast_to(np.arange(n, dtype=np.int64), (b, n)).copy()
        lengths = np.full(b, n, dtype=np.int64)
        size = np.ones((b, n), np.float32) if self.uses_size or self.biased else None
        left: list[np.ndarray] = []
        with timer("encoder"):
            out = self.segments[0](images=images)
        for k, site in enumerate(self.sites):
            with timer("merge"):
                feats = out["keys"] if site.step.metric == "keys" else out["x"]
                scores = site.score(feats=feats, lengths=lengths)
                x, index, lengths, size = self._merge(out["x"], site.step, scores, index, lengths, size)
                left.append(lengths.copy())
            with timer("encoder"):
                out = self.segments[k + 1](**self._feeds(x, lengths if self.padded else None, size))
        with timer("decoder"):
            logits = self.decoder(tokens=out["x"], index=index)["logits"]
        return SegmentedOutput(logits, index, left)

    def _merge(self, x: np.ndarray, step: MergeStep, scores: dict[str, np.ndarray], index: np.ndarray,
               lengths: np.ndarray, size: np.ndarray | None):
        """One merge site for every image of the batch: (B, P + M, C) -> (B, P + M', C) (padded if needed)."""
        b, p = x.shape[0], self.num_prefix
        merged, maps, sizes = [], [], []
        for i in range(b):
            li = int(lengths[i])
            per = {name: _image_scores(name, v[i], li) for name, v in scores.items()}
            mi, idx, si = step.apply(x[i, p:p + li], None if size is None else size[i, :li], per)
            merged.append(mi)
            maps.append(idx)
            sizes.append(si if si is not None else (None if size is None else _merge_sizes(size[i, :li], idx, len(mi))))
        new_len = np.array([len(mi) for mi in merged], dtype=np.int64)
        m = int(new_len.max())
        out = np.zeros((b, p + m, x.shape[2]), dtype=x.dtype)
        out[:, :p] = x[:, :p]
        new_size = None if size is None else np.zeros((b, m), np.float32)
        for i in range(b):
            out[i, p:p + new_len[i]] = merged[i]
            index[i] = maps[i][index[i]]
            if new_size is not None:
                new_size[i, :new_len[i]] = sizes[i]
        return out, index, new_len, new_size

    def oracle(self, images: np.ndarray, counts: Sequence[np.ndarray], index: np.ndarray,
               timer: SectionTimer | None = None) -> np.ndarray:
        """The same segments with every merge replaced by keeping the first ``counts[k]`` image tokens
        (zero merge cost): the speed a method with these token counts could reach; logits (B, K, H, W).

        Args:
            counts: per site, (B,) image tokens to keep (e.g. a real run's ``tokens_left``).
            index: (B, N) a composed map into the final count (e.g. the real run's), for the decoder.
        """
        timer = timer or _no_timer
        images = self._check(images)
        p = self.num_prefix
        with timer("encoder"):
            out = self.segments[0](images=images)
        for k, keep in enumerate(counts):
            keep = np.asarray(keep, dtype=np.int64)
            with timer("merge"):
                x = np.ascontiguousarray(out["x"][:, :p + int(keep.max())])
                size = np.ones((x.shape[0], x.shape[1] - p), np.float32) if self.biased else None
            with timer("encoder"):
                out = self.segments[k + 1](**self._feeds(x, keep if self.padded else None, size))
        with timer("decoder"):
            return self.decoder(tokens=out["x"], index=index)["logits"]


def _image_scores(name: str, value: np.ndarray, length: int) -> np.ndarray:
    """The scores of one image's real tokens (``best``/``score``: L; A-token scores: ceil(L/2))."""
    if name in ("best", "score"):
        return value[:length]
    if name in ("node_max", "node_idx"):
        return value[:(length + 1) // 2]
    return value


def _merge_sizes(size: np.ndarray, index: np.ndarray, m: int) -> np.ndarray:
    out = np.zeros(m, np.float32)
    np.add.at(out, index, size)
    return out
