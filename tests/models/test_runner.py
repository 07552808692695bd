"""The fast runner (SegmenterRunner) gives the plain forward's results, eager and under (simulated) graphs."""

from __future__ import annotations

import pytest
import torch

from mpm.benchmarking.bench import SliceOracle
from mpm.benchmarking.timing import KernelSections, MarkerMismatch, SectionTimer, credit_kernels, profile_kernels
from mpm.errors import ConfigError
from mpm.merging import build_method
from mpm.models import SegmenterConfig, build_segmenter

CASES = {
    "none": ("none", (), {}),
    "mpm": ("mpm", (2, 5), {}),
    "mpm-early": ("mpm", (0, 1, 2), {}),
    "mpm-batch-min": ("mpm", (2, 5), {"batch_policy": "batch-min"}),
    "tome": ("tome", tuple(range(12)), {"r": 4}),
    "algm": ("algm", (), {}),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_segmenter(SegmenterConfig.preset("T", num_classes=6, image_size=(128, 128))).double()


def _images(b: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(b, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(128, 128), mode="bilinear")
    return (x + 0.05 * torch.randn(b, 3, 128, 128, generator=g)).double()


def _method(key: str):
    name, sched, kwargs = CASES[key]
    return build_method(name, sched, **kwargs)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("key", list(CASES))
def test_eager_runner_equals_plain_forward(model, key: str, packed: bool) -> None:
    method = _method(key)
    x = _images(4, 1)
    runner = model.runner(method, backend="math", packed=packed)
    with torch.no_grad():
        ref, ref_enc = model(x, method=method, backend="math", return_encoder=True)
        out, enc = runner(x, return_encoder=True)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert torch.equal(enc.index, ref_enc.index)
    assert [t.tolist() for t in enc.tokens_left] == [t.tolist() for t in ref_enc.tokens_left]
    torch.testing.assert_close(enc.tokens, ref_enc.tokens, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(enc.prefix, ref_enc.prefix, rtol=1e-10, atol=1e-10)
    if key.startswith("mpm") and key != "mpm-batch-min":
        assert len(set(enc.tokens_left[0].tolist())) > 1, "test images should keep different counts"
        assert [p.kind for p in runner.pieces].count("counts") == len(method.schedule)  # one host read per step


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("key", ["none", "mpm", "tome", "algm"])
def test_graphs_replay_equals_plain_forward(model, key: str, packed: bool) -> None:
    """Pieces captured once per host state and replayed on other images give each image's own result."""
    method = _method(key)
    runner = model.runner(method, backend="math", mode="graphs", packed=packed, granularity=(16, 16))
    runner._simulate_graphs = True  # replay = re-run on the captured buffers (same address semantics)
    split = model.runner(method, backend="math", mode="graphs", packed=packed, split=True)
    split._simulate_graphs = True
    with torch.no_grad():
        for seed in (1, 2, 1, 3, 2):
            x = _images(3, seed)
            ref, ref_enc = model(x, method=method, backend="math", return_encoder=True)
            out, enc = runner(x, return_encoder=True)
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
            assert torch.equal(enc.index, ref_enc.index)
            torch.testing.assert_close(split(x), ref, rtol=1e-10, atol=1e-10)
    entries = runner._graphs.num_graphs
    with torch.no_grad():
        runner(_images(3, 1))
    assert runner._graphs.num_graphs == entries  # a seen host state reuses its graphs
    if key == "mpm":
        assert all(cap >= real and cap % 16 == 0 for real, cap in runner.pad_stats)  # rounded capacities
        assert "merge" in [p.label for p in split.pieces] and split.pieces[-1].label == "decoder"


def test_batch_one_and_uneven_input(model) -> None:
    method = _method("mpm")
    x = _images(1, 5)[..., :120, :100]  # padded to the patch size inside
    with torch.no_grad():
        ref = model(x, method=method, backend="math")
        for packed in (False, True):
            out = model.runner(method, backend="math", packed=packed)(x)
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
            assert out.shape == (1, 6, 120, 100)


def test_cpu_batch_one_has_no_pad_rows_or_key_mask(model, monkeypatch) -> None:
    """Eager on the CPU a single image's capacity is its exact count: no pad row, and every
    attention after a merge runs without a key mask (which would be one more N x N pass)."""
    import importlib

    attention = importlib.import_module("mpm.models.attention")  # the module, not its function
    masked = []
    plain_math = attention._math

    def spy(q, k, v, lengths, bias, scale):
        masked.append(lengths is not None)
        return plain_math(q, k, v, lengths, bias, scale)

    monkeypatch.setattr(attention, "_math", spy)
    method = _method("mpm")
    runner = model.runner(method, backend="math")
    with torch.no_grad():
        for seed in (1, 2, 3):
            x = _images(1, seed)
            torch.testing.assert_close(runner(x), model(x, method=method, backend="math"), rtol=1e-10, atol=1e-10)
    assert runner.pad_stats and all(real == cap for real, cap in runner.pad_stats)
    assert any(real % 8 for real, _ in runner.pad_stats), "a count off the old multiple-of-8 bucket, please"
    assert masked and not any(masked)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("key", ["mpm", "tome", "algm"])
def test_slice_oracle_keeps_the_method_counts(model, key: str, packed: bool) -> None:
    method = _method(key)
    x = _images(4, 2)
    with torch.no_grad():
        _, enc = model(x, method=method, backend="math", return_encoder=True)
        counts = [t.tolist() for t in enc.tokens_left]
        oracle = SliceOracle(method, counts)
        out, oenc = model.runner(oracle, backend="math", packed=packed)(x, return_encoder=True)
    assert [t.tolist() for t in oenc.tokens_left] == counts
    assert out.shape == (4, 6, 128, 128) and torch.isfinite(out).all()
    # every patch goes to one of the first counts[-1][b] tokens of its image, in order
    last = torch.tensor(counts[-1])
    assert (oenc.index < last[:, None]).all() and (oenc.index.diff(dim=1) >= 0).all()
    with pytest.raises(ConfigError, match="no token counts"), torch.no_grad():
        model.runner(SliceOracle(method), backend="math", packed=packed)(x)


def test_slice_oracle_under_graphs_follows_its_counts(model) -> None:
    """One graph per set of counts: switching counts between calls switches the slice."""
    method = _method("mpm")
    oracle = SliceOracle(method)
    runner = model.runner(oracle, backend="math", mode="graphs")
    runner._simulate_graphs = True
    x = _images(2, 4)
    with torch.no_grad():
        for counts in ([[50, 40], [40, 30]], [[60, 45], [33, 30]], [[50, 40], [40, 30]]):
            oracle.counts = counts
            _, enc = runner(x, return_encoder=True)
            assert [t.tolist() for t in enc.tokens_left] == counts
    assert runner._graphs.num_graphs == 2


def test_section_timer_sees_merge_and_unmerge(model) -> None:
    x = _images(2, 3)
    sections = SectionTimer(torch.device("cpu"))
    runner = model.runner(_method("mpm"), backend="math")
    with torch.no_grad():
        runner(x, timer=sections)
    sections.calls = 1
    bd = sections.breakdown()
    assert set(bd) == {"embed_and_encoder_ms", "merge_ms", "unmerge_ms", "decoder_ms"}
    assert all(v > 0 for v in bd.values())


def test_kernel_sections_credit_the_runner_s_sections(model) -> None:
    """The profiled sections (speed.py's kernel share on CUDA): every section of a forward is a range
    the profiler sees by name; on the CPU no kernel time is credited to any."""
    x = _images(2, 3)
    sections = KernelSections(torch.device("cpu"))
    runner = model.runner(_method("mpm"), backend="math")
    with torch.no_grad(), sections.profile():
        runner(x, timer=sections)
    sections.calls = 1
    assert set(sections.ranges) == {"encoder", "merge", "unmerge", "decoder"}
    assert sections.ranges["encoder"] == 1 and sections.ranges["merge"] >= 2
    assert sections.breakdown() == {"embed_and_encoder_ms": 0.0, "merge_ms": 0.0, "unmerge_ms": 0.0,
                                    "decoder_ms": 0.0, "kernel_ms": 0.0}


def _sections(log: list[tuple[bool, str]]) -> list[tuple[bool, str]]:
    """A boundary log with each leave-then-re-enter of one section joined (a fused forward's merge runs
    its plan, counts and apply as three merge sections back to back)."""
    out: list[tuple[bool, str]] = []
    for entering, name in log:
        if entering and out and out[-1] == (False, name):
            out.pop()
        else:
            out.append((entering, name))
    return out


@pytest.mark.parametrize("speculate", [False, True])
def test_kernel_sections_captured_in_graphs_log_the_eager_boundaries(model, speculate: bool) -> None:
    """KernelSections under graphs (markers captured inside the graphs, logged again at each replay,
    no cut): every forward logs the sections an eager forward logs, in the same order."""
    x = _images(2, 3)
    logs, ranges = {}, {}
    for mode in ("eager", "graphs"):
        runner = model.runner(_method("mpm"), backend="math", mode=mode, speculate=speculate, granularity=(1, 1))
        runner._simulate_graphs = mode == "graphs"
        sections = KernelSections(torch.device("cpu"))
        with torch.no_grad():
            for _ in range(3):
                runner(x, timer=sections)
        logs[mode], ranges[mode] = _sections(sections._log), dict(sections.ranges)
        if mode == "graphs":
            assert runner.fused_graphs == (1 if speculate else 0) and runner.respeculated == 0
            graphs = runner._graphs.num_graphs
            runner(x)  # a call without the timer replays graphs of its own, without markers
            assert runner._graphs.num_graphs > graphs
    assert logs["graphs"] == logs["eager"]
    assert logs["eager"][:2] == [(True, "encoder"), (True, "merge")] and logs["eager"].count((True, "unmerge")) == 3
    assert ranges["graphs"]["encoder"] == ranges["eager"]["encoder"] == 3
    assert ranges["graphs"]["merge"] >= ranges["eager"]["merge"] >= 6


def test_profile_kernels_warms_up_then_profiles_one_pass() -> None:
    """speed.py's and kernel_census.py's kernel pass: warm-up passes with throwaway timers (graph
    captures and guesses settle outside the profile), then one pass with the returned timer."""
    seen = []
    sections = profile_kernels(lambda i, timer: seen.append((i, timer)), 3, torch.device("cpu"))
    assert [i for i, _ in seen] == [0, 1, 2] * 3 and sections.calls == 3
    assert all(t is sections for _, t in seen[6:]) and not any(t is sections for _, t in seen[:6])
    assert len({id(t) for _, t in seen[:6]}) == 6


def test_kernels_are_credited_between_the_section_markers() -> None:
    """The stream walk of KernelSections: each kernel goes to every section open around it (nested
    sections), markers are no kernel time, and markers that do not match the log are an error."""
    log = [(True, "encoder"), (True, "merge"), (False, "merge"), (False, "encoder"), (True, "decoder"),
           (False, "decoder")]
    m = "void at::cuda::spin_kernel(long)"
    stream = [("embed", 1.0), (m, 9.0), ("attn", 2.0), (m, 9.0), ("best_partner", 0.5), ("gather", 0.25),
              (m, 9.0), ("mlp", 3.0), (m, 9.0), ("between", 0.125), (m, 9.0), ("decode", 4.0), (m, 9.0)]
    totals, total, seen = credit_kernels(stream, log, "spin_kernel")
    assert totals == {"encoder": 5.75, "merge": 0.75, "decoder": 4.0} and total == 10.875 and seen == 6
    by_kernel: dict = {}
    credit_kernels(stream + [(m, 9.0), ("decode", 2.0), (m, 9.0)], log + log[-2:], "spin_kernel", by_kernel)
    assert by_kernel == {"encoder": {"attn": [2.0, 1], "mlp": [3.0, 1]},  # embed and between: no section open
                         "merge": {"best_partner": [0.5, 1], "gather": [0.25, 1]}, "decoder": {"decode": [6.0, 2]}}
    with pytest.raises(MarkerMismatch, match="5 markers on the stream, 6 section boundaries"):
        credit_kernels(stream[:-1], log, "spin_kernel")
    with pytest.raises(MarkerMismatch, match="not the innermost open section"):
        credit_kernels(stream, [log[0], log[1], log[3], log[2], *log[4:]], "spin_kernel")


def test_modes_and_devices_are_checked(model) -> None:
    with pytest.raises(ConfigError, match="unknown execution mode 'fast'"):
        model.runner(None, backend="math", mode="fast")
    with pytest.raises(ConfigError, match="'graphs' needs a CUDA device"):
        model.runner(None, backend="math", mode="graphs")(_images(1, 0))
    with pytest.raises(ConfigError, match="out of range"):
        model.runner(build_method("mpm", (2, 30)), backend="math")


@pytest.mark.parametrize("mode", ["graphs", "eager"])
@pytest.mark.parametrize("packed", [False, True])
def test_speculative_capacities_give_the_same_results(model, packed: bool, mode: str) -> None:
    """Going on with the largest capacity seen (counts checked at the end; a miss runs again exactly),
    under graphs and in eager mode."""
    method = _method("mpm")
    runner = model.runner(method, backend="math", mode=mode, packed=packed, speculate=True, granularity=(1, 1))
    runner._simulate_graphs = mode == "graphs"
    images = [_images(1, s) for s in range(6)]
    with torch.no_grad():
        kept = [model(x, method=method, backend="math", return_encoder=True)[1].tokens_left[0].item() for x in images]
        order = sorted(range(6), key=lambda i: kept[i])  # growing counts: every new maximum misses the guess
        for i in order + order[::-1]:
            ref, ref_enc = model(images[i], method=method, backend="math", return_encoder=True)
            out, enc = runner(images[i], return_encoder=True)
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
            assert torch.equal(enc.index, ref_enc.index)
    assert runner.respeculated >= 1  # a larger count than guessed was caught and run again
    assert all(cap >= real for real, cap in runner.pad_stats)
    assert any(cap > real + 1 for real, cap in runner.pad_stats)  # some forwards ran on a guess with pad rows
    if mode == "graphs":  # once every site had a guess, whole forwards ran as one graph, counts kept inside
        assert len(runner.fused_pieces) == 1 and len(runner.pieces) == 5
        assert runner.fused_graphs >= 1
        assert all(len(key[1].guesses) == 2 for key in runner._graphs.entries if key[0] == ("fused", 0))


def test_speculation_without_whole_forward_graphs(model, monkeypatch) -> None:
    """FUSE_SPECULATIVE off (the A/B setting): one graph per merge interval, the same outputs."""
    from mpm.models import segmenter

    monkeypatch.setattr(segmenter, "FUSE_SPECULATIVE", False)
    method = _method("mpm")
    runner = model.runner(method, backend="math", mode="graphs", packed=True, speculate=True, granularity=(1, 1))
    runner._simulate_graphs = True
    with torch.no_grad():
        for s in (0, 1, 0):
            x = _images(1, s)
            torch.testing.assert_close(runner(x), model(x, method=method, backend="math"), rtol=1e-10, atol=1e-10)
    assert runner._graphs.num_graphs > 0 and runner.fused_graphs == 0


def test_default_speculation_policy(model) -> None:
    """Default: packed batches of more than one image, and batch 1 under graphs; never for a method
    without host-read counts; an explicit setting wins everywhere."""
    method = _method("mpm")
    packed = model.runner(method, backend="math", mode="eager", packed=True)
    padded = model.runner(method, backend="math", mode="eager", packed=False)
    graphs = model.runner(method, backend="math", mode="graphs", packed=False)
    assert packed.speculates(32) and not packed.speculates(1)
    assert not padded.speculates(32) and not padded.speculates(1)
    assert graphs.speculates(1) and not graphs.speculates(32)
    assert not model.runner(None, backend="math", mode="graphs").speculates(1)  # dense: no counts to guess
    assert not model.runner(method, backend="math", mode="graphs", speculate=False).speculates(1)
    assert model.runner(method, backend="math", mode="eager", packed=False, speculate=True).speculates(1)
