"""Dense GFLOPs of Segmenter T/S/B/L (150 classes) from the analytic counter, as a Markdown table.

    python benchmarks/flops_table.py > results/reference/flops.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpm.models import SegmenterConfig, segmenter_flops  # noqa: E402

print("| model | input | GFLOPs (1 multiply-add = 2 FLOPs, matmul-type ops) |")
print("|---|---|---|")
for size, px in (("T", 512), ("S", 512), ("B", 512), ("L", 640), ("L", 512)):
    cfg = SegmenterConfig.preset(size, 150, image_size=(px, px))
    print(f"| Seg-{size}/16 | {px}x{px} | {segmenter_flops(cfg, (px, px)).total:.2f} |")
