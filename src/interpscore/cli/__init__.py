"""The `interpscore` command: one module per command group, each with a `register(commands)`.
Subcommands import their heavy modules lazily, so `--help` is fast.

`main(argv)` returns an exit code and is callable from tests.
"""

from __future__ import annotations

import sys
from argparse import ArgumentError

from ..errors import InputError
from ..kernels import pin_cpu_kernels
from ..resume import forget
from . import data, features, leaderboard, monitor, scoring, stimuli, study
from ..options import explain, train_command
from .common import (BAD_INPUT, INTERRUPTED, Parser, command_of, interrupted_message,
                     unreadable_images_folded)

GROUPS = (data, stimuli, features, scoring, monitor, study, leaderboard)


def build_parser() -> Parser:
    parser = Parser(
        prog="interpscore", description="Predict per-unit human interpretability (IMI 2-AFC).")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    commands = parser.add_subcommands(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands)
    # `train` hands all its arguments to LightningCLI (see main); listed here for --help.
    commands.add_subcommand("train", Parser(add_help=False), help="train a metric (`interpscore train --help`; "
                            "every Lightning option: --help-all)")
    return parser


def _show_progress() -> None:
    """The library's progress lines (logger `interpscore`, level INFO) on stderr."""
    import logging

    class ToStderr(logging.StreamHandler):
        """Writes to whatever sys.stderr is at the time (tests capture it)."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("interpscore")
    if not logger.handlers:
        handler = ToStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run a command; return its exit code (0 ok, 1 problems found, 2 bad input, 130 Ctrl-C).
    As the `interpscore` command (no `argv`), the CPU kernels are pinned first (`kernels`)."""
    if argv is None:
        pin_cpu_kernels()
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    _show_progress()
    forget()  # the tally of resumable work an interruption reports is this command's
    try:
        if argv[:1] == ["train"]:  # LightningCLI parses its own arguments
            if {"-h", "--help"} & set(argv[1:]):  # the options a user changes, no Lightning
                from .train_help import short_help

                print(short_help(train_command()))
                return 0
            from ..train.cli import main as train_main

            rest = ["--help" if a == "--help-all" else a for a in argv[1:]]
            train_main(rest)
            return 0
        parser = build_parser()
        try:
            values = parser.parse_args(argv)
        except ArgumentError as err:
            if debug:
                raise
            print(f"error: {explain(parser, argv, err)}", file=sys.stderr)
            return BAD_INPUT
        run, values = command_of(parser, values)
        with unreadable_images_folded():
            return run(values)
    except SystemExit as exit_:  # --help, and LightningCLI on bad arguments
        return exit_.code if isinstance(exit_.code, int) else BAD_INPUT
    except InputError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            raise
        print(interrupted_message(), file=sys.stderr)
        return INTERRUPTED
    except OSError as err:  # a disk that fills or a folder that cannot be read, found mid-run
        if debug or err.filename is None:
            raise
        print(f"error: {err.filename}: {err.strerror}; nothing partial was left (rerun with "
              "--debug for the traceback)", file=sys.stderr)
        return BAD_INPUT


__all__ = ["BAD_INPUT", "INTERRUPTED", "build_parser", "main"]
