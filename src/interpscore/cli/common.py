"""What every command shares: the one error form, the parser, and arguments several commands
take. Subcommands import their heavy modules lazily, so `--help` is fast."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError

# The one rule of every command: arguments and inputs are checked before any work; outputs are
# built beside their destination and renamed into place; nothing the command did not write is
# touched; bad input exits 2 with `error: <file or option>: <problem and what to do>`, and no
# traceback unless --debug.
BAD_INPUT, INTERRUPTED = 2, 130


class Parser(argparse.ArgumentParser):
    """argparse with every default shown in --help and its errors in the package's one form."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(BAD_INPUT)


def add_command(commands, name: str, run, help: str):
    sub = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(run=run)
    return sub


def layers_arg(text: str):
    return "auto" if text == "auto" else [name.strip() for name in text.split(",")]


def shard_arg(text: str | None) -> tuple[int, int] | None:
    """`--shard R/W`, or torchrun's RANK and WORLD_SIZE when it launched us."""
    import os

    if text is None:
        if os.environ.get("WORLD_SIZE", "1") == "1":
            return None
        text = f"{os.environ.get('RANK', '0')}/{os.environ['WORLD_SIZE']}"
    rank, _, world = text.partition("/")
    if not (rank.isdigit() and world.isdigit() and 0 <= int(rank) < int(world)):
        raise InputError(f"--shard {text}: write it as RANK/WORLD with 0 <= RANK < WORLD, e.g. 0/4")
    return int(rank), int(world)
