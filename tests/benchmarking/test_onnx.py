"""The ONNX Runtime path: dense graph, segmented export with MPM / ToMe / ALGM, NumPy merge steps.

onnx and onnxruntime come with the ``dev`` extra (the README's install line), so nothing
here is skipped: a missing package fails the tests that need it, and the tests of the
"missing package" message simulate the absence instead of depending on it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mpm.benchmarking.bench import validate_result
from mpm.benchmarking.onnx import check_onnx_spec
from mpm.benchmarking.onnx_merge import ALGMGlobalStep, ALGMLocalStep, MPMStep, ToMeStep, plan_steps
from mpm.cli.bench import main as bench_main
from mpm.errors import ConfigError
from mpm.merging import build_method
from mpm.merging.algm import global_adaptive_matching, local_window_matching, window_index, window_similarity
from mpm.merging.base import MergeMethod
from mpm.merging.mpm import best_partners, merge_pairs, mutual_pairs
from mpm.merging.tome import bipartite_scores, bipartite_soft_matching, merge_wavg
from mpm.models import SegmenterConfig, build_segmenter

REPO = Path(__file__).resolve().parents[2]
CROP = 96  # 6x6 = 36 tokens: merges differ from image to image, exports take seconds


# --------------------------------------------------------------------------- #
# what is refused, before anything is exported
# --------------------------------------------------------------------------- #


def test_spec_checks(images, make_spec):
    for method, schedule in (("mpm", (2, 5)), ("tome", (0, 1, 2)), ("algm", (0, 4)), ("none", ())):
        check_onnx_spec(make_spec(images, method=method, schedule=schedule))
    check_onnx_spec(make_spec(images, method="mpm", schedule=(2, 5), batch_policy="batch-min"))  # = exact at bs 1
    with pytest.raises(ConfigError, match="float32 only"):
        check_onnx_spec(make_spec(images, method="none", schedule=(), dtype="float16"))
    with pytest.raises(ConfigError, match="not backend 'fa2'"):
        check_onnx_spec(make_spec(images, method="mpm", schedule=(2, 5), backend="fa2"))
    with pytest.raises(ConfigError, match="mpm with batch policy 'batch-min' at batch size 2"):
        check_onnx_spec(make_spec(images, method="mpm", schedule=(2, 5), batch_policy="batch-min", batch_size=2))


def test_method_without_onnx_path_is_refused(images, make_spec, monkeypatch):
    from mpm.merging import base

    class Halve(MergeMethod):
        name = "halve"

    monkeypatch.setitem(base._REGISTRY, "halve", Halve)
    with pytest.raises(ConfigError) as err:
        check_onnx_spec(make_spec(images, method="halve", schedule=(3,)))
    message = str(err.value)
    assert "\n" not in message and "'halve' has no ONNX Runtime path" in message and "mpm" in message


def test_cli_refuses_what_onnx_cannot_run(images, tmp_path, capsys):
    out = tmp_path / "onnx.json"
    rc = bench_main(["--runtime", "onnxruntime", "--images", str(images), "--method", "mpm", "--backend", "fa2",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 1 and "not backend 'fa2'" in err and "Traceback" not in err


def test_cli_names_missing_packages(images, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "onnxruntime" else real(name, *a, **k))
    out = tmp_path / "onnx.json"
    rc = bench_main(["--runtime", "onnxruntime", "--images", str(images), "--method", "mpm", "--model", "T",
                     "--num-classes", "3", "--crop", "64", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "needs the onnxruntime package(s)" in err and "mpm[onnx]" in err


# --------------------------------------------------------------------------- #
# the NumPy steps against the PyTorch merges, on the same inputs
# --------------------------------------------------------------------------- #


def _tokens(n: int, c: int = 8, seed: int = 0) -> torch.Tensor:
    """(1, n, c) tokens with exact duplicates (ties) among them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, c, generator=g)
    for dst, src in ((5, 2), (9, 2), (11, 7)):
        if dst < n:
            x[0, dst] = x[0, src]
    return x


@pytest.mark.parametrize("n", [2, 3, 17, 24])
def test_mpm_step_equals_torch(n):
    x = _tokens(n)
    best, score = best_partners(x)
    ref = merge_pairs(x, best, mutual_pairs(best, score))
    merged, index, size = MPMStep().apply(x[0].numpy(), None, {"best": best[0].numpy(), "score": score[0].numpy()})
    assert np.array_equal(index, ref.index[0].numpy()) and size is None
    assert np.array_equal(merged, ref.x[0].numpy())  # the same float operations: bit for bit


def _exact_tokens(n: int, c: int = 16, seed: int = 0) -> torch.Tensor:
    """(1, n, c) tokens of four entries +-0.5 each: unit norm and every dot product exact in
    fp32, so ties are real ties whatever the product's blocking (and many of them)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, n, c)
    for i in range(n):
        cols = torch.randperm(c, generator=g)[:4]
        x[0, i, cols] = torch.where(torch.rand(4, generator=g) < 0.5, -0.5, 0.5)
    return x


@pytest.mark.parametrize("blocks", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [4, 17, 24, 61])
def test_blocked_mutual_scores_equal_best_partners(n, blocks):
    from mpm.benchmarking.onnx_export import MutualScores

    for x in (_tokens(n), _exact_tokens(n, seed=n)):
        feats = torch.cat([torch.randn(1, 1, x.shape[2]), x], 1)  # a prefix token, skipped
        best, score = MutualScores(1, False, blocks)(feats)
        ref_best, ref_score = best_partners(x)
        assert torch.equal(best, ref_best)
        assert torch.allclose(score, ref_score, atol=1e-6, rtol=0)
    # padded: two images, the second with fewer real tokens
    x = torch.cat([_exact_tokens(n, seed=1), _exact_tokens(n, seed=2)])
    lengths = torch.tensor([n, max(n - 5, 1)])
    best, score = MutualScores(0, True, blocks)(x, lengths)
    ref_best, ref_score = best_partners(x, lengths)
    for i, length in enumerate(lengths.tolist()):
        assert torch.equal(best[i, :length], ref_best[i, :length])
        assert torch.equal(score[i, :length], ref_score[i, :length])


@pytest.mark.parametrize("n,r", [(17, 5), (24, 12), (24, 40), (3, 1)])
def test_tome_step_equals_torch(n, r):
    x = _tokens(n)
    metric = _tokens(n, 4, seed=1)
    size = torch.rand(1, n, generator=torch.Generator().manual_seed(2)) + 0.5
    m = bipartite_soft_matching(metric, r)
    ref_x, ref_size = merge_wavg(m.merge, x, size)
    node_max, node_idx = bipartite_scores(metric)
    merged, index, new_size = ToMeStep(r=r).apply(x[0].numpy(), size[0].numpy(),
                                                  {"node_max": node_max[0].numpy(), "node_idx": node_idx[0].numpy()})
    assert np.array_equal(index, m.index[0].numpy())
    np.testing.assert_allclose(merged, ref_x[0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_size, ref_size[0].numpy(), rtol=1e-6)


@pytest.mark.parametrize("grid,threshold", [((6, 6), 0.2), ((5, 7), -1.0), ((4, 4), 0.99)])
def test_algm_local_step_equals_torch(grid, threshold):
    n = grid[0] * grid[1]
    x = _tokens(n)
    windows = window_index(grid)
    m = local_window_matching(x, grid, threshold)
    ref_x, _ = merge_wavg(m.merge, x, None)
    sim = window_similarity(x, windows)
    step = ALGMLocalStep(threshold, windows.tolist(), "tokens", 4)
    merged, index, _ = step.apply(x[0].numpy(), None, {"window_sim": sim[0].numpy()})
    assert np.array_equal(index, m.index[0].numpy())
    np.testing.assert_allclose(merged, ref_x[0].numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer,threshold", [(5, None), (1, None), (3, 0.1)])
def test_algm_global_step_equals_torch(layer, threshold):
    x = _tokens(30)
    size = torch.rand(1, 30, generator=torch.Generator().manual_seed(3)) + 0.5
    m = global_adaptive_matching(x, layer, threshold=threshold)
    ref_x, _ = merge_wavg(m.merge, x, size)
    node_max, node_idx = bipartite_scores(x)
    step = ALGMGlobalStep(layer, threshold)
    merged, index, _ = step.apply(x[0].numpy(), size[0].numpy(),
                                  {"node_max": node_max[0].numpy(), "node_idx": node_idx[0].numpy()})
    assert np.array_equal(index, m.index[0].numpy())
    np.testing.assert_allclose(merged, ref_x[0].numpy(), rtol=1e-6, atol=1e-6)


def test_plan_follows_the_method():
    steps = plan_steps(build_method("algm", (0, 4), local_threshold=0.9), (4, 4))
    assert [(b, site, type(s).__name__) for b, site, s in steps] == [
        (0, "after_attention", "ALGMLocalStep"), (4, "after_attention", "ALGMGlobalStep")]
    assert steps[0][2].threshold == 0.9 and steps[1][2].layer == 5 and len(steps[0][2].windows) == 4
    tome = plan_steps(build_method("tome", (1, 3), r=[4, 2]))
    assert [s.r for _, _, s in tome] == [4, 2] and all(s.metric == "keys" for _, _, s in tome)
    assert plan_steps(build_method("none")) == []


# --------------------------------------------------------------------------- #
# segmented export in ONNX Runtime against the PyTorch forward
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.preset("T", 4, image_size=(CROP, CROP)))
    g = torch.Generator().manual_seed(1)
    ims = []
    for i in range(4):  # smooth colour fields, more noise from image to image: different merge counts
        base = torch.rand(1, 3, 4, 4, generator=g) * 255
        im = torch.nn.functional.interpolate(base, size=(CROP, CROP), mode="bilinear")
        ims.append(im + torch.rand(1, 3, CROP, CROP, generator=g) * 12 * i)
    return model, model.normalize(torch.cat(ims))


METHODS = {
    "mpm": lambda: build_method("mpm", (2, 5)),
    "mpm-early": lambda: build_method("mpm", (0, 1, 3)),
    "tome": lambda: build_method("tome", (0, 1, 2, 3, 4, 5), r=4),
    "tome-prop-attn": lambda: build_method("tome", (1, 4), r=[6, 3], prop_attn=True),
    "algm": lambda: build_method("algm", (0, 4), local_threshold=0.5),
    "algm-keys": lambda: build_method("algm", (0, 4), local_threshold=0.5, metric="keys"),
}


@pytest.mark.parametrize("name,batch", [(name, 1) for name in METHODS]  # padded batches: one of each kind
                         + [("mpm", 2), ("tome-prop-attn", 2), ("algm", 2)])
def test_segments_match_torch(model_and_images, tmp_path, name, batch):
    from mpm.benchmarking.onnx_export import export_segments
    from mpm.benchmarking.onnx_runtime import SegmentedModel

    model, x = model_and_images
    method = METHODS[name]()
    manifest = export_segments(model, method, x[:batch], tmp_path, backend="math")
    assert len(manifest["segments"]) == len(method.schedule) + 1
    seg = SegmentedModel.load(tmp_path, threads=1)
    counts = []
    for i in range(0, x.shape[0], batch):
        out = seg(x[i:i + batch].numpy())
        with torch.inference_mode():
            ref, enc = model(x[i:i + batch], method=method, backend="math", return_encoder=True)
        assert np.array_equal(out.index, enc.index.numpy()), f"{name}: merge maps differ on images {i}.."
        assert [t.tolist() for t in out.tokens_left] == [t.tolist() for t in enc.tokens_left]
        assert float(np.abs(out.logits - ref.numpy()).max()) < 1e-4
        counts.append(tuple(int(c) for t in out.tokens_left for c in t))
    if not name.startswith("tome"):  # ToMe removes r per block; the others depend on the image
        assert len(set(counts)) > 1, f"{name}: every image kept the same counts {counts}"


def _op_counts(path: Path) -> dict[str, int]:
    import collections

    import onnx

    return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node))


@pytest.mark.parametrize("name,batch,fused_blocks", [("mpm", 1, 12), ("tome-prop-attn", 1, 2), ("mpm", 2, 2)])
def test_attention_fused_where_plain(model_and_images, tmp_path, name, batch, fused_blocks):
    """Plain attention becomes one MultiHeadAttention per block; biased or key-masked attention
    (after ToMe's first site with prop_attn, after MPM's first site in a padded batch) stays;
    ToMe's first site is after block 1's attention, MPM(2, 5)'s before block 2."""
    from mpm.benchmarking.onnx_export import export_segments

    model, x = model_and_images
    manifest = export_segments(model, METHODS[name](), x[:batch], tmp_path)
    fused = manifest["fused_attention"]
    assert fused["decoder.onnx"] == model.config.decoder_depth
    assert sum(v for f, v in fused.items() if f.startswith("segment")) == fused_blocks
    for f, count in fused.items():
        ops = _op_counts(tmp_path / f)
        assert ops.get("MultiHeadAttention", 0) == count
        unfused = model.config.depth if f.startswith("segment") else model.config.decoder_depth
        assert ops.get("Softmax", 0) <= unfused
        if count:
            assert "Softmax" not in ops or name != "mpm" or batch > 1, f"{f}: a plain softmax left: {ops}"


def test_fused_dense_matches_unfused(model_and_images, tmp_path):
    from mpm.benchmarking.onnx_export import export_dense
    from mpm.benchmarking.onnx_runtime import Graph, session_options

    model, x = model_and_images
    export_dense(model, x[:1], tmp_path / "fused.onnx")
    export_dense(model, x[:1], tmp_path / "plain.onnx", fuse=False)
    fused, plain = _op_counts(tmp_path / "fused.onnx"), _op_counts(tmp_path / "plain.onnx")
    blocks = model.config.depth + model.config.decoder_depth
    assert fused.get("MultiHeadAttention") == blocks and "Softmax" not in fused
    assert plain.get("Softmax") == blocks and "MultiHeadAttention" not in plain
    runs = [Graph(tmp_path / f, session_options(1), ["CPUExecutionProvider"]) for f in ("fused.onnx", "plain.onnx")]
    for i in range(x.shape[0]):
        a, b = (g(images=x[i:i + 1].numpy())["logits"] for g in runs)
        assert float(np.abs(a - b).max()) < 1e-4
        with torch.inference_mode():
            assert float(np.abs(a - model(x[i:i + 1], backend="math").numpy()).max()) < 1e-4


def test_oracle_keeps_the_counts(model_and_images, tmp_path):
    from mpm.benchmarking.onnx_export import export_segments
    from mpm.benchmarking.onnx_runtime import SegmentedModel
    from mpm.benchmarking.oracle import SliceOracle

    model, x = model_and_images
    method = build_method("mpm", (2, 5))
    export_segments(model, method, x[:1], tmp_path)
    seg = SegmentedModel.load(tmp_path, threads=1)
    out = seg(x[:1].numpy())
    oracle = SliceOracle(method)
    oracle.set_counts([int(t[0]) for t in out.tokens_left])
    with torch.inference_mode():
        logits, enc = model(x[:1], method=oracle, backend="math", return_encoder=True)
    assert [int(t[0]) for t in enc.tokens_left] == [int(t[0]) for t in out.tokens_left]

    class Spy:  # what the oracle feeds the second segment
        def __init__(self, graph) -> None:
            self.graph, self.sizes = graph, []

        def __call__(self, **feeds):
            self.sizes.append(feeds["tokens"].shape[1])
            return self.graph(**feeds)

    spy = seg.segments[1] = Spy(seg.segments[1])
    assert seg.oracle(x[:1].numpy(), out.tokens_left, out.index).shape == logits.shape
    assert spy.sizes == [1 + int(out.tokens_left[0][0])]


# --------------------------------------------------------------------------- #
# mpm bench --runtime onnxruntime
# --------------------------------------------------------------------------- #


def test_dense_point_with_onnxruntime(images, tmp_path, capsys):
    out = tmp_path / "onnx.json"
    rc = bench_main(["--runtime", "onnxruntime", "--images", str(images), "--model", "T", "--num-classes", "3",
                     "--crop", "64", "--method", "none", "--threads", "1", "--iters", "3", "--warmup", "1",
                     "--pool-batches", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert validate_result(result) == []
    runtime = result["runtime"]
    assert runtime["name"] == "onnxruntime" and runtime["providers"] == ["CPUExecutionProvider"]
    assert runtime["max_abs_diff_vs_torch"] < 1e-3
    assert result["timing"]["iterations"] == 3 and result["breakdown_ms"]["merge_ms"] is None
    assert result["tokens"] == {"full": 16, "after_step_mean": [], "after_step_std": []}


@pytest.mark.parametrize("method,extra", [("mpm", ["--schedule", "2,5"]),
                                          ("tome", ["--schedule", "0,1,2", "--method-arg", "r=8"])])
def test_merging_point_with_onnxruntime(images, tmp_path, capsys, method, extra):
    out = tmp_path / "onnx.json"
    rc = bench_main(["--runtime", "onnxruntime", "--images", str(images), "--model", "T", "--num-classes", "3",
                     "--crop", "96", "--method", method, *extra, "--threads", "1", "--iters", "2", "--warmup", "1",
                     "--breakdown-iters", "1", "--pool-batches", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert validate_result(result) == []
    runtime = result["runtime"]
    assert runtime["maps_equal"] is True and runtime["max_abs_diff_vs_torch"] < 1e-4
    assert runtime["graphs"].startswith("segments")
    assert len(result["tokens"]["after_step_mean"]) == len(result["method"]["schedule"])
    assert result["tokens"]["after_step_mean"][-1] < result["tokens"]["full"]
    assert result["breakdown_ms"]["merge_ms"] > 0 and result["breakdown_ms"]["unmerge_ms"] is None


# --------------------------------------------------------------------------- #
# benchmarks/edge.py, tiny
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_edge_benchmark_rows(tmp_path):
    out = tmp_path / "edge"
    cmd = [sys.executable, str(REPO / "benchmarks" / "edge.py"), "--out", str(out), "--models", "T",
           "--threads", "1", "--crop", "64", "--num-classes", "3", "--rounds", "2", "--iters", "1", "--warmup", "0",
           "--num-images", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "edge.json").read_text())
    rows = result["rows"]
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime"]
    for row in rows:
        for key in ("runtime", "model", "method", "threads", "cpu", "dense_ms", "oracle_ms", "method_ms", "speedup",
                    "oracle_speedup", "spread", "max_abs_diff_vs_torch", "maps_equal", "ideal_speedup", "images"):
            assert key in row, key
        assert row["model"] == "Seg-T/16" and row["method"] == "mpm(2,5)" and row["threads"] == 1
        assert row["images"] == "synthetic" and row["dense_gflops"] / row["method_gflops"] == row["ideal_speedup"]
        assert row["method_gflops"] != row["dense_gflops"]
        lo, hi = row["spread"]["speedup"]
        assert lo <= row["speedup"] <= hi and row["significant"]["speedup"] == (not lo <= 1 <= hi)
        assert len(row["per_round_ms"]["dense"]) == 2
    assert rows[1]["maps_equal"] is True and rows[1]["max_abs_diff_vs_torch"] < 1e-4
    assert rows[0]["maps_equal"] is None and len(result["runs"]) == 1
    sections = rows[1]["sections_ms"]  # ORT MPM's own sections, merge sites included
    assert set(sections) == {"encoder_ms", "merge_ms", "decoder_ms"} and 0 < sections["merge_ms"] < rows[1]["method_ms"]
    assert rows[1]["merge_share"] == sections["merge_ms"] / rows[1]["method_ms"] and "sections_ms" not in rows[0]


@pytest.mark.slow
def test_edge_profile_tables(tmp_path):
    """benchmarks/edge_profile.py: per-operator ms of both runtimes, dense and MPM, and wall ms."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "edge_profile.py"), "--out", str(tmp_path), "--model", "T",
           "--threads", "1", "--crop", "64", "--images", "synthetic", "--num-images", "1", "--iters", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "edge_profile.json").read_text())
    assert set(result["wall_ms"]) == set(result["op_ms_per_forward"]) == {"torch dense", "torch mpm", "ort dense",
                                                                          "ort mpm"}
    assert "Resize" in result["op_ms_per_forward"]["ort mpm"] and "aten::addmm" in result["op_ms_per_forward"]["torch dense"]
    assert result["forwards_per_variant"] == 1 and all(ms > 0 for ms in result["wall_ms"].values())


def _edge_module():
    spec = importlib.util.spec_from_file_location("edge_bench", REPO / "benchmarks" / "edge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_edge_rows_of_other_machines_are_kept():
    edge = _edge_module()
    run = lambda command, cpu: {"id": edge.run_id({"cpu": cpu, "git_commit": "abc"}, command),  # noqa: E731
                                "command": command}
    row = lambda the_run, threads, ms: {  # noqa: E731
        "cpu": the_run["id"].split(" @ ")[0], "cpu_count": 2, "runtime": "torch", "model": "Seg-T/16",
        "method": "mpm(2,5)", "threads": threads, "dense_ms": ms, "run": the_run["id"]}
    first, second, third, fourth = run("first", "A"), run("second", "B"), run("third", "A"), run("fourth", "A")
    old = edge.merge_rows(None, [row(first, 1, 1.0), row(first, 4, 2.0)], first)
    new = edge.merge_rows(old, [row(second, 1, 3.0)], second)
    assert [(r["cpu"], r["threads"], r["dense_ms"]) for r in new["rows"]] == [("A", 1, 1.0), ("A", 4, 2.0),
                                                                               ("B", 1, 3.0)]
    assert [r["command"] for r in new["runs"]] == ["first", "second"] and new["schema"] == edge.SCHEMA
    # A run on A that replaces one of the first run's rows keeps that run; replacing both drops it.
    newer = edge.merge_rows(new, [row(third, 1, 4.0)], third)
    assert [(r["cpu"], r["threads"], r["dense_ms"]) for r in newer["rows"]] == [("A", 4, 2.0), ("B", 1, 3.0),
                                                                                 ("A", 1, 4.0)]
    assert [r["command"] for r in newer["runs"]] == ["first", "second", "third"]
    newest = edge.merge_rows(newer, [row(fourth, 1, 5.0), row(fourth, 4, 6.0)], fourth)
    assert [r["command"] for r in newest["runs"]] == ["second", "fourth"]


def test_edge_ratio_spread():
    edge = _edge_module()
    stats = edge.ratio_stats([10.0, 12.0, 11.0], [5.0, 12.0, 10.0])
    assert stats["median"] == pytest.approx(1.1) and stats["spread"] == [1.0, 2.0] and not stats["significant"]
    assert edge.ratio_stats([10.0, 12.0], [5.0, 8.0])["significant"]


def test_ssh_target_runs_merging_in_onnxruntime(sshd, images, tmp_path, capsys):
    """The Pi path: the ssh runner ships the source, the remote `mpm bench --runtime onnxruntime` exports MPM's
    segments there and times them (the 'remote' is this machine's sshd on 127.0.0.1)."""
    config = sshd.write_config(tmp_path / "targets.yaml", box=sshd.target())
    out = tmp_path / "ssh-onnx.json"
    rc = bench_main(["--targets-config", str(config), "--target", "box", "--runtime", "onnxruntime",
                     "--images", str(images), "--model", "T", "--num-classes", "3", "--crop", "96",
                     "--method", "mpm", "--schedule", "2,5", "--iters", "2", "--warmup", "1", "--breakdown-iters", "1",
                     "--pool-batches", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert validate_result(result) == []
    assert result["target"]["type"] == "ssh" and "onnxruntime" in result["target"]["remote_versions"]
    assert result["runtime"]["name"] == "onnxruntime" and result["runtime"]["maps_equal"] is True
    assert len(result["tokens"]["after_step_mean"]) == 2
