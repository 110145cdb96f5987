"""The ``wod-hub`` command: one subcommand module per audience.

Each module in :data:`COMMAND_MODULES` exposes ``add_parser(subparsers)`` and sets the
command function with ``set_defaults(func=...)``; the function takes the parsed args and
returns an exit code. It may be ``async``: it then runs under ``asyncio.run``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Sequence

COMMAND_MODULES = ["author", "db", "admin", "ops", "content"]


def _unavailable(name: str, error: ImportError):
    def add_parser(subparsers) -> None:
        p = subparsers.add_parser(name, help=f"(unavailable: {error})")
        p.set_defaults(func=lambda args: _fail(f"wod-hub {name} is unavailable here: {error}"))

    return add_parser


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wod-hub",
        description="Workshops-on-Demand on JupyterHub: author, database, admin and ops commands.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
            add_parser = getattr(module, "add_parser", None)
            if add_parser is None:
                continue  # a helper module, not a command
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # not written yet: skipped silently
            add_parser = _unavailable(name, e)
        except ImportError as e:
            add_parser = _unavailable(name, e)
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result = func(args)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return int(result or 0)
