"""Correctness checks that need a GPU: every attention backend, exact batches, fp16, the fast runner.

Prints one line per check and exits non-zero if any fails. Random weights,
synthetic images (smooth random fields, so MPM merges a varying number of tokens).

Checks of the fast path (:class:`mpm.models.segmenter.SegmenterRunner`):

* its Triton kernels against their PyTorch twins on random rows (packed and padded);
* the Triton attention backend against FlashAttention-2 (padded, key lengths, packed);
* the runner (eager, then under CUDA graphs) against the plain ``model(...)`` forward,
  for dense, MPM, ToMe, ALGM and the slice oracle.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpm.benchmarking.bench import SliceOracle  # noqa: E402
from mpm.benchmarking.timing import KernelSections, MarkerMismatch, profile_kernels  # noqa: E402
from mpm.errors import BackendError  # noqa: E402
from mpm.merging import build_method  # noqa: E402
from mpm.merging import triton_kernels as tk  # noqa: E402
from mpm.merging.maps import gather_mean, row_sources, rows_to_padded, unmerge_rows  # noqa: E402
from mpm.merging.mpm import partner_cosines, plan_from_partners  # noqa: E402
from mpm.models import segmenter  # noqa: E402
from mpm.models.attention import Varlen, attention, attention_packed  # noqa: E402
from mpm.models import SegmenterConfig, build_segmenter  # noqa: E402

FAILURES = 0
QUICK = "--quick" in sys.argv


def check(ok: bool, text: str) -> None:
    global FAILURES
    FAILURES += not ok
    print(f"{'ok ' if ok else 'FAIL'} {text}", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def smooth_images(b: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(b, 3, size // 64, size // 64, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")
    return (x + 0.1 * torch.randn(b, 3, size, size, generator=g)).clamp(-1, 1)


def kernel_checks(dev: torch.device) -> None:
    """Triton kernels vs the PyTorch twins on fresh random rows."""
    p = 1
    for trial, dtype in enumerate((torch.float32, torch.float16, torch.float16)):
        g = torch.Generator(device=dev).manual_seed(100 + trial)
        b, c = 5, (192, 384, 1024)[trial]
        n = torch.randint(2, 900, (b,), device=dev, generator=g)
        n[0] = 1024
        s = int(n.max())
        lens = n + p
        start = lens.cumsum(0) - lens
        rows = int(lens.sum()) + 17
        x = torch.randn(rows, c, device=dev, dtype=dtype, generator=g)
        feats = rows_to_padded(x, start + p, s)
        best, score = tk.best_partners_rows(x, start, n, p, s)
        one = tk.best_partners_rows(x, start, n, p, s, splits=1)
        check(torch.equal(one[0], best) and torch.equal(one[1], score),
              f"triton best partners, default column ranges == one range {dtype} C={c} (bit for bit)")
        # the chosen partner attains the row maximum (float64 reference); ties may pick another index
        top, _, _ = partner_cosines(feats, best, n)
        tol = 1e-6 if dtype == torch.float32 else 2e-3
        ok_rows, valid = _attains_row_max(feats, best, n, top, tol)
        check(bool(ok_rows.all()), f"triton best partner {dtype} C={c}: attains the row max (tol {tol}) on "
                                   f"{float(ok_rows[valid].float().mean()):.5f} of rows")
        fin = valid & torch.isfinite(top)
        check(bool(((score.double() - top).abs()[fin] < 1e-5 if dtype == torch.float32 else
                    (score.double() - top).abs()[fin] < 3e-3).all()), f"triton best score {dtype} close to cosine")
        # the symmetric kernel (each pair of token blocks multiplied once): the same checks
        sym_tiles = tk.SYMMETRIC_TILES.get(c, tk.SYMMETRIC_BASE_TILES)
        for tiles in (sym_tiles, tk.TileConfig(64, 64, 64, 4, 3, True, True)):
            sb, ss = tk.best_partners_rows(x, start, n, p, s, tiles=tiles)
            ok_sym, _ = _attains_row_max(feats, sb, n, top, tol)
            check(bool(ok_sym.all()), f"triton best partner, symmetric {tiles.label()} {dtype} C={c}: attains the row "
                                      f"max on {float(ok_sym[valid].float().mean()):.5f} of rows, equal to the row "
                                      f"kernel's on {float((sb == best)[valid].float().mean()):.5f}")
            check(bool(((ss.double() - top).abs()[fin] < (1e-5 if dtype == torch.float32 else 3e-3)).all())
                  and torch.equal(torch.isfinite(ss) & valid, torch.isfinite(score) & valid)
                  and torch.equal(sb[~valid], best[~valid]),
                  f"triton best score, symmetric {tiles.label()} {dtype}: close to cosine; past n as the row kernel")
        # the row kernel's own tiling (TILES) and the small batches' (SMALL_TILES): the same checks
        for label, tiles in [("row tiling", tk.tile_config(c)),
                             *((f"batch {k} tiling", t) for k, t in tk.SMALL_TILES.get(c, {}).items())]:
            rb, _ = tk.best_partners_rows(x, start, n, p, s, tiles=tiles)
            ok_row, _ = _attains_row_max(feats, rb, n, top, tol)
            check(bool(ok_row.all()), f"triton best partner, {label} {tiles.label()} {dtype} C={c}: attains "
                                      f"the row max on {float(ok_row[valid].float().mean()):.5f} of rows")
        inv = tk.inv_norms(x)
        for tiling in ((4, 1024), (64, 64)):
            check(rel(tk.inv_norms(x, tiling), inv) < 1e-6, f"triton inverse norms {tiling} == {tk.norm_tiling(rows, c, dev)} "
                                                             f"{dtype} C={c}")
        # the plan from the same partners: exact
        rp = plan_from_partners(best, score, n)
        dest, partner, surv, kept = tk.mutual_plan(best, score, n)
        check(_same_plan((dest, partner, surv, kept), rp, n), f"triton mutual plan == PyTorch plan {dtype}")
        parts = tk.best_partners_rows(x, start, n, p, s, combine=False)
        check(_same_plan(tk.mutual_plan(*parts, n), rp, n), f"triton mutual plan folding {parts[0].shape[0]} column ranges == "
                                                    f"PyTorch plan of the combined partners {dtype}")
        one_launch_checks(x, start, n, p, s, feats, top, tol, dtype, c)
        for packed in (True, False):
            for with_partner in (True, False):
                slots = int((kept + p).max()) + 5
                r_out = int((kept + p).sum()) + 9 if packed else b * slots
                tk.enabled = False
                a = row_sources(rp.dest, rp.partner if with_partner else None, rp.survivor, n, start, rp.kept, p,
                                packed, slots, r_out)
                ga = gather_mean(x, a.src1, a.src2)
                tk.enabled = True
                t = row_sources(dest, partner if with_partner else None, surv, n, start, kept, p, packed, slots, r_out)
                gt = gather_mean(x, t.src1, t.src2)
                same = all(torch.equal(u, v) for u, v in zip(a, t) if u is not None)
                check(same and torch.equal(ga, gt), f"triton sources+gather == PyTorch {dtype} packed={packed} "
                                                    f"two-source={with_partner} (bit for bit)")
        # the map after the merge and the unmerge: bit for bit against the twins
        grid = torch.randint(0, s, (b, 1024), device=dev, generator=g).clamp(max=(n - 1)[:, None])
        slots = int((kept + p).max()) - 2  # a capacity that cuts the largest counts: the clamp matters
        for clamp in (False, True):
            tk.enabled = False
            want_src = row_sources(rp.dest, rp.partner, rp.survivor, n, start, rp.kept, p, False, slots, b * slots,
                                   index=grid, clamp_index=clamp)
            want = unmerge_rows(x, start, grid, p, clamp)
            tk.enabled = True
            got_src = row_sources(dest, partner, surv, n, start, kept, p, False, slots, b * slots, index=grid,
                                  clamp_index=clamp)
            got = unmerge_rows(x, start, grid, p, clamp)
            check(torch.equal(got_src.index, want_src.index) and all(torch.equal(u, v) for u, v in zip(got, want)),
                  f"triton composed map (sources' launch) + unmerge rows == PyTorch {dtype} clamp={clamp} (bit for bit)")


    big, small = tk.partner_tiles(192, 32, 1024, dev), tk.partner_tiles(192, 1, 1024, dev)
    check(big.symmetric == (tk.symmetric_best_partner and 192 in tk.SYMMETRIC_TILES) and not small.symmetric,
          f"best-partner kernel by batch: Seg-T batch 32 {big.label()}, batch 1 {small.label()}")


def _fold(part_best: torch.Tensor, part_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, B, S) partial partners and cosines folded in order, the earlier range keeping ties."""
    best, score = part_best[0].clone(), part_score[0].clone()
    for k in range(1, part_best.shape[0]):
        better = part_score[k] > score
        best, score = torch.where(better, part_best[k], best), torch.where(better, part_score[k], score)
    return best, score


def _same_plan(a, b, n: torch.Tensor) -> bool:
    """Two plans (dest, partner, survivor, kept: a kernel's tuple or a ``RowPlan``) equal within each image's ``n``
    tokens (past them: unspecified)."""
    return torch.equal(a[3], b[3]) and all(
        torch.equal(a[0][i, :k], b[0][i, :k]) and torch.equal(a[1][i, :k], b[1][i, :k])
        and torch.equal(a[2][i, :k].bool(), b[2][i, :k].bool()) for i, k in enumerate(n.tolist()))


def _attains_row_max(feats, best, n, top, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) bool: each real token's chosen partner attains its row's maximum cosine ``top`` within ``tol``
    (``partner_cosines``, float64; True past ``n``), and (B, S) bool the real tokens."""
    _, got, valid = partner_cosines(feats, best, n)
    return ((top - got).abs() <= tol) | ~valid, valid


def one_launch_checks(x, start, n, p: int, s: int, feats, top, tol: float, dtype, c: int) -> None:
    """``tk.plan_one_launch`` (the search's programs, then each image's last program plans) on the GPU, where its
    programs run concurrently: the partners attain the row maximum, the plan is the PyTorch plan of its own
    partners, 20 launches agree, the tickets are left zero; at batch 5 and 1 (column ranges), on uniform input
    and replayed in a CUDA graph."""
    b = start.shape[0]
    for label, sel in (("batch 5", slice(None)), ("batch 1", slice(0, 1))):
        st, nn = start[sel], n[sel]
        first = tk.plan_one_launch(x, st, nn, p, s, return_partials=True)
        best, score = _fold(first[4], first[5])
        ok, valid = _attains_row_max(feats[sel], best, nn, top[sel], tol)
        same = _same_plan(first, plan_from_partners(best, score, nn), nn)
        again = all(_same_plan(tk.plan_one_launch(x, st, nn, p, s), first, nn) for _ in range(20))
        check(bool(ok.all()) and same and again and not bool(tk._tickets(x.device).any()),
              f"triton plan in one launch, {label} ({first[4].shape[0]} ranges) {dtype} C={c}: partners attain the row "
              f"max on {float(ok[valid].float().mean()):.5f}, plan == PyTorch plan of its partners: {same}, "
              f"20 launches equal: {again}")
    slots = min(300, x.shape[0] // b - p)  # a uniform batch inside the rows
    xu = x[: b * (slots + p)]
    su = torch.arange(b, device=x.device) * (slots + p)
    full = torch.full((b,), slots, device=x.device)
    uniform = tk.plan_one_launch(xu, su, None, p, slots, return_partials=True)
    counted = tk.plan_one_launch(xu, su, full, p, slots, return_partials=True)
    check(all(torch.equal(u, v) for u, v in zip(uniform, counted)), f"triton plan in one launch, uniform input {dtype}")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = tk.plan_one_launch(x, start, n, p, s)
    replays = []
    for _ in range(10):
        graph.replay()
        replays.append(_same_plan(captured, tk.plan_one_launch(x, start, n, p, s), n))
    check(all(replays), f"triton plan in one launch, replayed in a CUDA graph 10 times == launched {dtype}")


def attention_kernel_checks(dev: torch.device) -> None:
    """The Triton attention backend against FlashAttention-2 on the same inputs: padded (with and without key
    lengths) and packed (cumulative lengths with an empty sequence and a pad sequence), Segmenter's widths."""
    torch.manual_seed(0)
    for heads, n in ((3, 1025), (12, 1025), (16, 1601)):
        for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 1e-2)):  # bf16: 8 mantissa bits (rel 4e-3)
            qkv = torch.randn(4, n, 3, heads, 64, device=dev, dtype=dtype).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # (B, H, N, D) views of one projection, as the encoder makes them
            lengths = torch.tensor([n, 1, n // 2, n - 7], device=dev)
            for lens in (None, lengths):
                a = attention(q, k, v, backend="triton", lengths=lens)
                b = attention(q, k, v, backend="fa2", lengths=lens)
                real = lengths if lens is not None else torch.full_like(lengths, n)
                keep = (torch.arange(n, device=dev) < real[:, None])[:, None, :, None]
                r = rel(a * keep, b * keep)
                check(r < tol, f"triton attention H={heads} N={n} {str(dtype)[6:]} padded lengths={lens is not None}"
                                f" vs fa2: rel {r:.2e}")
            rows = torch.randn(4 * n + 37, 3, heads, 64, device=dev, dtype=dtype)
            cu = torch.tensor([0, n, n, 3 * n - 5, 4 * n, 4 * n + 37], device=dev, dtype=torch.int32)
            packing = Varlen(cu, 2 * n, cu[:-2].long(), (cu[1:-1] - cu[:-2]).long())
            qp, kp, vp = rows.unbind(1)
            a = attention_packed(qp, kp, vp, packing, backend="triton")
            b = attention_packed(qp, kp, vp, packing, backend="fa2")
            r = rel(a, b)
            check(r < tol, f"triton attention H={heads} {str(dtype)[6:]} packed (5 sequences) vs fa2: rel {r:.2e}")


def math_alignment_checks(dev: torch.device) -> None:
    """The math backend's 8-aligned keys on CUDA against unaligned keys (Segmenter's token counts)."""
    import importlib

    att = importlib.import_module("mpm.models.attention")
    g = torch.Generator(device=dev).manual_seed(7)
    for n, dtype in ((1025, torch.float16), (1601, torch.float16), (1025, torch.float32)):
        q, k, v = (torch.randn(2, 4, n, 64, device=dev, dtype=dtype, generator=g) for _ in range(3))
        lengths = torch.tensor([n, n - 300], device=dev)
        for masked in (False, True):
            kw = {"lengths": lengths} if masked else {}
            aligned = att.attention(q, k, v, "math", **kw)
            saved, att.KEY_ALIGN_DEVICES = att.KEY_ALIGN_DEVICES, ()
            try:
                plain = att.attention(q, k, v, "math", **kw)
            finally:
                att.KEY_ALIGN_DEVICES = saved
            keep = slice(None, n - 300)  # rows past an image's length are unspecified
            r = rel(aligned[:, :, keep].float(), plain[:, :, keep].float())
            check(r < (1e-5 if dtype == torch.float32 else 2e-3),
                  f"math attention, keys aligned to 8 == unaligned, n={n} {dtype} masked={masked} (rel {r:.1e})")


def runner_checks(dev: torch.device) -> None:
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.preset("T", num_classes=150)).to(dev)
    x32 = smooth_images(4, 512, 0).to(dev)
    cases = [("none", (), {}), ("mpm", (2, 5), {}), ("mpm", (1, 3, 5), {}), ("tome", tuple(range(12)), {"r": 40}),
             ("algm", (), {})]
    combos = ((torch.float32, ("math", "sdpa")), (torch.float16, ("math", "sdpa", "fa2", "triton")))
    if QUICK:
        cases = [c for c in cases if c[1] != (1, 3, 5)]
        combos = ((torch.float32, ("math",)), (torch.float16, ("math", "fa2", "triton")))
    with torch.inference_mode():
        for name, sched, kwargs in cases:
            method = build_method(name, sched, **kwargs)
            for dtype, backends in combos:
                m = model.to(dtype)
                xs = x32.to(dtype)
                for backend in backends:
                    ref, renc = m(xs, method=method, backend=backend, return_encoder=True)
                    outs, agree_plain = {}, {}
                    for mode in ("eager", "graphs"):
                        r = m.runner(method, backend, mode)
                        r(xs)  # graphs: capture
                        out, enc = r(xs, return_encoder=True)
                        outs[mode] = (out.clone(), enc.index.clone(), [t.clone() for t in enc.tokens_left])
                        agree = float((enc.index == renc.index).float().mean()) if renc.tokens_left else 1.0
                        agree_plain[mode] = agree
                        e = rel(out, ref)
                        if dtype == torch.float32:
                            ok = (agree == 1.0 and e < 1e-4) or (agree >= 0.99 and e < 5e-2)
                        else:
                            ok = bool(torch.isfinite(out).all()) and e < 0.1
                        ng = r._graphs.num_graphs if r._graphs else 0
                        check(ok, f"runner {mode:6s} {name}{list(sched)} {str(dtype)[6:]} {backend:5s} vs plain: rel "
                                  f"{e:.2e}, map agreement {agree:.4f}, graphs {ng}, pad {r.pad_stats[-2:]}")
                    if outs["eager"][2]:
                        # the maps must agree where they are reproducible at all: in fp32 always; in fp16 only
                        # where the eager runner's maps also agree with the plain forward's. With random
                        # weights fp16 scores tie (ToMe fp16 eager vs plain agreed on 5-10% of tokens on the
                        # H200), a tie is broken by rounding, and every later merge then differs: there the
                        # two modes must give the same counts and outputs as close as eager is to plain.
                        agree = float((outs["graphs"][1] == outs["eager"][1]).float().mean())
                        e = rel(outs["graphs"][0], outs["eager"][0])
                        same_counts = all(bool((a == b).all()) for a, b in zip(outs["graphs"][2], outs["eager"][2]))
                        if dtype == torch.float32 or agree_plain["eager"] >= 0.99:
                            ok = agree >= 0.99 and e < (1e-3 if dtype == torch.float32 else 5e-2)
                        else:
                            ok = same_counts and e < 0.1
                        check(ok, f"graphs vs eager {name}{list(sched)} {str(dtype)[6:]} {backend}: map agreement "
                                  f"{agree:.4f} (eager vs plain {agree_plain['eager']:.4f}), rel {e:.2e}, "
                                  f"counts {'equal' if same_counts else 'differ'}")
                    if name != "none":
                        counts = [t.tolist() for t in renc.tokens_left]
                        orc = SliceOracle(method, counts)
                        for mode in ("eager", "graphs"):
                            r = m.runner(orc, backend, mode)
                            r(xs)
                            out, enc = r(xs, return_encoder=True)
                            check(bool(torch.isfinite(out).all()) and [t.tolist() for t in enc.tokens_left] == counts,
                                  f"oracle {mode} {name}{list(sched)} {str(dtype)[6:]} {backend}: counts {counts[0][:2]}..")
            model.float()
        # batch 1 under graphs, several images: one graph per bucket, outputs match eager
        m = model.half()
        method = build_method("mpm", (2, 5))
        r_e, r_g = m.runner(method, "fa2", "eager"), m.runner(method, "fa2", "graphs")
        worst = 0.0
        for i in range(6):
            xi = smooth_images(1, 512, 10 + i).to(dev).half()
            a = r_e(xi).clone()
            r_g(xi)
            worst = max(worst, rel(r_g(xi), a))
        check(worst < 5e-2, f"batch-1 graphs vs eager over 6 images: worst rel {worst:.2e}, graphs {r_g._graphs.num_graphs}")
        # speculative capacities at batch 4, eager and graphs: batches in an order of growing counts (each new
        # maximum misses its guess and runs again exactly), then back; the same maps and outputs as exact reads
        batches = [smooth_images(4, 512, 40 + i).to(dev) for i in range(4)]
        for dtype, backend in ((torch.float32, "math"), (torch.float16, "fa2")):
            m = model.to(dtype)
            xs = [b.to(dtype) for b in batches]
            kept = [int(m(x, method=method, backend=backend, return_encoder=True)[1].tokens_left[0].sum()) for x in xs]
            order = sorted(range(len(xs)), key=lambda i: kept[i])
            for mode in ("eager", "graphs"):
                fine = {"granularity": (8, 8)}  # small buckets, so that a larger batch misses its guess
                exact = m.runner(method, backend, mode, speculate=False, **fine)
                guessing = m.runner(method, backend, mode, speculate=True, **fine)
                worst, agree = 0.0, 1.0
                for i in order + order[::-1]:
                    a, ea = exact(xs[i], return_encoder=True)
                    b, eb = guessing(xs[i], return_encoder=True)
                    worst = max(worst, rel(b, a))
                    agree = min(agree, float((ea.index == eb.index).float().mean()))
                tol = 1e-4 if dtype == torch.float32 else 5e-2
                # under graphs, once every site has a guess a forward is one graph (segmenter.FUSE_SPECULATIVE)
                fused = guessing.fused_graphs
                check(worst < tol and agree >= (1.0 if dtype == torch.float32 else 0.99) and guessing.respeculated >= 1
                      and (mode == "eager" or not segmenter.FUSE_SPECULATIVE or fused >= 1),
                      f"speculative {mode:6s} {str(dtype)[6:]} {backend:4s} batch 4 vs exact reads: worst rel "
                      f"{worst:.2e}, map agreement {agree:.4f}, respeculated {guessing.respeculated}, "
                      f"pad {guessing.pad_stats[-2:]}, whole-forward graphs {fused}")
                del exact, guessing
        m = model.half()
        # kernel sections with their markers captured inside the graphs (speed.py's kernel share): the
        # profiled stream's markers match the replayed logs, merge kernels are credited, outputs unchanged
        xs = [b.half() for b in batches]
        plain, marked = m.runner(method, "fa2", "graphs"), m.runner(method, "fa2", "graphs")
        try:
            sections = profile_kernels(lambda i, timer, r=marked: r(xs[i], timer=timer), len(xs), dev)
            worst = max(rel(marked(x, timer=KernelSections(dev)), plain(x)) for x in xs)  # each its own buffers
            bd = sections.breakdown()
            check(worst == 0.0 and bd["merge_ms"] > 0 and bd["unmerge_ms"] > 0 and marked.fused_graphs >= 1
                  and 0 < bd["merge_ms"] + bd["unmerge_ms"] + bd["decoder_ms"] < bd["kernel_ms"],
                  f"kernel sections inside speculative graphs (batch 4, fp16 fa2): rel {worst:.1e}, merge "
                  f"{bd['merge_ms']:.4f} unmerge {bd['unmerge_ms']:.4f} of {bd['kernel_ms']:.4f} ms, "
                  f"whole-forward graphs {marked.fused_graphs}")
        except MarkerMismatch as err:
            check(False, f"kernel sections inside speculative graphs: {err}")
        del plain, marked
        # a discarded runner's graphs (a reference cycle: only the cyclic collector frees them) must not be
        # freed inside another runner's capture; the collector made to run at every allocation meanwhile
        del r_e, r_g
        gc.collect()
        old = m.runner(method, "fa2", "graphs")
        old(smooth_images(1, 512, 30).to(dev).half())
        del old
        threshold = gc.get_threshold()
        gc.set_threshold(1)
        try:
            fresh = m.runner(method, "fa2", "graphs")
            out = fresh(smooth_images(1, 512, 31).to(dev).half()).clone()
            ref = m.runner(method, "fa2", "eager")(smooth_images(1, 512, 31).to(dev).half())
            check(rel(out, ref) < 5e-2, f"capture beside a discarded runner's graphs (gc at every allocation): "
                                        f"rel {rel(out, ref):.2e}")
        except Exception as err:  # noqa: BLE001 - a failed capture is this check's failure
            check(False, f"capture beside a discarded runner's graphs: {type(err).__name__}: {str(err)[:200]}")
        finally:
            gc.set_threshold(*threshold)
        model.float()


def plain_checks(dev: torch.device) -> None:
    """The checks of the plain path (unchanged)."""
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.preset("T", num_classes=150)).to(dev)
    x32 = smooth_images(4, 512, 0).to(dev)
    cases = [("none", ()), ("mpm", (2, 5)), ("mpm", (0, 1, 2, 3)), ("tome", tuple(range(12))), ("algm", ())]
    with torch.inference_mode():
        for name, sched in cases:
            kwargs = {"r": 40} if name == "tome" else {}
            method = build_method(name, sched, **kwargs)
            ref, enc = model(x32, method=method, backend="math", return_encoder=True)
            counts = [t.tolist() for t in enc.tokens_left]
            for backend in ("math", "sdpa"):
                out, benc = model(x32, method=method, backend=backend, return_encoder=True)
                alone = [model(x32[i : i + 1], method=method, backend=backend, return_encoder=True) for i in range(4)]
                ra = rel(out, torch.cat([a[0] for a in alone]))
                same_maps = all(torch.equal(benc.index[i], alone[i][1].index[0]) for i in range(4))
                check(ra < 1e-4 and same_maps, f"fp32 {name}{list(sched)} {backend:5s} batch-vs-alone rel {ra:.2e} "
                                               f"maps equal {same_maps} tokens {counts}")
            m16 = model.half()
            for backend in ("math", "sdpa", "fa2", "triton"):
                out, henc = m16(x32.half(), method=method, backend=backend, return_encoder=True)
                r = rel(out, ref)
                maps = float((henc.index == enc.index).float().mean()) if enc.tokens_left else 1.0
                check(bool(torch.isfinite(out).all()) and r < 0.1,
                      f"fp16 {name}{list(sched)} {backend:5s} vs fp32-math rel {r:.2e} map agreement {maps:.4f}")
            model.float()
        try:
            model(x32, backend="fa2")
            check(False, "fa2 accepted fp32")
        except BackendError as err:
            check(True, f"fa2 + fp32 refused: {err}")
        try:
            model.half()(x32.half(), method=build_method("tome", range(12), r=8, prop_attn=True), backend="fa2")
            check(False, "fa2 accepted a logit bias")
        except BackendError as err:
            check(True, f"fa2 + prop_attn refused: {err}")


def main() -> int:
    assert torch.cuda.is_available(), "needs CUDA"
    dev = torch.device("cuda")
    which = [a for a in sys.argv[1:] if not a.startswith("--")] or ["kernels", "runner", "plain"]
    if "kernels" in which:
        kernel_checks(dev)
        attention_kernel_checks(dev)
        math_alignment_checks(dev)
    if "runner" in which:
        runner_checks(dev)
    if "plain" in which:
        plain_checks(dev)
    print(f"{FAILURES} failures")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
