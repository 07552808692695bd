"""Argument parsers and checks shared by the ``mpm`` commands.

Everything a command can check before its long work is checked here, once, in the
same words for every command: counts (``--threads 0``), pairs (``--crop 0``), output
paths (``--out`` under a file), devices (``--device cuda`` without a GPU) and
method/schedule combinations. A bad value is a one-line error naming the option
(exit status 2, no usage dump, no traceback): :class:`Parser` turns argparse's
errors into :class:`UsageError`, which the command runner prints like any
:class:`~mpm.errors.MPMError`.
"""

from __future__ import annotations

import argparse
import ast
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mpm.backends import backend_names
from mpm.errors import ConfigError
from mpm.methods import BATCH_POLICIES, available_methods, get_spec, identify


# --------------------------------------------------------------------------- the parser


class UsageError(ConfigError):
    """A command line that argparse refused; ``prog`` is the (sub)command that refused it."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised as :class:`UsageError`, not printed + exit)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self.prog, f"{message} (see `{self.prog} --help`)")


# --------------------------------------------------------------------------- argparse types


def _type_error(text: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")


def count(minimum: int = 1) -> Callable[[str], int]:
    """argparse ``type=``: an integer >= ``minimum`` (``--threads 0`` and ``--workers -1`` are refused)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _type_error(text, f"an integer >= {minimum}") from None
        if value < minimum:
            raise _type_error(text, f"an integer >= {minimum}")
        return value

    convert.__name__ = f"integer >= {minimum}"
    return convert


def positive_number(text: str) -> float:
    """argparse ``type=``: a number > 0 (seconds, intervals)."""
    try:
        value = float(text)
    except ValueError:
        raise _type_error(text, "a number > 0") from None
    if not value > 0 or value == float("inf"):
        raise _type_error(text, "a number > 0")
    return value


def int_pair(example: str, single: bool = False) -> Callable[[str], tuple[int, int]]:
    """argparse ``type=``: ``"2048,512"`` / ``"2048x512"`` -> (2048, 512), both >= 1 (see :func:`parse_int_pair`)."""

    def convert(text: str) -> tuple[int, int]:
        vals = _int_pair(text, single)
        if vals is None:
            raise _type_error(text, example)
        return vals

    return convert


def schedule(text: str) -> tuple[int, ...] | str:
    """argparse ``type=`` of ``--schedule`` (see :func:`parse_schedule`)."""
    try:
        return parse_schedule(text)  # type: ignore[return-value]
    except ConfigError:
        raise _type_error(text, "comma-separated block indices (e.g. 2,5), 'all' or 'none'") from None


def method_name(text: str) -> str:
    """argparse ``type=`` of ``--method``: a registered merge method (:mod:`mpm.methods`), lower-cased."""
    name = text.strip().lower()
    if name not in available_methods():
        raise argparse.ArgumentTypeError(f"unknown merge method {text!r}; available: {', '.join(available_methods())}")
    return name


def input_file(text: str) -> str:
    """argparse ``type=``: an existing file (or folder: the reader decides), checked before any work."""
    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text


def output_file(text: str) -> str:
    """argparse ``type=``: a file this command may write (see :func:`check_output`)."""
    return _output(text, folder=False)


def output_file_or_dir(text: str) -> str:
    """argparse ``type=``: a file to write, or a folder (an existing one, or a path ending in ``/``)."""
    return _output(text, folder=None)


def output_dir(text: str) -> str:
    """argparse ``type=``: a folder this command may create and write into."""
    return _output(text, folder=True)


def _output(text: str, folder: bool | None) -> str:
    try:
        check_output(text, folder=folder)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


# --------------------------------------------------------------------------- checks


def check_output(path: str | os.PathLike, *, folder: bool | None = False, flag: str = "") -> None:
    """Refuse an output path that cannot be written, before the work that produces it.

    ``folder``: False for a file (an existing folder there is refused), True for a
    folder (an existing file there is refused), None for either (a path ending in
    ``/`` is a folder). The nearest existing ancestor must be a writable folder:
    ``--out results.json/x.json`` where ``results.json`` is a file, or a read-only
    folder, fail here, not after an hour of evaluation. Nothing is created.
    """
    text = os.fspath(path)
    where = f"{flag} {text}: " if flag else ""
    if not text.strip():
        raise ConfigError(f"{where}empty path".strip())
    p = Path(text).expanduser()
    as_folder = folder is True or (folder is None and (text.endswith(("/", os.sep)) or p.is_dir()))
    if p.exists():
        if p.is_dir() and not as_folder:
            raise ConfigError(f"{where}{p} is a folder, not a file")
        if not p.is_dir() and as_folder:
            raise ConfigError(f"{where}{p} is a file, not a folder")
    ancestor = p if as_folder and p.is_dir() else p.parent  # a file is replaced by a rename in its folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    shown = ancestor if str(ancestor) else Path(".")
    if not ancestor.is_dir():
        raise ConfigError(f"{where}cannot write there: {shown} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}cannot write there: no write permission in {shown}")


def check_device(text: str, flag: str = "--device") -> str:
    """``cpu``, ``cuda``, ``cuda:N`` (or another torch device type) that this machine can run; else ConfigError.

    ``--device cuda`` on a machine without a usable GPU is refused here, naming the
    option, instead of failing inside torch after the data is loaded.
    """
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{flag} {text!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            raise ConfigError(f"{flag} {text}: no usable CUDA GPU on this machine (torch {torch.__version__}, "
                              f"{build}); use {flag} cpu")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise ConfigError(f"{flag} {text}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    return text


def method_schedule(method: str, given: tuple[int, ...] | str | None,
                    method_kwargs: dict[str, Any] | None = None) -> tuple[int, ...] | str:
    """The schedule a method runs with: ``given``, else the method's default (MPM: 2,5).

    A schedule that the method would ignore (``--method none --schedule 2,5``: the
    dense model never merges) is refused rather than dropped silently, so a result
    is never labelled with blocks that did nothing. Which methods ignore a schedule,
    and each method's default, are asked of the method specs (:mod:`mpm.methods`),
    not listed here.
    """
    if given is None:
        return get_spec(method).default_schedule
    if given:
        probe = identify(method, (0,) if given == "all" else given, **dict(method_kwargs or {}))
        if not probe.schedule:
            shown = given if isinstance(given, str) else ",".join(str(b) for b in given)
            raise ConfigError(f"--schedule {shown}: method {method!r} never merges, so a schedule does nothing; "
                              "drop --schedule (or give --schedule none), or choose a merge method")
    return given


# --------------------------------------------------------------------------- the merge options


def add_merge_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      defaults: dict[str, Any] | None = None) -> None:
    """``--method``, ``--schedule``, ``--method-arg``, ``--batch-policy``, ``--backend``: declared once for
    ``mpm eval`` and ``mpm bench``; names and choices come from the method and backend registries.

    ``defaults``: the values of ``method``, ``batch_policy`` and ``backend`` when not given (``mpm eval``:
    ``none``, ``exact``, ``math``); without them the options default to None (``mpm bench``: a ``--spec``
    file or the benchmark's own defaults fill them), and the help shows the same values.
    """
    given = dict(defaults or {})
    shown = {"method": "none", "batch_policy": "exact", "backend": "math", **given}
    methods = " | ".join(available_methods())
    parser.add_argument("--method", type=method_name, default=given.get("method"),
                        help=f"merge method: {methods} (default {shown['method']})")
    defaults_text = ", ".join(f"{n}: {','.join(map(str, get_spec(n).default_schedule))}"
                              for n in available_methods() if get_spec(n).default_schedule)
    parser.add_argument("--schedule", type=schedule, default=None,
                        help="blocks (0-based) before/in which the method runs, e.g. 2,5, or all "
                             f"(default: {defaults_text or 'none'}; the method's own otherwise)")
    params = "; ".join(f"{n}: {', '.join(get_spec(n).defaults)}" for n in available_methods()
                       if get_spec(n).defaults)
    parser.add_argument("--method-arg", dest="method_args", action="append", default=[], metavar="KEY=VALUE",
                        help=f"method parameter, e.g. r=8 for tome (repeatable; {params})")
    parser.add_argument("--batch-policy", default=given.get("batch_policy"), choices=BATCH_POLICIES,
                        help="how images of one batch with different token counts run "
                             f"(default {shown['batch_policy']})")
    parser.add_argument("--backend", default=given.get("backend"), choices=backend_names(),
                        help=f"attention backend (default {shown['backend']})")


def merge_options(args: argparse.Namespace) -> tuple[str, tuple[int, ...] | str, dict[str, Any]]:
    """(method, schedule, method kwargs) of the options of :func:`add_merge_options`: the schedule is the
    given one or the method's default, and one the method would ignore is refused (:func:`method_schedule`)."""
    name = (args.method or "none").strip().lower()
    kwargs = parse_method_args(args.method_args)
    return name, method_schedule(name, args.schedule, kwargs), kwargs


# --------------------------------------------------------------------------- parsers


def parse_schedule(text: str | None) -> tuple[int, ...] | str | None:
    """``"2,5"`` -> (2, 5); ``""``/``"none"`` -> (); ``"all"`` -> ``"all"`` (every block); None stays None."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("", "none", "-", "[]", "()"):
        return ()
    if text.lower() == "all":
        return "all"
    try:
        return tuple(int(v) for v in text.strip("[]()").replace(" ", "").split(",") if v != "")
    except ValueError:
        raise ConfigError(f"--schedule {text!r}: expected comma-separated block indices (e.g. 2,5) or 'all'") from None


def parse_method_args(items: list[str] | None) -> dict[str, Any]:
    """``["r=8", "prop_attn=true", "window=2,2"]`` -> ``{"r": 8, "prop_attn": True, "window": (2, 2)}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--method-arg {item!r}: expected KEY=VALUE")
        key, value = (s.strip() for s in item.split("=", 1))
        if not key.isidentifier():
            raise ConfigError(f"--method-arg {item!r}: {key!r} is not a parameter name")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        elif low in ("none", "null"):
            out[key] = None
        else:
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                out[key] = value
    return out


def _int_pair(text: str, single: bool) -> tuple[int, int] | None:
    try:
        vals = tuple(int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        return None
    if single and len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        return None
    return vals  # type: ignore[return-value]


def parse_int_pair(text: str, flag: str, example: str, single: bool = False) -> tuple[int, int]:
    """``"2048,512"`` / ``"2048x512"`` -> (2048, 512); with ``single``, ``"512"`` -> (512, 512).

    Errors name ``flag`` and show ``example``.
    """
    vals = _int_pair(text, single)
    if vals is None:
        raise ConfigError(f"{flag} {text!r}: expected {example}")
    return vals
