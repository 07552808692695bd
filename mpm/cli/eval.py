"""``mpm eval``: evaluate a checkpoint on a prepared split (mmseg Segmenter protocol)."""

from __future__ import annotations

import sys
from pathlib import Path

from mpm.cli._args import (
    add_merge_options,
    check_device,
    count,
    input_file,
    int_pair,
    merge_options,
    output_file,
    output_file_or_dir,
    parse_method_args,
    parse_schedule,
)
from mpm.records.names import NAMES_HELP, names_argument, schedule_name

__all__ = ["parse_method_args", "parse_schedule", "register", "run"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: mIoU, tokens left, GFLOPs (sliding-window protocol)",
        description="Evaluate a Segmenter checkpoint on a prepared split by mmsegmentation's single-scale "
                    "sliding-window protocol, with a merge method and schedule. Writes one JSON "
                    "(schema mpm.eval/1) atomically when the run is complete; an interrupted run writes "
                    "nothing and leaves earlier output untouched.",
    )
    parser.add_argument("--data-root", required=True, help="dataset root (as given to `mpm prepare`/`mpm synth`)")
    parser.add_argument("--dataset", required=True, help="ade20k | cityscapes | pascal_context | synthetic ...")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument("--checkpoint", required=True, type=input_file,
                        help="checkpoint file (Segmenter, mmseg or mpm format)")
    add_merge_options(parser, defaults={"method": "none", "batch_policy": "exact", "backend": "math"})
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=count(1), default=1, metavar="N",
                        help="windows per forward (default 1)")
    parser.add_argument("--limit", type=count(1), default=None, metavar="N",
                        help="evaluate only the first N images (the result is marked partial)")
    parser.add_argument("--crop", type=count(1), default=None, metavar="N", help="override the sliding-window crop")
    parser.add_argument("--stride", type=count(1), default=None, metavar="N",
                        help="override the sliding-window stride")
    parser.add_argument("--test-scale", type=int_pair("two sizes, e.g. 2048,512"), default=None,
                        metavar="LONG,SHORT", help="override the resize scale")
    parser.add_argument("--threads", type=count(1), default=None, metavar="N", help="torch CPU threads")
    parser.add_argument("--workers", type=count(0), default=1, metavar="N",
                        help="threads reading images ahead (default 1; 0 = inline)")
    parser.add_argument("--verify", action="store_true", help="re-hash every file of the split first")
    parser.add_argument("--out", required=True, type=output_file_or_dir,
                        help="result JSON to write, or an existing folder (or a path ending in /): the file is "
                             "then named DATASET-SPLIT__MODEL__METHOD-SCHEDULE.json")
    parser.add_argument("--per-class-csv", type=output_file, default=None, metavar="PATH",
                        help="also write per-class IoU/Acc")
    parser.add_argument("--names", type=names_argument, default=None, metavar="KEY=NAME,...", help=NAMES_HELP)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from mpm.data.datasets import load_split
    from mpm.evaluation.evaluate import evaluate
    from mpm.models.checkpoints import load_segmenter

    method, schedule, method_kwargs = merge_options(args)
    check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out_dir = out.is_dir() or args.out.endswith(("/", "\\"))
    try:
        split = load_split(args.data_root, args.dataset, args.split, verify=args.verify)
        model = load_segmenter(args.checkpoint, num_classes=split.spec.num_classes)
        result = evaluate(
            model, split, method=method, schedule=schedule, method_kwargs=method_kwargs,
            batch_policy=args.batch_policy, backend=args.backend, dtype=args.dtype, device=args.device,
            batch_size=args.batch_size, limit=args.limit, progress=args.progress, crop=args.crop,
            stride=args.stride, test_scale=args.test_scale, checkpoint=args.checkpoint,
            workers=args.workers, names={"schedule": schedule_name(schedule), **(args.names or {})},
        )
    except KeyboardInterrupt:
        kept = f"; the earlier {out} is unchanged" if out.is_file() else ""
        print(f"mpm eval: interrupted, nothing written{kept}", file=sys.stderr)
        return 130
    if out_dir:
        from mpm.evaluation.evaluate import result_filename

        out = out / result_filename(result.record)
    result.save(out, per_class_csv=args.per_class_csv)
    print(result.summary_line())
    print(f"wrote {out}" + (f" and {args.per_class_csv}" if args.per_class_csv else ""))
    return 0
