"""How close MPM's partner choices come to ties: the smallest top-1 / top-2 cosine margin per merge site.

Two runtimes that compute a merge site's tokens with different rounding (PyTorch and ONNX Runtime
differ by ~3e-5 in the logits, fp32) pick different partners wherever a token's two best cosine
similarities lie closer than that difference. This prints, for the models and images of
``benchmarks/edge.py`` (random init, seed 0, its synthetic images), each image's smallest margin
at each merge site, in PyTorch (:mod:`mpm.benchmarking.margins`):

    python benchmarks/partner_margins.py --models T,S --num-images 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import edge  # noqa: E402
from mpm.benchmarking.margins import site_margins  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="T,S")
    ap.add_argument("--schedule", default="2,5")
    ap.add_argument("--images", default=None, help="'photos' (scikit-image) or a folder; default synthetic")
    ap.add_argument("--num-images", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--out", default=None, help="JSON file (optional)")
    args = ap.parse_args()
    opts = argparse.Namespace(images=args.images, num_images=args.num_images, seed=args.seed, checkpoint=None,
                              num_classes=150, crop=args.crop)
    images, source = edge.make_images(opts, args.crop)
    schedule = tuple(int(b) for b in args.schedule.split(","))
    rows = []
    for size in args.models.split(","):
        model, weights = edge.build(size, opts)
        for i in range(images.shape[0]):
            margins = site_margins(model, model.normalize(images[i:i + 1].float()), schedule)
            rows.append({"model": f"Seg-{size}/16", "image": i, "blocks": list(schedule), "min_margin": margins})
            print(f"Seg-{size}/16 image {i}: smallest top-1/top-2 cosine margin per site (blocks {args.schedule}): "
                  + ", ".join(f"{m:.1e}" for m in margins))
    if args.out:
        Path(args.out).write_text(json.dumps({"images": source, "weights": weights, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
