"""``mpm fetch``: download (or place) datasets and checkpoints, verified."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mpm.cli._args import count, input_file, output_dir
from mpm.data.download import DEFAULT_RETRIES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fetch", help="download datasets and checkpoints (resumable, checksum-verified)",
        description="Download datasets and checkpoints. Files already present and verified are not "
                    "requested again; --from takes files downloaded elsewhere (verified too).",
    )
    sub = parser.add_subparsers(dest="what", metavar="WHAT")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--from", dest="from_paths", action="append", default=[], metavar="PATH", type=input_file,
                        help="an already-downloaded file, or a folder holding them (repeatable)")
    common.add_argument("--mirror", metavar="URL",
                        help="base URL replacing the official ones (default: $MPM_MIRROR); for Cityscapes "
                             "the site base (default: $MPM_CITYSCAPES_URL or the official site)")
    common.add_argument("--retries", type=count(0), default=DEFAULT_RETRIES, metavar="N",
                        help=f"further attempts after a failed transfer (default {DEFAULT_RETRIES})")
    common.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar")
    common.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the checksum checks (only if a published checksum is known to be wrong)")

    ds = sub.add_parser("dataset", parents=[common], help="fetch ade20k, cityscapes or pascal_context",
                        description="Fetch a dataset into ROOT (archives kept in ROOT/downloads). Cityscapes "
                                    "needs CITYSCAPES_USERNAME/CITYSCAPES_PASSWORD or a netrc entry.")
    ds.add_argument("name", help="ade20k | cityscapes | pascal_context")
    ds.add_argument("--root", required=True, type=output_dir, help="dataset root folder")
    ds.add_argument("--no-extract", dest="extract", action="store_false", help="download only")
    ds.set_defaults(func=run_dataset)

    ck = sub.add_parser("checkpoint", parents=[common], help="fetch a model-zoo checkpoint into DEST/NAME/")
    ck.add_argument("name", help="a zoo entry (see `mpm fetch list`)")
    ck.add_argument("--dest", required=True, type=output_dir, help="checkpoint root folder")
    ck.set_defaults(func=run_checkpoint)

    ls = sub.add_parser("list", help="list the datasets and checkpoints that can be fetched")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)


def _logging() -> None:
    """INFO messages of the data layer on stderr (unless logging is already set up), URLs redacted."""
    from mpm.io import RedactingFilter

    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def run_dataset(args) -> int:
    from mpm.data.fetch import fetch_dataset

    _logging()
    paths = fetch_dataset(args.name, args.root, from_paths=args.from_paths, mirror=args.mirror,
                          extract=args.extract, retries=args.retries, progress=args.progress, verify=args.verify)
    for path in paths:
        print(path)
    return 0


def run_checkpoint(args) -> int:
    from mpm.data.fetch import fetch_checkpoint

    _logging()
    print(fetch_checkpoint(args.name, args.dest, from_paths=args.from_paths, mirror=args.mirror,
                           retries=args.retries, progress=args.progress, verify=args.verify))
    return 0


def run_list(args) -> int:
    from mpm.data.datasets import DATASETS
    from mpm.data.sources import DATASET_FILES
    from mpm.data.zoo import ZOO

    if args.json:
        print(json.dumps({
            "datasets": {name: [f.filename for f in files] for name, files in DATASET_FILES.items()},
            "label_spaces": {name: spec.to_dict() for name, spec in DATASETS.items()},
            "checkpoints": {name: entry.to_dict() for name, entry in ZOO.items()},
        }, indent=1))
        return 0
    print("datasets:")
    for name, files in DATASET_FILES.items():
        print(f"  {name:<16} {', '.join(f.filename for f in files)}")
    print("checkpoints:")
    for name, e in ZOO.items():
        print(f"  {name:<32} {e.format:<9} {e.dataset:<18} ViT-{e.backbone}/{e.patch_size} {e.decoder:<6} "
              f"{e.crop_size}px  mIoU {e.reported_miou}")
    return 0
