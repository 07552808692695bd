"""Micro-benchmarks of the kernels the merged forward leans on (H100, fp16).

1. Attention over a batch of variable-length sequences (what exact batching
   needs after a merge): PyTorch's FlashAttention-2 kernel on the dense padded
   batch (an upper bound that ignores lengths), through nested jagged tensors,
   through ``aten._flash_attention_forward`` with cumulative sequence lengths,
   and SDPA with a key-padding mask.
2. Bilinear upsampling of class logits to the image size (the end of
   Segmenter's forward): ``F.interpolate`` (NCHW and channels-last) against a
   separable matrix-product formulation.
Prints one line per variant (median ms over CUDA-event-timed repeats).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpm.models.attention import Packing  # noqa: E402


def bench(fn, iters: int = 50, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return statistics.median(ts)


def main() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev, dt = torch.device("cuda"), torch.float16
    g = torch.Generator(device=dev).manual_seed(0)
    for b, h, d, nmax in ((32, 3, 64, 813), (32, 12, 64, 813), (1, 3, 64, 813), (32, 16, 64, 1300)):
        lengths = torch.randint(nmax - 60, nmax + 1, (b,), device=dev, generator=g)
        lengths[0] = nmax
        packing = Packing(lengths, nmax)
        t = packing.total
        q, k, v = (torch.randn(t, h, d, device=dev, dtype=dt, generator=g) for _ in range(3))
        qp, kp, vp = (packing.unpack(x.flatten(1)).view(b, nmax, h, d).transpose(1, 2) for x in (q, k, v))
        cu = packing.offsets.to(torch.int32)
        mask = (torch.arange(nmax, device=dev) < lengths[:, None])[:, None, None, :]

        def dense():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(qp, kp, vp)

        def njt():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                jq, jk, jv = (packing.jagged(x) for x in (q, k, v))
                return F.scaled_dot_product_attention(jq, jk, jv).transpose(1, 2).values()

        def aten_varlen():
            return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, packing.max_len, packing.max_len,
                                                           0.0, False, False)[0]

        def masked():
            return F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask)

        def math():
            a = (qp * d**-0.5) @ kp.transpose(-2, -1)
            return a.masked_fill(~mask, float("-inf")).softmax(-1) @ vp

        ref = aten_varlen()
        err = (njt() - ref).abs().max().item()
        print(f"attention B={b} H={h} N<={nmax} tokens={t}: njt-vs-aten max|diff| {err:.1e}")
        for name, fn in (("fa2 dense padded (ignores lengths)", dense), ("fa2 nested jagged", njt),
                         ("fa2 aten varlen", aten_varlen), ("sdpa + key mask", masked), ("math + key mask", math)):
            print(f"  {name:36s} {bench(fn):8.3f} ms")

    for b, k, hw in ((32, 150, 32), (1, 150, 32), (32, 150, 40)):
        x = torch.randn(b, k, hw, hw, device=dev, dtype=dt, generator=g)
        size = (hw * 16, hw * 16)
        from mpm.models.decoders import upsample as ours

        def interp():
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

        def interp_cl():
            return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                                 align_corners=False)

        ref = interp()
        err = (ours(x, size) - ref).abs().max().item()
        print(f"upsample B={b} K={k} {hw}->{size[0]}: ours-vs-interpolate max|diff| {err:.1e}")
        for name, fn in (("F.interpolate NCHW", interp), ("F.interpolate channels-last", interp_cl),
                         ("mpm.models.decoders.upsample", lambda: ours(x, size))):
            print(f"  {name:36s} {bench(fn):8.3f} ms")


if __name__ == "__main__":
    main()
