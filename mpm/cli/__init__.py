"""The ``mpm`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mpm.errors import MPMError

#: command modules, in the order they are listed by ``mpm --help``
COMMAND_MODULES = (
    "mpm.cli.fetch",
    "mpm.cli.prepare",
    "mpm.cli.synth",
    "mpm.cli.demo",
    "mpm.cli.eval",
    "mpm.cli.bench",
    "mpm.cli.track",
    "mpm.cli.tables",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from mpm import __version__

    return f"mpm {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MPMError as err:
        print(f"mpm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
