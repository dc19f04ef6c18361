"""The ``relabel`` command line: one subcommand per module in :mod:`relabel.commands`.

Each subcommand module exposes ``register(subparsers)`` which adds its parser and sets ``func``
(a callable taking the parsed ``argparse.Namespace`` and returning an exit code). User-fixable
problems are raised as :class:`relabel.errors.RelabelError`; here they become one line on stderr
and exit code 2, never a traceback. With ``--json``, every error (a usage error too) is instead one JSON
object on stdout, ``{"command", "error", "exit_code"}``, with the same exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from relabel.errors import LockedError, RelabelError

EXIT_USAGE = 2  # a user-fixable error: a bad flag, a missing file, an unknown project...
EXIT_LOCKED = 3  # another relabel run is writing the same project's queue
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command-line usage error (argparse's), raised instead of exiting when errors are JSON."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors can be raised as :class:`UsageError` (``json_errors``) so
    that ``--json`` reports them as JSON too; otherwise argparse's usage line and exit code 2."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if ArgumentParser.json_errors:
            raise UsageError(self, message)
        super().error(message)


SUBCOMMAND_MODULES = (
    "relabel.commands.rank",
    "relabel.commands.audit",
    "relabel.commands.sync",
    "relabel.commands.undo",
    "relabel.commands.accept",
    "relabel.commands.compare",
    "relabel.commands.explain",
)


def version() -> str:
    """The installed distribution's version (``relabel.__version__`` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version("relabel")
    except PackageNotFoundError:
        from relabel import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    import importlib

    parser = ArgumentParser(
        prog="relabel",
        description=(
            "Find the labeled items most worth a second look (self-influence, Koh & Liang 2017) "
            "and send them back to Label Studio as review tasks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"relabel {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 done with a warning, 2 user-fixable error,
    3 another run is writing the same project's queue). With ``--json`` among the arguments, an error is one
    JSON object on stdout (:func:`report_error`) instead of a line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in argv
    ArgumentParser.json_errors = wants_json
    command = next((word for word in argv if not word.startswith("-")), None)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as error:
        return report_error(command, str(error), EXIT_USAGE, wants_json)
    except LockedError as error:
        return report_error(command, str(error), EXIT_LOCKED, wants_json)
    except RelabelError as error:
        return report_error(command, str(error), EXIT_USAGE, wants_json)
    except KeyboardInterrupt:
        return report_error(command, "interrupted", EXIT_INTERRUPTED, wants_json)
    finally:
        ArgumentParser.json_errors = False


def report_error(command: str | None, message: str, code: int, as_json: bool) -> int:
    """Tell the user about an error and return ``code``: one JSON object ``{"command", "error",
    "exit_code"}`` on stdout with ``as_json``, else one line ``relabel: error: …`` on stderr."""
    if as_json:
        from relabel.commands.options import print_json

        print_json({"command": command, "error": " ".join(message.split()), "exit_code": code})
    elif code == EXIT_INTERRUPTED:
        print("relabel: interrupted", file=sys.stderr)
    else:
        print(f"relabel: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
