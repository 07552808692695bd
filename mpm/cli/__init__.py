"""The ``mpm`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; this module only assembles them. :func:`run_command`
is how every entry point runs one: an :class:`~mpm.errors.MPMError` or a refused
option is one line on stderr and exit status 2, Ctrl-C is one line
(``interrupted``) and status 130, never a traceback; credentials in URLs are
redacted from both (:func:`mpm.io.redact_url`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from mpm.cli._args import Parser, UsageError
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
    parser = Parser(prog="mpm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from mpm import __version__

    return f"mpm {__version__}"


def run_command(build: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None, prog: str) -> int:
    """Parse ``argv`` with the parser ``build()`` makes and run the chosen command; the exit status.

    ``prog`` names the program in messages until the command is known (then ``mpm COMMAND``).
    """
    from mpm.io import redact_url

    name = prog
    try:
        args = build().parse_args(argv)
        if getattr(args, "command", None):
            name = f"{prog} {args.command}"
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"{err.prog}: error: {redact_url(str(err))}", file=sys.stderr)
        return 2
    except MPMError as err:
        print(f"{name}: error: {redact_url(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """The ``mpm`` command."""
    return run_command(build_parser, argv, "mpm")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
