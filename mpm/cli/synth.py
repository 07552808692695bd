"""``mpm synth``: generate the offline synthetic demo set (ADE20K layout)."""

from __future__ import annotations

import time

from mpm.cli._args import count, output_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="generate the synthetic demo set (offline, deterministic)",
        description="Write a synthetic textured-region segmentation set in ADE20K's on-disk layout "
                    "(ROOT/ADEChallengeData2016/...), with synthetic.json naming its classes. "
                    "The same arguments give byte-identical files.",
    )
    parser.add_argument("--root", required=True, type=output_dir, help="output root folder")
    parser.add_argument("--n-train", type=count(0), default=300, help="training images (default 300)")
    parser.add_argument("--n-val", type=count(0), default=60, help="validation images (default 60)")
    parser.add_argument("--size", type=count(32), default=256,
                        help="smallest image side; sides vary up to 1.25x (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--prepare", action="store_true", help="also write the manifests (`mpm prepare synthetic`)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mpm.data.synthetic import generate

    start = time.perf_counter()
    meta = generate(args.root, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed)
    print(f"synthetic set: {meta['n_train']} train + {meta['n_val']} val images, {meta['num_classes']} classes, "
          f"in {args.root} ({time.perf_counter() - start:.1f} s)")
    if args.prepare:
        from mpm.data.prepare import prepare_dataset

        for path in prepare_dataset("synthetic", args.root, progress=False):
            print(path)
    return 0
