"""The ``mpm`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; this module only assembles them. :func:`run_command`
is how every entry point runs one: an :class:`~mpm.errors.MPMError` or a refused
option is one line on stderr and exit status 2, Ctrl-C is one line
(``interrupted``) and status 130, never a traceback; credentials in URLs are
redacted from both (:func:`mpm.io.redact_url`). This module imports almost
nothing at import time, so that a Ctrl-C right at start-up already lands in
:func:`run_command`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

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
    from mpm.cli._args import Parser

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
    ``argv`` None means this process's command line: this process is the command; after
    an interrupt it ends here with status 130 (:func:`exit_now`), and once the command is
    done a late Ctrl-C no longer changes its status.
    """
    code = _run_command(build, argv, prog)
    if argv is None:
        import signal

        if code == 130:
            exit_now(code)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: only the exit is left
    return code


def _run_command(build: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None, prog: str) -> int:
    name = prog
    with _InterruptWatch() as watch:
        try:
            from mpm.cli._args import UsageError
            from mpm.errors import MPMError
            from mpm.io import redact_url

            args = build().parse_args(argv)
            if getattr(args, "command", None):
                name = f"{prog} {args.command}"
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            return _interrupted(name)
        except UsageError as err:
            print(f"{err.prog}: error: {redact_url(str(err))}", file=sys.stderr)
            return 2
        except MPMError as err:
            print(f"{name}: error: {redact_url(str(err))}", file=sys.stderr)
            return 2
        except BaseException:
            if watch.interrupted:  # a Ctrl-C that a library turned into another error (numpy: ImportError)
                return _interrupted(name)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _interrupted(name: str) -> int:
    print(f"{name}: interrupted", file=sys.stderr)
    return 130


class _InterruptWatch:
    """Makes a Ctrl-C while the command runs end it, whatever code it lands in.

    Python's handler raises KeyboardInterrupt wherever the main thread is, and two places
    lose it: a C extension reporting the KeyboardInterrupt of its own import as an
    ImportError (numpy), and a callback whose exception is only printed ("Exception
    ignored in ..."). The first is recognised by ``interrupted``; the second is
    delivered again, silently, to the main thread.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None
        self._hook = None

    def _handler(self, signum, frame) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def _unraisable(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._deliver_again()
            return
        self._hook(unraisable)

    @staticmethod
    def _deliver_again() -> None:
        """SIGINT once more, from another thread: the main thread takes it after this callback returned."""
        import _thread
        import threading

        timer = threading.Timer(0.01, _thread.interrupt_main)
        timer.daemon = True
        timer.start()

    def __enter__(self) -> _InterruptWatch:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            import signal

            signal.signal(signal.SIGINT, self._previous)
            sys.unraisablehook = self._hook


def main(argv: list[str] | None = None) -> int:
    """The ``mpm`` command."""
    return run_command(build_parser, argv, "mpm")


def exit_now(code: int) -> None:
    """End this process with ``code`` after an interrupt, everything already cleaned up by then.

    Not ``sys.exit``: CPython can remember a KeyboardInterrupt that passed through some
    of its C paths during an import and then kill itself with SIGINT at exit, however the
    exception was handled (seen here: status -2 instead of 130, about 1 run in 40).
    """
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
