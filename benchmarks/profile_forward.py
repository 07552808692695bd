"""Profile one Segmenter forward on the GPU: the top CUDA kernels by time.

    python benchmarks/profile_forward.py --model T --method mpm --schedule 2,5 --backend fa2 --batch 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpm.merging import build_method  # noqa: E402
from mpm.models import SegmenterConfig, build_segmenter  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="T")
    ap.add_argument("--method", default="mpm")
    ap.add_argument("--schedule", default="2,5")
    ap.add_argument("--backend", default="fa2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--batch-policy", default="exact")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.preset(args.model, 150)).cuda().half()
    size = model.config.image_size
    low = torch.randn(args.batch, 3, size[0] // 64, size[1] // 64, device="cuda")
    x = torch.nn.functional.interpolate(low, size=size, mode="bicubic").clamp(-1, 1).half()
    sched = tuple(int(s) for s in args.schedule.split(",") if s)
    method = build_method(args.method, sched, batch_policy=args.batch_policy)
    with torch.inference_mode():
        for _ in range(5):
            model(x, method=method, backend=args.backend)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                model(x, method=method, backend=args.backend)
            torch.cuda.synchronize()
    print(f"== {args.model} {args.method}{sched} {args.batch_policy} {args.backend} batch {args.batch} (3 forwards)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
