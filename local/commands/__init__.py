"""Client commands of the `resonate` CLI (docs/cli.md): promises, tasks, schedules, invoke, tree, messages.

`local/cli.py` calls `register` from `_parser()` and hands a parsed namespace to `run` when
`is_client(args)`; everything else about these commands lives in this package.
"""
from __future__ import annotations

import argparse
from typing import Any

from local.commands import invoke, messages, promises, schedules, tasks, tree
from local.commands.client import run as _run


def version() -> str:
    """The installed package's version; the pyproject's when running from a source tree that
    was never installed."""
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        return dist_version("resonate-gcp")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        try:
            with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


class _Version(argparse.Action):
    """`resonate --version`; the version is looked up only when asked (importlib.metadata is slow)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"resonate {version()}")
        parser.exit()


def register(parser: argparse.ArgumentParser, sub: Any) -> None:
    """Add `--version` and the client subcommands to the top-level parser."""
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub.metavar = sub.metavar or "COMMAND"  # the alias names would crowd the usage line
    for module in (promises, tasks, schedules, invoke, tree, messages):
        module.register(sub)


def is_client(args: argparse.Namespace) -> bool:
    return getattr(args, "client_handler", None) is not None


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 on a 2xx envelope, 1 on any error (message on stderr)."""
    return _run(args.client_handler, args)
