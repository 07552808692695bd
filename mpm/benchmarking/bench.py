"""Time one benchmark point: (model, method, schedule, batch size, backend, dtype, device).

The result is one JSON-ready dict (schema ``mpm.bench/1``): the spec, the
environment, latency statistics over many timed iterations, a breakdown of one
forward pass (patch embedding + encoder, merge steps, unmerge, decoder), the
tokens left after each merge step, GFLOPs from those counts, and the image source.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mpm.environment import describe_environment, soc_temperature_c, throttling_flags
from mpm.benchmarking.images import load_batch_images
from mpm.benchmarking.timing import SectionTimer, summarize, time_calls
from mpm.errors import ConfigError
from mpm.merging import build_method
from mpm.merging.base import MergeMethod
from mpm.models import SegmenterConfig, build_segmenter, check_backend
from mpm.models.segmenter import MODES
from mpm.models.flops import FlopReport, flops_of_run
from mpm.records import BENCH_SCHEMA, SCHEMAS, BenchRecord, model_name_of, resolve_names

SCHEMA = BENCH_SCHEMA
#: JSON schema of a result dict (``mpm.bench/1``)
SCHEMA_FILE = SCHEMAS[BENCH_SCHEMA]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class BenchSpec:
    """One benchmark point.

    ``model`` is a ViT size (``T``, ``S``, ``B``, ``L``: random weights, said so
    in the result) or a checkpoint path (loaded with :func:`mpm.models.checkpoints.load_segmenter`).
    ``names`` holds the config's names of the job (``{"schedule": "2-5", ...}``); the record's
    ``names`` are those, the rest derived (:meth:`resolved_names`).
    """

    images: str
    model: str = "T"
    num_classes: int = 150
    crop: tuple[int, int] | None = None
    method: str = "none"
    schedule: tuple[int, ...] | str = ()  # or "all"
    method_kwargs: dict = field(default_factory=dict)
    batch_policy: str = "exact"
    batch_size: int = 1
    backend: str = "sdpa"
    #: "eager" or "graphs" (CUDA graphs, :class:`mpm.models.segmenter.SegmenterRunner`)
    mode: str = "eager"
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    warmup: int = 10
    iters: int = 50
    breakdown_iters: int = 10
    pool_batches: int = 4
    seed: int = 0
    #: the config's names of the job (:mod:`mpm.records.names`); None: derived from the spec
    names: dict | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["schedule"] = self.schedule if isinstance(self.schedule, str) else list(self.schedule)
        d["crop"] = list(self.crop) if self.crop else None
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BenchSpec":
        """The inverse of :meth:`to_dict` (JSON lists back to tuples).

        Unknown keys and a missing ``images`` raise :class:`ConfigError` naming the key.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"benchmark spec: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"benchmark spec: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(sorted(names))}")
        if data.get("images") is None:
            raise ConfigError("benchmark spec: key 'images' is required")
        d = dict(data)
        try:
            if d.get("crop") is not None:
                d["crop"] = tuple(int(v) for v in d["crop"])
            if not (isinstance(d.get("schedule"), str) and d["schedule"].lower() == "all"):
                d["schedule"] = tuple(int(b) for b in (d.get("schedule") or ()))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"benchmark spec: bad crop/schedule: {err}") from None
        if d.get("method_kwargs") is None:
            d["method_kwargs"] = {}
        return cls(**d)

    def resolved_names(self, blocks: Sequence[int] = ()) -> dict[str, str | None]:
        """The record's ``names``: :attr:`names`, the rest derived (no dataset; the checkpoint's name; an
        empty schedule, the method's own default, is named by the ``blocks`` it resolved to)."""
        random_init = self.model.upper() in ("T", "S", "B", "L")
        return resolve_names(self.names, dataset=None, model=None if random_init else model_name_of(self.model),
                             method=self.method, schedule=self.schedule or tuple(blocks)).to_dict()


def build_model(spec: BenchSpec):
    """The model of a spec and a description of its weights."""
    path = Path(spec.model)
    if spec.model.upper() in ("T", "S", "B", "L"):
        torch.manual_seed(spec.seed)
        overrides = {"image_size": tuple(spec.crop)} if spec.crop else {}
        model = build_segmenter(SegmenterConfig.preset(spec.model, spec.num_classes, **overrides))
        return model, {"weights": "random-init", "seed": spec.seed, "size": spec.model.upper()}
    if path.exists():
        from mpm.models.checkpoints import load_segmenter

        model = load_segmenter(path)
        return model, {"weights": "checkpoint", "checkpoint": str(path), "size": model.config.size_name}
    raise ConfigError(f"model {spec.model!r} is neither a ViT size (T, S, B, L) nor an existing checkpoint file")


def run_point(spec: BenchSpec) -> BenchRecord:
    """Measure one point and return the result dict."""
    if spec.dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {spec.dtype!r}; expected one of {', '.join(DTYPES)}")
    started_utc = _utc_now()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    dtype = DTYPES[spec.dtype]
    check_backend(spec.backend, device, dtype)
    if spec.mode not in MODES:
        raise ConfigError(f"unknown execution mode {spec.mode!r}; expected one of {', '.join(MODES)}")
    if spec.mode == "graphs" and device.type != "cuda":
        raise ConfigError(f"execution mode 'graphs' (CUDA graphs) needs a CUDA device, got {spec.device}")
    temp_before = soc_temperature_c()
    model, weights = build_model(spec)
    model = model.to(device=device, dtype=dtype).eval()
    crop = tuple(spec.crop) if spec.crop else tuple(model.config.image_size)
    method = build_method(spec.method, spec.schedule, depth=model.config.depth, batch_policy=spec.batch_policy,
                          **spec.method_kwargs)
    method.validate(model.config.depth)

    pool, source = load_batch_images(spec.images, spec.batch_size * spec.pool_batches, crop)
    runner = model.runner(method, spec.backend, spec.mode)
    with torch.inference_mode():
        inputs = model.normalize(pool.to(device=device, dtype=dtype)).split(spec.batch_size)
        for x in inputs:  # graphs: capture every batch's graphs before the timing
            runner(x)

        def forward(i: int, timer=None):
            return runner(inputs[i % len(inputs)], timer=timer)

        t0 = time.perf_counter()
        times = time_calls(forward, device, spec.warmup, spec.iters)
        wall = time.perf_counter() - t0

        # under graphs the sections run as graphs of their own (cut around merges, unmerge, decoder)
        timed = model.runner(method, spec.backend, spec.mode, split=True) if spec.mode == "graphs" else runner
        sections = SectionTimer(device)
        for i in range(spec.breakdown_iters + (len(inputs) if spec.mode == "graphs" else 0)):
            if i >= len(inputs) or spec.mode != "graphs":
                sections.calls += 1
                timed(inputs[i % len(inputs)], timer=sections)
            else:
                timed(inputs[i])  # capture
        breakdown = sections.breakdown()

        counts, flops = [], []
        for batch in inputs:
            _, enc = runner(batch, return_encoder=True)
            counts.append(torch.stack(enc.tokens_left, 1).float().cpu() if enc.tokens_left else None)
            flops.extend(flops_of_run(model, batch, method, enc, reduction="none"))
    tokens = _token_summary(counts, crop, model.config.patch_size)
    pads = runner.pad_stats
    execution = {"mode": spec.mode, "graphs": runner._graphs.num_graphs if runner._graphs is not None else 0,
                 "pad_share": (sum(c - r for r, c in pads) / sum(r for r, _ in pads)) if pads else 0.0}
    return result_record(spec, method, model, weights, device, times, breakdown, tokens, flops, source, wall,
                         temp_before, started_utc=started_utc, execution=execution)


def result_record(spec: BenchSpec, method, model, weights: dict, device: torch.device, times: list[float],
                  breakdown: dict, tokens: dict, flops: list, source: dict, wall: float,
                  temp_before: float | None, **extra: Any) -> BenchRecord:
    """The ``mpm.bench/1`` record of a measured point (shared by every runtime)."""
    result = BenchRecord({
        "schema": SCHEMA,
        "names": spec.resolved_names(method.describe()["schedule"]),
        "spec": spec.to_dict(),
        "method": method.describe(),
        "model": {**weights, "config": model.config.to_dict()},
        "environment": describe_environment(device, spec.backend, spec.dtype),
        "timing": summarize(times, spec.batch_size).to_dict(),
        "breakdown_ms": breakdown,
        "tokens": tokens,
        "gflops": FlopReport.combine(flops, "mean").total,
        "image_source": source,
        "wall_s": wall,
        **extra,
        "finished_utc": _utc_now(),  # with started_utc (when the caller gives it): the job's times
    })
    result["environment"].update(soc_temp_before_c=temp_before, soc_temp_after_c=soc_temperature_c(),
                                 throttled=throttling_flags())
    return result  # validated where it is written or fetched: the board that measures it may lack jsonschema


def _utc_now() -> str:
    """Now, UTC, ISO 8601 with milliseconds: ``2026-01-01T12:00:00.123Z``."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _token_summary(counts: list, crop: tuple[int, int], patch: int) -> dict:
    full = (crop[0] // patch) * (crop[1] // patch)
    if not counts or counts[0] is None:
        return {"full": full, "after_step_mean": [], "after_step_std": []}
    allc = torch.cat(counts, 0)  # (images, steps)
    return {
        "full": full,
        "after_step_mean": allc.mean(0).tolist(),
        "after_step_std": allc.std(0, unbiased=False).tolist(),
        "after_step_min": allc.min(0).values.tolist(),
        "after_step_max": allc.max(0).values.tolist(),
    }


def result_schema() -> dict:
    """The JSON schema of ``mpm.bench/1`` results (:data:`SCHEMA_FILE`)."""
    import json

    return json.loads(SCHEMA_FILE.read_text())


def validate_result(result: Any) -> list[str]:
    """Problems of a result dict against :func:`result_schema` (empty when valid).

    Uses ``jsonschema`` when installed; otherwise checks the schema tag and the
    required top-level keys only.
    """
    schema = result_schema()
    try:
        import jsonschema
    except ImportError:
        if not isinstance(result, dict):
            return [f"result is a {type(result).__name__}, not an object"]
        problems = [f"missing key {k!r}" for k in schema["required"] if k not in result]
        if result.get("schema") != SCHEMA:
            problems.append(f"schema is {result.get('schema')!r}, expected {SCHEMA!r}")
        return problems
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(result), key=lambda e: list(map(str, e.absolute_path)))]


class SliceOracle(MergeMethod):
    """The cost floor of a merged model at a method's token counts.

    At each merge site of ``reference`` every image keeps the first ``counts[k][b]``
    of its image tokens: no similarity, no averaging, counts known on the host
    (set :attr:`counts` before each forward). Its time is what any merge method
    reaching those counts at those sites could at best achieve; the unmerge to the
    full grid is kept, as every merged model needs it.

    Args:
        reference: the method whose sites (and site kind) the oracle takes.
        counts: per site, per image, the image tokens kept.
    """

    name = "oracle"
    uses_size = False

    def __init__(self, reference: MergeMethod, counts: list[list[int]] | None = None) -> None:
        super().__init__(reference.schedule, "exact")
        self.site = reference.site  # type: ignore[misc]
        self.reference = reference
        self.counts: list[list[int]] = counts or []
        self._cache: dict[tuple, tuple] = {}

    def static_plan(self, block: int, st, num_prefix: int, packed: bool):
        """The fast runner's protocol for host-known counts: (RowPlan, output Layout), cached per counts."""
        from mpm.merging.mpm import RowPlan
        from mpm.models.encoder import Layout

        k = self.schedule.index(block)
        if k >= len(self.counts) or len(self.counts[k]) != st.batch:
            raise ConfigError(f"oracle: no token counts for site {k} and a batch of {st.batch} (set .counts)")
        counts = tuple(int(c) for c in self.counts[k])
        key = (k, counts, st.layout, packed)
        hit = self._cache.get(key)
        if hit is None:
            dev = st.x.device
            slots = st.layout.slots - num_prefix
            kept = torch.tensor(counts, dtype=torch.long, device=dev)
            j = torch.arange(slots, device=dev)
            dest = torch.minimum(j, kept[:, None] - 1).clamp_(min=0)
            lens = [num_prefix + c for c in counts]
            if packed:
                layout = Layout(st.layout.slots, True, sum(lens) + 1, False)
            else:
                longest = max(lens)
                layout = Layout(longest, False, st.batch * longest, min(lens) == longest)
            hit = self._cache[key] = (RowPlan(dest, None, j < kept[:, None], kept), layout)
        return hit

    def static_key(self) -> tuple:
        """The counts as a hashable key (a CUDA graph is captured per set of counts)."""
        return tuple(tuple(int(c) for c in site) for site in self.counts)

    def merge(self, x, ctx):  # pragma: no cover - the oracle runs in the fast runner only
        raise ConfigError("the slice oracle runs through SegmenterRunner only")

    def describe(self) -> dict:
        return {"method": "oracle", "schedule": list(self.schedule), "of": self.reference.describe()}
