"""GPU time of one attention call: FlashAttention-2 (padded and varlen) against the Triton flash kernel.

NOTES 39: at batch 1 the merged (packed) layout's attention takes FlashAttention-2's varlen mode,
which runs 128 query rows per program and no key split, while dense's padded batch gets FA2's
split-KV kernel. This study times, per model width (heads x 64) and batch size, fp16:

* ``fa2 dense``: SDPA's FlashAttention-2 kernel on the padded (B, H, N, D) views of one qkv projection;
* ``fa2 varlen``: its varlen mode on packed rows (``keep`` of each image's tokens, plus the
  speculative capacity's pad sequence), as the merged runner calls it;
* ``triton dense`` / ``triton varlen``: :func:`mpm.models.triton_attention.flash_varlen` on the same
  inputs, under each tiling of :data:`SWEEP`.

Each is timed as ``LOOP`` calls replayed in one CUDA graph (GPU time, no launch cost: what a graphed
forward pays), median over repeats; every Triton output is compared with FA2's on the same inputs.

    python benchmarks/attention_kernels.py --out /tmp/attention_kernels.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from merge_kernels import graph_ms  # noqa: E402
from mpm.io import write_json_atomic  # noqa: E402
from mpm.models import triton_attention as ta  # noqa: E402
from mpm.models.attention import Varlen, _fa2_varlen  # noqa: E402

#: model -> (heads, tokens incl. the class token) at Segmenter's resolution (512 px; Seg-L 640 px)
MODELS = {"T": (3, 1025), "S": (6, 1025), "B": (12, 1025), "L": (16, 1601)}
SWEEP = (
    ta.FlashTiles(16, 64, 4, 2), ta.FlashTiles(16, 128, 4, 2), ta.FlashTiles(16, 64, 2, 2),
    ta.FlashTiles(32, 32, 4, 2), ta.FlashTiles(32, 64, 4, 2), ta.FlashTiles(32, 64, 4, 3),
    ta.FlashTiles(32, 128, 4, 2), ta.FlashTiles(32, 64, 2, 3),
    ta.FlashTiles(64, 32, 4, 2), ta.FlashTiles(64, 64, 4, 2), ta.FlashTiles(64, 64, 4, 3),
    ta.FlashTiles(64, 128, 4, 2), ta.FlashTiles(64, 64, 8, 2),
    ta.FlashTiles(128, 64, 8, 2), ta.FlashTiles(128, 128, 8, 2), ta.FlashTiles(128, 64, 4, 2),
)


def inputs(heads: int, tokens: int, batch: int, keep: float, seed: int = 0):
    """qkv (B*N, 3, H, 64) fp16; the padded views; the packed rows' views, their ``Varlen`` and cu_seqlens."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    d = 64
    qkv = torch.randn(batch * tokens, 3, heads, d, device="cuda", dtype=torch.float16, generator=g)
    dense = [t.view(batch, tokens, heads, d).transpose(1, 2) for t in qkv.unbind(1)]  # (B, H, N, D) views
    dense_cu = torch.arange(batch + 1, device="cuda", dtype=torch.int32) * tokens
    n = max(1, round(keep * tokens))
    rows = batch * n
    cap = -(-int(rows * 1.05) // 64) * 64  # a speculative capacity: 5% and a multiple of 64 rows
    packed = torch.randn(cap, 3, heads, d, device="cuda", dtype=torch.float16, generator=g)
    cu = torch.tensor([i * n for i in range(batch + 1)] + [cap], device="cuda", dtype=torch.int32)
    start = torch.arange(batch, device="cuda") * n
    varlen = Varlen(cu, max(n, cap - rows), start, torch.full((batch,), n, device="cuda"))
    return qkv, dense, dense_cu, packed.unbind(1), varlen, n


def study(model: str, batch: int, keep: float, repeats: int) -> list[dict]:
    heads, tokens = MODELS[model]
    qkv, dense, dense_cu, packed, varlen, n = inputs(heads, tokens, batch, keep)
    scale = 64 ** -0.5
    flat = qkv.unbind(1)  # (B*N, H, D) views

    def fa2_dense():
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(*dense, scale=scale)

    ref_dense = fa2_dense().transpose(1, 2).reshape(batch * tokens, heads, 64).float()
    ref_packed = _fa2_varlen(*packed, varlen, scale)[: batch * n].float()
    rows = [{"model": model, "heads": heads, "tokens": tokens, "batch": batch, "kept": n, "kernel": "fa2",
             "layout": "dense", "ms": graph_ms(fa2_dense, repeats)},
            {"model": model, "heads": heads, "tokens": tokens, "batch": batch, "kept": n, "kernel": "fa2",
             "layout": "varlen", "ms": graph_ms(lambda: _fa2_varlen(*packed, varlen, scale), repeats)}]
    for tiles in SWEEP:
        for layout, args, ref in (("dense", (*flat, dense_cu, tokens), ref_dense),
                                  ("varlen", (*packed, varlen.cu_seqlens, varlen.max_len), ref_packed)):
            out = ta.flash_varlen(*args[:3], args[3], args[4], scale, tiles)
            err = (out[: ref.shape[0]].float() - ref).abs().max().item()
            ms = graph_ms(lambda: ta.flash_varlen(*args[:3], args[3], args[4], scale, tiles), repeats)
            rows.append({"model": model, "heads": heads, "tokens": tokens, "batch": batch, "kept": n,
                         "kernel": "triton", "layout": layout, "tiles": asdict(tiles), "ms": ms, "max_err": err})
    return rows


def probe(model: str, keep: float, repeats: int) -> list[dict]:
    """Batch 1: the same kept rows as one padded sequence (``flash_padded``), as one packed sequence, and as
    the runner packs them (plus the capacity's pad sequence), under two tilings; FA2 varlen beside."""
    heads, tokens = MODELS[model]
    _, _, _, packed, varlen, n = inputs(heads, tokens, 1, keep)
    scale = 64 ** -0.5
    one = torch.tensor([0, n], device="cuda", dtype=torch.int32)
    q, k, v = (t[:n] for t in packed)
    out = []
    cases = {
        "padded, one sequence": lambda tiles: ta.flash_padded(q, k, v, n, None, scale, tiles),
        "packed, one sequence": lambda tiles: ta.flash_varlen(q, k, v, one, n, scale, tiles),
        "packed + pad sequence": lambda tiles: ta.flash_varlen(*packed, varlen.cu_seqlens, varlen.max_len, scale,
                                                               tiles),
    }
    for tiles in (ta.FlashTiles(64, 64, 4, 3), ta.FlashTiles(64, 128, 4, 2)):
        for name, fn in cases.items():
            out.append({"model": model, "kept": n, "case": name, "tiles": asdict(tiles),
                        "ms": graph_ms(lambda: fn(tiles), repeats)})
    out.append({"model": model, "kept": n, "case": "fa2 varlen, one sequence", "ms": graph_ms(
        lambda: torch.ops.aten._flash_attention_forward(q, k, v, one, one, n, n, 0.0, False, False, scale=scale)[0],
        repeats)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="T,S,B,L")
    ap.add_argument("--batches", default="1,2,32")
    ap.add_argument("--keep", type=float, default=0.85, help="share of each image's tokens in the packed layout")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--probe", action="store_true", help="batch 1 only: one padded / packed sequence, and as packed "
                                                          "by the runner (pad sequence), under two tilings")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("attention_kernels.py needs a CUDA device", file=sys.stderr)
        return 2
    rows = []
    if args.probe:
        for model in args.models.split(","):
            rows += probe(model, args.keep, args.repeats)
        write_json_atomic(args.out, rows)
        for r in rows:
            t = r.get("tiles")
            print(f"{r['model']:3} n={r['kept']:5d} {r['case']:26} {str(tuple(t.values())) if t else '':16} "
                  f"{r['ms'] * 1e3:7.1f} us")
        return 0
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            rows += study(model, batch, args.keep, args.repeats)
    write_json_atomic(args.out, rows)
    worst = max((r["max_err"] for r in rows if "max_err" in r), default=0.0)
    print(f"largest |triton - fa2| over every row: {worst:.2e}")
    print(f"{'model':5} {'batch':>5} {'layout':7} {'fa2 us':>8} {'best triton us':>14}  tiles (m, n, warps, stages)")
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for layout in ("dense", "varlen"):
                sel = [r for r in rows if r["model"] == model and r["batch"] == batch and r["layout"] == layout]
                fa2 = next(r for r in sel if r["kernel"] == "fa2")
                best = min((r for r in sel if r["kernel"] == "triton"), key=lambda r: r["ms"])
                t = best["tiles"]
                print(f"{model:5} {batch:5d} {layout:7} {fa2['ms'] * 1e3:8.1f} {best['ms'] * 1e3:14.1f}  "
                      f"({t['block_m']}, {t['block_n']}, {t['num_warps']}, {t['num_stages']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
