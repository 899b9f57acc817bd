"""The ``entrobust`` command line: a thin layer over the library.

Each subcommand lives in ``entrobust.cli.<name>`` with ``add_parser(sub)`` and ``run(args)``.
User mistakes (:class:`~entrobust.errors.EntrobustError`) print one line and exit with 2;
failures of the file system (read-only folder, disk full, ...) print one line naming the path and
exit with 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from entrobust import __version__
from entrobust.errors import EntrobustError

#: subcommand modules, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = (
    "demo",
    "reproduce",
    "train",
    "eval",
    "audit",
    "analyze",
    "certify",
    "run",
    "runs",
    "report",
    "claims",
    "listing",
    "info",
)


def plain(text: str) -> str:
    """``text`` without reStructuredText markup, for the terminal: ````x```` → ``x``, ```x``` → ``'x'``."""
    return text.replace("``", "").replace("`", "'")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line; help without the docstrings' RST backticks."""

    def format_help(self) -> str:
        return plain(super().format_help())

    def format_usage(self) -> str:
        return plain(super().format_usage())

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"entrobust: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand module that is installed."""
    parser = _Parser(prog="entrobust", description=plain((__doc__ or "").split("\n")[0]))
    parser.add_argument("--version", action="version", version=f"entrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"entrobust.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"entrobust.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def _os_error_line(exc: OSError, args: argparse.Namespace) -> str:
    """``PATH: reason`` for an OS error; one raised without a file name (``ENOSPC`` from a
    buffered write, say) names the command's output folder instead."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        second = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{exc.filename}{second}: {reason}"
    folder = getattr(args, "out", None) or getattr(args, "workspace", None)
    return f"{reason} (while writing under {folder})" if folder else reason


def _closed_pipe() -> int:
    """The reader of stdout went away (``entrobust claims --json | head``): point stdout at devnull
    so that the interpreter's final flush cannot fail again, and leave quietly with status 1 (the
    recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a descriptor (captured)
        pass
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of ``python -m entrobust``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe (``| head``) shows here, inside the handler
    except BrokenPipeError:
        code = _closed_pipe()
    except EntrobustError as exc:
        print(f"entrobust: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("entrobust: interrupted", file=sys.stderr)
        code = 130
    except OSError as exc:
        print(f"entrobust: error: {_os_error_line(exc, args)}", file=sys.stderr)
        code = 1
    from entrobust import distributed

    if distributed.launched():  # a torchrun rank: leave without gloo's teardown race
        distributed.exit_now(code)
    return code
