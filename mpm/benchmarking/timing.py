"""Timers: whole-forward timing statistics and per-section breakdowns.

On CUDA, time is read from CUDA events (no host clock around asynchronous
work); on the CPU from ``time.perf_counter``.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch

from mpm.ratios import Ratio, ratio_stats  # re-exported: the ratios of interleaved timings

__all__ = ["KernelSections", "MarkerMismatch", "Ratio", "SectionTimer", "TimingStats", "credit_kernels", "interleaved",
           "percentile", "profile_kernels", "ratio_stats", "summarize", "time_block", "time_calls"]


@dataclass
class TimingStats:
    """Latency statistics of one benchmark point (milliseconds per batch)."""

    iterations: int
    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    batch_size: int

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch_size / self.median_ms

    @property
    def per_image_ms(self) -> float:
        return self.median_ms / self.batch_size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["images_per_s"] = self.images_per_s
        d["per_image_ms"] = self.per_image_ms
        return d


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in [0, 100])."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    pos = (len(s) - 1) * q / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times_ms: list[float], batch_size: int) -> TimingStats:
    return TimingStats(
        iterations=len(times_ms),
        median_ms=statistics.median(times_ms),
        mean_ms=statistics.fmean(times_ms),
        p10_ms=percentile(times_ms, 10),
        p90_ms=percentile(times_ms, 90),
        min_ms=min(times_ms),
        max_ms=max(times_ms),
        batch_size=batch_size,
    )


def time_calls(fn: Callable[[int], object], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Run ``fn(i)`` ``warmup`` times untimed, then ``iters`` times timed; ms per call."""
    for i in range(warmup):
        fn(i)
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for i, (start, end) in enumerate(events):
            start.record()
            fn(warmup + i)
            end.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for i in range(iters):
            t0 = time.perf_counter()
            fn(warmup + i)
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


class SectionTimer:
    """Accumulates named sections of a forward pass (usable as the runner's ``timer``).

    ``timer("merge")`` is a context manager. Sections may nest (``merge`` runs
    inside ``encoder``); :meth:`breakdown` reports the exclusive figures.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self._pending: list[tuple[str, object, object]] = []
        self.totals: dict[str, float] = defaultdict(float)
        self.calls = 0

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._pending.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.totals[name] += (time.perf_counter() - t0) * 1000.0

    def flush(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)
            for name, start, end in self._pending:
                self.totals[name] += start.elapsed_time(end)  # type: ignore[attr-defined]
            self._pending.clear()

    def breakdown(self) -> dict[str, float]:
        """Mean ms per forward: patch embedding + encoder blocks, merge, unmerge, decoder."""
        self.flush()
        n = max(self.calls, 1)
        merge = self.totals.get("merge", 0.0)
        return {
            "embed_and_encoder_ms": (self.totals.get("encoder", 0.0) - merge) / n,
            "merge_ms": merge / n,
            "unmerge_ms": self.totals.get("unmerge", 0.0) / n,
            "decoder_ms": self.totals.get("decoder", 0.0) / n,
        }


class MarkerMismatch(RuntimeError):
    """The section markers on a profiled stream do not match the boundaries logged on the host."""


def credit_kernels(kernels: list[tuple[str, float]], log: list[tuple[bool, str]], marker: str,
                   by_kernel: dict[str, dict[str, list]] | None = None) -> tuple[dict[str, float], float, int]:
    """Kernel ms per section from one stream's kernels in order, (name, ms), among which every kernel
    whose name holds ``marker`` is the boundary ``log[i]`` ((entering, section), in launch order).

    ``by_kernel``: filled with ``{section: {kernel name: [ms, launches]}}``, each kernel under its
    innermost open section only. Returns (ms per section, each kernel credited to every section open
    around it; all kernel ms, markers excluded; markers seen). Raises :class:`MarkerMismatch` when the
    markers do not match the log.
    """
    totals: dict[str, float] = defaultdict(float)
    open_sections: list[str] = []
    total, seen = 0.0, 0
    for name, ms in kernels:
        if marker in name:
            if seen >= len(log):
                raise MarkerMismatch(f"KernelSections: more markers on the stream than the {len(log)} "
                                   "section boundaries logged")
            entering, section = log[seen]
            seen += 1
            if entering:
                open_sections.append(section)
            elif open_sections and open_sections[-1] == section:
                open_sections.pop()
            else:
                raise MarkerMismatch(f"KernelSections: marker {seen} leaves '{section}', which is not the "
                                   "innermost open section")
            continue
        total += ms
        for section in set(open_sections):
            totals[section] += ms
        if by_kernel is not None and open_sections:
            entry = by_kernel.setdefault(open_sections[-1], {}).setdefault(name, [0.0, 0])
            entry[0] += ms
            entry[1] += 1
    if seen != len(log):
        raise MarkerMismatch(f"KernelSections: {seen} markers on the stream, {len(log)} section boundaries logged")
    return dict(totals), total, seen


class KernelSections(SectionTimer):
    """A :class:`SectionTimer` that sums GPU *kernel* time per section instead of elapsed time.

    Entering and leaving a section launches a marker kernel (``torch.cuda._sleep(0)``) on the
    stream and logs the boundary on the host; :meth:`profile` runs forwards under
    ``torch.profiler`` and walks the stream's kernels in order, crediting each to the sections
    open at its place between the markers. That needs no link from a kernel to the code that
    launched it, which the profiler does not give for the kernels of a CUDA-graph replay (nor for
    Triton's launches). Markers can be captured *inside* a CUDA graph (:attr:`captures`): the
    runner records the boundaries a capture made (:meth:`recording`) and logs them again at each
    replay (:meth:`replayed`), so the graphs profiled are the same graphs as the timed ones, with
    no cut. :attr:`kernel_ms` is all kernel (and copy) time of the profiled calls, markers
    excluded, so a section's share of it is its share of the forward's GPU work. On the CPU every
    figure is 0.
    """

    MARKER = "spin_kernel"  # the kernel of torch.cuda._sleep
    #: the runner may capture this timer's markers into its CUDA graphs (a SectionTimer's events may not)
    captures = True

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.kernel_ms = 0.0
        self.ranges: dict[str, int] = defaultdict(int)  # section -> times entered
        self.by_kernel: dict[str, dict[str, list]] = {}  # section -> kernel name -> [ms, launches]
        self._log: list[tuple[bool, str]] = []  # (entering, section), in launch order
        self._recording: list[tuple[bool, str]] | None = None

    def mark(self, entering: bool, name: str) -> None:
        """Enter or leave section ``name``: a marker kernel on the current stream, the boundary logged
        (or kept for the capture being recorded)."""
        if self._recording is not None:
            self._recording.append((entering, name))
        else:
            self._logged(entering, name)
        if self._cuda:
            torch.cuda._sleep(0)

    def _logged(self, entering: bool, name: str) -> None:
        self._log.append((entering, name))
        if entering:
            self.ranges[name] += 1

    @contextlib.contextmanager
    def recording(self, marks: list[tuple[bool, str]]) -> Iterator[None]:
        """The boundaries marked inside go to ``marks`` instead of the log (a CUDA-graph capture: its
        markers run at every replay, which then logs them with :meth:`replayed`)."""
        marks.clear()
        self._recording = marks
        try:
            yield
        finally:
            self._recording = None

    def replayed(self, marks: list[tuple[bool, str]]) -> None:
        """Log the boundaries of a replayed capture (:meth:`recording`), in their order."""
        for entering, name in marks:
            self._logged(entering, name)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.mark(True, name)
        try:
            yield
        finally:
            self.mark(False, name)

    @contextlib.contextmanager
    def profile(self) -> Iterator[None]:
        """Profile the calls inside; their kernels are credited when it exits. Raises :class:`MarkerMismatch`
        when the profiled stream's markers do not match the sections entered and left."""
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        self._log.clear()
        if not self._cuda:
            yield
            return
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            yield
            torch.cuda.synchronize(self.device)
        events = sorted((e for e in prof.events() if e.device_type == DeviceType.CUDA),
                        key=lambda e: e.time_range.start)
        totals, self.kernel_ms, _ = credit_kernels(
            [(e.name, e.time_range.elapsed_us() / 1000.0) for e in events], self._log, self.MARKER, self.by_kernel)
        for name, ms in totals.items():
            self.totals[name] += ms

    def flush(self) -> None:
        """Nothing pending: :meth:`profile` credits the kernels."""

    def breakdown(self) -> dict[str, float]:
        """:meth:`SectionTimer.breakdown` in kernel ms per call, with ``kernel_ms``: all kernel time per call."""
        return {**super().breakdown(), "kernel_ms": self.kernel_ms / max(self.calls, 1)}

    def top_kernels(self, section: str, n: int = 8, width: int = 90) -> list[list]:
        """The ``n`` kernels of most time whose innermost section was ``section``: [name (cut to
        ``width``), ms per call, launches per call], most time first."""
        calls = max(self.calls, 1)
        rows = sorted(self.by_kernel.get(section, {}).items(), key=lambda kv: -kv[1][0])[:n]
        return [[name[:width], ms / calls, launches / calls] for name, (ms, launches) in rows]


def profile_kernels(call: Callable[[int, KernelSections], object], n: int, device: torch.device,
                    warmup: int = 2) -> KernelSections:
    """The :class:`KernelSections` of one profiled pass of ``call(i, timer)`` over ``i < n``, after
    ``warmup`` passes with throwaway timers (so that a runner captures its marked graphs and settles
    its speculative guesses before the profile, not inside it). ``calls`` is ``n``. Raises
    :class:`MarkerMismatch` as :meth:`KernelSections.profile`."""
    for _ in range(warmup):
        for i in range(n):
            call(i, KernelSections(device))
    sections = KernelSections(device)
    with sections.profile():
        for i in range(n):
            call(i, sections)
            sections.calls += 1
    return sections


def time_block(fn: Callable[[int], object], device: torch.device, iters: int, offset: int = 0,
               cpu_ms: list[float] | None = None) -> float:
    """Mean ms per call of ``fn(offset + i)`` over ``iters`` back-to-back calls (events on CUDA).

    On the CPU, ``cpu_ms`` (if given) also receives the process's CPU time per call, which
    other processes' load barely moves (a complement to wall-clock on a shared machine)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for i in range(iters):
            fn(offset + i)
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / iters
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(iters):
        fn(offset + i)
    wall = (time.perf_counter() - t0) * 1000.0 / iters
    if cpu_ms is not None:
        cpu_ms.append((time.process_time() - c0) * 1000.0 / iters)
    return wall


def interleaved(variants: dict[str, Callable[[int], object]], device: torch.device, iters: int, repeats: int,
                warmup: int = 1, cpu_ms: dict[str, list[float]] | None = None,
                per_call: bool | None = None,
                on_round: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Time the variants in turn: ``repeats`` rounds of ``iters`` calls of each.

    ``per_call`` (default on the CPU): within a round, call ``i`` of every variant runs back to
    back (``fn(i)`` of a, b, c, then of b, c, a, ...: the order rotates), so a slow spell of a
    shared machine hits the variants alike; otherwise (default on CUDA) each variant runs its
    ``iters`` calls as one block between events (a, a, b, b, ...). The per-round ratios
    (:func:`ratio_stats`) show how much the comparison moves. Returns ms per call, one entry per
    round, per variant; on the CPU ``cpu_ms`` (if given) receives the process CPU time likewise.
    ``on_round(r)`` is called after each round (progress).
    """
    for fn in variants.values():
        for i in range(warmup):
            fn(i)
    out: dict[str, list[float]] = {name: [] for name in variants}
    if per_call is None:
        per_call = device.type == "cpu"
    names = list(variants)
    for r in range(repeats):
        if not per_call:
            for name, fn in variants.items():
                sink = cpu_ms.setdefault(name, []) if cpu_ms is not None and device.type == "cpu" else None
                out[name].append(time_block(fn, device, iters, cpu_ms=sink))
            if on_round is not None:
                on_round(r)
            continue
        wall = dict.fromkeys(names, 0.0)
        cpu = dict.fromkeys(names, 0.0)
        for i in range(iters):
            shift = (r * iters + i) % len(names)
            for name in names[shift:] + names[:shift]:
                sink: list[float] = []
                wall[name] += time_block(variants[name], device, 1, offset=i, cpu_ms=sink)
                cpu[name] += sink[0] if sink else 0.0
        for name in names:
            out[name].append(wall[name] / iters)
            if cpu_ms is not None and device.type == "cpu":
                cpu_ms.setdefault(name, []).append(cpu[name] / iters)
        if on_round is not None:
            on_round(r)
    return out
