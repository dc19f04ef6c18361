"""The ``relabel`` command line: one subcommand per module in :mod:`relabel.commands`.

Each subcommand module exposes ``register(subparsers)`` which adds its parser and sets ``func``
(a callable taking the parsed ``argparse.Namespace`` and returning an exit code). User-fixable
problems are raised as :class:`relabel.errors.RelabelError`; here they become one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from relabel.errors import LockedError, RelabelError

EXIT_LOCKED = 3  # another relabel run is writing the same project's queue

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

    parser = argparse.ArgumentParser(
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
    3 another run is writing the same project's queue)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LockedError as error:
        print(f"relabel: error: {error}", file=sys.stderr)
        return EXIT_LOCKED
    except RelabelError as error:
        print(f"relabel: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relabel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
