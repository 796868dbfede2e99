"""What every command shares: the one error form, the parser, and arguments several commands
take. Subcommands import their heavy modules lazily, so `--help` is fast."""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager

from jsonargparse import ArgumentParser, DefaultHelpFormatter

from ..errors import InputError
from ..options import commands_of

# The one rule of every command: arguments and inputs are checked before any work; outputs are
# built beside their destination and renamed into place; nothing the command did not write is
# touched; bad input exits 2 with `error: <file or option>: <problem and what to do>`, and no
# traceback unless --debug.
BAD_INPUT, INTERRUPTED = 2, 130
UNREADABLE = "skipping an unreadable image: "  # an image pool's warning, once per image


@contextmanager
def unreadable_images_folded():
    """A pool warns once for each unreadable image it skips (450 corrupt files: 450 warnings);
    a command shows one line for them all, at its end. (`score` says it in its own summary.)"""
    skipped, show = [], warnings.showwarning

    def fold(message, *args, **kwargs):
        if str(message).startswith(UNREADABLE):
            skipped.append(str(message).removeprefix(UNREADABLE))
        else:
            show(message, *args, **kwargs)

    warnings.showwarning = fold
    try:
        yield
    finally:
        warnings.showwarning = show
        if skipped:
            print(f"skipped {len(skipped)} unreadable image(s) of the pool, e.g. {skipped[0]}",
                  file=sys.stderr)


def interrupted_message() -> str:
    """What Ctrl-C leaves: the chunks of the command's passes that are on disk (`resume.kept`),
    no more; outputs themselves appear only when complete."""
    from ..resume import kept

    whole = "outputs are renamed into place only when complete, so none is half-written"
    held = kept()
    if not held:
        return f"interrupted: {whole}"
    parts = [f"{k.done} of {k.total} {k.what} in {k.folder}" for k in held]
    then = ("a rerun of the same command computes only the rest" if any(k.done for k in held)
            else "nothing was finished, so a rerun starts again")
    return f"interrupted: kept {'; '.join(parts)}; {then} ({whole})"


class HelpFormatter(DefaultHelpFormatter):
    """Each option's help once, with its default once: none for a switch, a required option,
    or a None default (whose meaning, where it has one, the help text says)."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return f"{text} (required)"
        if (not action.option_strings or action.nargs == 0 or action.help is argparse.SUPPRESS
                or action.default in (None, argparse.SUPPRESS)):
            return text
        default = action.default
        if isinstance(default, (list, tuple)):  # as it is typed: `--models a b`, `--alphas 0.5`
            default = (" " if isinstance(default, list) else ",").join(f"{x:g}" if isinstance(
                x, float) else str(x) for x in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


class Parser(ArgumentParser):
    """jsonargparse, raising its errors (`main` words them, see `explain`), every value checked
    by argparse's own call of the option's type: its error names the option, jsonargparse's
    type-hint check does not (its ArgumentError has no argument_name)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, exit_on_error=False, **kwargs)

    def add_argument(self, *args, **kwargs):
        if "type" in kwargs and "action" not in kwargs:
            kwargs["action"] = "store"
        return super().add_argument(*args, **kwargs)


def add_command(commands, name: str, run, help: str) -> Parser:
    """A command of a `commands` group (`Parser.add_subcommands`) that `run(values)` carries out."""
    sub = Parser(description=help)
    commands.add_subcommand(name, sub, help=help)
    sub.prog = sub.prog.replace(" [options]", "")  # jsonargparse's usage marker, not a command
    sub.run = run
    return sub


def add_group(commands, name: str, help: str):
    """A command with commands of its own (`study build`), each added with `add_command`."""
    group = Parser(description=help)
    commands.add_subcommand(name, group, help=help)
    group.prog = group.prog.replace(" [options]", "")
    return group.add_subcommands(dest="action", required=True, metavar="ACTION")


def command_of(parser, values):
    """The command the parsed `values` ask for, and its own values, however deep it lies."""
    while (commands := commands_of(parser)) is not None:
        name = values[commands.dest]
        parser, values = commands.choices[name], values[name]
    return parser.run, values


def layers_arg(text: str):
    from ..stimuli.readouts import layer_names

    return layer_names(text)


def readout_arg(features, layers: str = "auto", reduction: str | None = None):
    """`--features`, `--layers`, `--reduction` as a readout (`readouts.readout_from_options`)."""
    from ..stimuli.readouts import readout_from_options

    return readout_from_options(features, layers, reduction)


FEATURES_HELP = ("features instead of channels: an SAE file of `interpscore sae fit`, or a "
                 "direction matrix [C, k] (.pt/.npy) with --layers LAYER")
REDUCTION_HELP = ("over positions/tokens: mean (IMI; the default), max, or cls (ViTs); an SAE "
                  "file's own default otherwise")


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
