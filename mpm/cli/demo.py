"""``mpm train-demo``: train the offline demo Seg-T/16 on the synthetic set (CPU, minutes)."""

from __future__ import annotations

import sys
from pathlib import Path


#: the demo recipe's defaults, for --help only (they live in mpm.evaluation.train_demo.TrainDemoConfig;
#: importing it here would load torch for every `mpm` command)
_HELP_DEFAULTS = {"seed": 0, "threads": 2, "steps": 300, "batch_size": 8, "train_crop": 128, "lr": 6e-4}


def register(subparsers) -> None:
    d = _HELP_DEFAULTS
    parser = subparsers.add_parser(
        "train-demo", help="train the offline demo model (Seg-T/16) on the synthetic set",
        description="Train a Segmenter with the real ViT-T/16 architecture from scratch on the train split "
                    "of the synthetic demo set (`mpm synth --root DIR --prepare`), deterministically by "
                    "seed and by a fixed step budget, on the CPU. Writes the checkpoint (readable by "
                    "`mpm eval`) and OUT.json describing the training. The data is synthetic: the "
                    "weights mean nothing on real images.",
    )
    parser.add_argument("--data-root", required=True, help="root of the prepared synthetic set")
    parser.add_argument("--out", required=True, help="checkpoint to write (sidecar: OUT.json)")
    parser.add_argument("--seed", type=int, default=d["seed"], help=f"random seed (default {d['seed']})")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="abort with an error, writing nothing, if training takes longer than this "
                             "(default: no limit). Training always runs all --steps: it never stops early")
    parser.add_argument("--threads", type=int, default=d["threads"],
                        help=f"torch CPU threads (default {d['threads']})")
    parser.add_argument("--steps", type=int, default=None, help=f"optimiser steps (default {d['steps']})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {d['batch_size']}")
    parser.add_argument("--train-crop", type=int, default=None,
                        help=f"training crop, a multiple of 16 (default {d['train_crop']})")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {d['lr']:g})")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mpm.evaluation.train_demo import train_demo

    try:
        recipe = {k: v for k, v in (("batch_size", args.batch_size), ("train_crop", args.train_crop),
                                    ("lr", args.lr)) if v is not None}
        side = train_demo(args.data_root, args.out, seed=args.seed, time_limit=args.time_limit,
                          threads=args.threads or None, steps=args.steps, progress=args.progress, **recipe)
    except KeyboardInterrupt:
        print("mpm train-demo: interrupted, nothing written", file=sys.stderr)
        return 130
    wall = side["wall_time_s"]
    print(f"trained {side['model']['architecture']} for {side['steps_done']} of {side['training']['steps']} steps "
          f"in {wall['train']:.0f} s; final loss {side['loss']['mean_last_10pct']:.4f}")
    print(f"wrote {args.out} and {Path(args.out).name}.json (synthetic demo model)")
    return 0
