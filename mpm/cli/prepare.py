"""``mpm prepare``: convert labels and write the split manifests later stages read."""

from __future__ import annotations

import logging
import sys

from mpm.cli._args import count, input_file


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="convert a fetched dataset's labels and write its manifests",
        description="Prepare a dataset under ROOT: convert labels where needed (Cityscapes polygons to "
                    "trainIds, Pascal Context JSON to 59-class masks) and write "
                    "ROOT/manifests/NAME-SPLIT.json. Fails listing missing or unreadable files.",
    )
    parser.add_argument("name", help="ade20k | cityscapes | pascal_context | synthetic")
    parser.add_argument("--root", required=True, type=input_file,
                        help="dataset root folder (as given to `mpm fetch`/`mpm synth`)")
    parser.add_argument("--split", dest="splits", action="append", choices=("train", "val"),
                        help="split to prepare (repeatable; default: train and val)")
    parser.add_argument("--workers", type=count(1), default=None, metavar="N",
                        help="processes for label conversion (default: up to 4)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from mpm.data.prepare import prepare_dataset

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for path in prepare_dataset(args.name, args.root, splits=args.splits, workers=args.workers,
                                progress=args.progress):
        print(path)
    return 0
