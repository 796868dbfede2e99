"""Options are declared once, in the dataclasses that hold them; the command line is built
from those declarations (`add_options`), so a flag's name, default, check and help text live in
one place. Light: no torch, nothing heavy, so `interpscore --help` stays fast.

    @dataclass
    class ExclusionCriteria:
        min_catch_accuracy: float = option(0.8, "exclude responses below this catch accuracy",
                                           PROBABILITY)
"""

from __future__ import annotations

import argparse
import dataclasses

# Help texts that several commands share.
MODEL_HELP = ("timm name (pretrained: needs the hub or NAME@/path/weights), NAME@random, "
              "efficientnet_lite0 / efficientnet_lite1 (offline ImageNet weights), or "
              "open_clip:NAME:TAG")
IMAGES_HELP = "image folder, saved HF dataset, or 'default' (the offline pool)"


def overwrite_help(what: str) -> str:
    return f"replace the {what} files in an --out that already holds files (others are kept)"


def number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a number of `kind` within the given bounds."""
    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a{'n integer' if kind is int else ' number'}")
        if (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and (value >= high if high_open else value > high)):
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range; give a value in {left}{low if low is not None else '-inf'}"
                f", {high if high is not None else 'inf'}{right}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def numbers(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated numbers (`0.1,0.3,1`)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers")


POSITIVE_INT = number(int, 1)
NON_NEGATIVE_INT = number(int, 0)
NON_NEGATIVE = number(float, 0)
FRACTION = number(float, 0, 1, high_open=True)
PROBABILITY = number(float, 0, 1)
SEED = number(int, 0, 2**32 - 1)  # numpy's seeds


def option(default, help: str, parse=None, *, flag: str | None = None, choices=None,
           negate: bool = False, factory=None):
    """A dataclass field that is also a command-line option: its default, help text, parser
    (`parse`, e.g. POSITIVE_INT), flag (default: `--field-name`), choices; `negate` makes a
    True default a `--flag` that sets it False. `help=""` keeps a field off the command line."""
    metadata = {"help": help, "parse": parse, "flag": flag, "choices": choices, "negate": negate}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def cli_fields(cls, only=None, skip=()):
    """The fields of `cls` that are options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help")
            and (only is None or f.name in only) and f.name not in skip]


def flag_of(field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def add_options(parser, cls, only=None, skip=(), defaults: dict | None = None) -> None:
    """One argparse option per option field of `cls` (see `option`); `defaults` overrides a
    field's default for this parser only."""
    for f in cli_fields(cls, only, skip):
        meta = f.metadata
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING
                                       else f.default_factory())
        flag = flag_of(f)
        if meta["negate"] or f.type in (bool, "bool"):  # a switch: no default worth showing
            parser.add_argument(flag, dest=f.name, help=meta["help"], default=argparse.SUPPRESS,
                                action="store_false" if meta["negate"] else "store_true")
        else:
            parser.add_argument(flag, dest=f.name, default=default, type=meta["parse"],
                                choices=meta["choices"], help=meta["help"],
                                metavar=flag.lstrip("-").replace("-", "_").upper(),
                                nargs="+" if isinstance(default, list) else None)
        # (a tuple default is one comma-separated value, parsed by `parse`, e.g. `numbers`)


def options_from(args, cls, only=None, skip=(), **fixed):
    """`cls` built from the parsed options `add_options` declared (plus `fixed` values)."""
    values = {f.name: getattr(args, f.name) for f in cli_fields(cls, only, skip)
              if hasattr(args, f.name)}  # a switch not given keeps the field's default
    return cls(**values, **fixed)
