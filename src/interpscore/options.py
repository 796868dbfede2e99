"""Options are declared once, in the dataclasses that hold them: the field's name, default,
check (a jsonargparse type: a restricted number type, or choices) and help text (`option`).
The command line is jsonargparse's, built from those declarations (`add_fields`), as
LightningCLI's is for `train`. Light: no torch, nothing heavy, so `interpscore --help` stays
fast.

    @dataclass
    class ExclusionCriteria:
        min_catch_accuracy: float = option(0.8, "exclude responses below this catch accuracy",
                                           PROBABILITY)
"""

from __future__ import annotations

import argparse
import dataclasses

from jsonargparse.typing import (ClosedUnitInterval, NonNegativeFloat, NonNegativeInt,
                                 PositiveInt, restricted_number_type)

# Help texts that several commands share.
MODEL_HELP = ("timm name (pretrained: needs the hub), NAME@/path/weights (a state dict or "
              "Lightning .ckpt, any classifier size), NAME@random, "
              "efficientnet_lite0 / efficientnet_lite1 (offline ImageNet weights), or "
              "open_clip:NAME:TAG")
IMAGES_HELP = "image folder, saved HF dataset, or 'default' (the offline pool)"


def train_command() -> str:
    """How the user started training: `python train.py` or `interpscore train` (help and errors
    name it)."""
    import sys

    return "python train.py" if sys.argv[0].endswith("train.py") else "interpscore train"


def overwrite_help(what: str) -> str:
    return f"replace the {what} files in an --out that already holds files (others are kept)"


# The checks: jsonargparse's types, called on the text typed (argparse's own `type` call, so
# that its error names the option; see cli.common.Parser).
POSITIVE_INT, NON_NEGATIVE_INT = PositiveInt, NonNegativeInt
NON_NEGATIVE, PROBABILITY = NonNegativeFloat, ClosedUnitInterval
FRACTION = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)], join="and")
SEED = restricted_number_type("Seed", int, [(">=", 0), ("<=", 2**32 - 1)], join="and")  # numpy's
PORT = restricted_number_type("Port", int, [(">=", 0), ("<=", 65535)], join="and")


def numbers(text) -> tuple[float, ...]:
    """Comma-separated numbers (`0.1,0.3,1`); jsonargparse checks the default (a tuple) too."""
    items = text.split(",") if isinstance(text, str) else text
    return tuple(float(x) for x in items if str(x).strip())


def minutes(text) -> int:
    """A duration as SLURM writes it (MINUTES, H:MM:SS, D-H:MM:SS) in whole minutes, rounded up."""
    text = str(text).strip()
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not (1 <= len(parts) <= 3 and all(p.isdigit() for p in parts)
            and (days == "" or days.isdigit()) and (len(parts) > 1 or not days)):
        raise ValueError(f"not a duration: {text}")
    if len(parts) == 1:
        return int(parts[0])
    seconds = [int(p) for p in parts] + [0] * (3 - len(parts))
    total = int(days or 0) * 86400 + seconds[0] * 3600 + seconds[1] * 60 + seconds[2]
    return -(-total // 60)


# What to give instead, for each check: the second half of a bad value's error.
EXPECTS = {POSITIVE_INT: "a whole number of 1 or more",
           NON_NEGATIVE_INT: "a whole number of 0 or more", NON_NEGATIVE: "a number of 0 or more",
           PROBABILITY: "a number in [0, 1]", PORT: "a port number, 0 to 65535",
           FRACTION: "a number in [0, 1)", SEED: f"a whole number in [0, {2**32 - 1}]",
           numbers: "comma-separated numbers, e.g. 0.1,0.3,1", int: "a whole number",
           float: "a number", bool: "true or false",
           minutes: "a duration: minutes, H:MM:SS or D-H:MM:SS, e.g. 120 or 2:00:00"}


def option(default, help: str, check=None, *, flag: str | None = None, choices=None,
           negate: bool = False, factory=None):
    """A dataclass field that is also a command-line option: its default, help text, check
    (e.g. POSITIVE_INT), flag (default: `--field-name`) and choices; `negate` makes a True
    default a `--flag` that sets it False. `help=""` keeps a field off the command line."""
    metadata = {"help": help, "check": check, "flag": flag, "choices": choices, "negate": negate}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _fields(cls, only, skip):
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help")
            and (only is None or f.name in only) and f.name not in skip]


def add_fields(parser, cls, only=None, skip=(), defaults: dict | None = None) -> None:
    """One option of `parser` per option field of `cls` (see `option`); `defaults` overrides a
    field's default for this parser only."""
    for f in _fields(cls, only, skip):
        meta = f.metadata
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING
                                       else f.default_factory())
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        if meta["negate"] or f.type in (bool, "bool"):  # a switch
            parser.add_argument(flag, dest=f.name, help=meta["help"], default=default,
                                action="store_false" if meta["negate"] else "store_true")
        else:  # a list is typed as several values: `--models a b`
            given = {"type": meta["check"], "choices": meta["choices"],
                     "nargs": "+" if isinstance(default, list) else None}
            parser.add_argument(flag, dest=f.name, default=default, help=meta["help"],
                                **{k: v for k, v in given.items() if v is not None})


def from_namespace(namespace, cls, only=None, skip=(), **fixed):
    """`cls` made of the values of the options `add_fields` declared (plus `fixed` values)."""
    return cls(**{f.name: namespace[f.name] for f in _fields(cls, only, skip)}, **fixed)


# Parse errors: one form for every command and for `train` (LightningCLI's parser).
def commands_of(parser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _cause_naming_an_option(err):
    while err is not None:
        if getattr(err, "argument_name", None):
            return err
        err = err.__cause__
    return None


def _value_after(flag: str, argv: list[str]) -> str:
    """The value given to `flag` where it was given last (the one a parser keeps)."""
    for i, arg in reversed(list(enumerate(argv))):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag:
            return argv[i + 1] if i + 1 < len(argv) else ""
    return ""


def explain(parser, argv: list[str], err: Exception) -> str:
    """A parse error in the package's one form, `<option>: <problem and what to do>`, found
    from the parser's declarations and the arguments, not from the wording of `err`."""
    rest, path = list(argv), [parser.prog]
    while (commands := commands_of(parser)) is not None:
        if not rest or rest[0] not in commands.choices:
            given = f"{rest[0]}: no such command" if rest else "a command is missing"
            return (f"{given}; give one of {', '.join(commands.choices)} "
                    f"(see `{' '.join(path)} --help`)")
        path.append(rest.pop(0))
        parser = commands.choices[path[-1]]
    see = f"(see `{' '.join(path)} --help`)"
    named = _cause_naming_an_option(err)
    # jsonargparse's type-hint checks (LightningCLI's options) name no argument; their message
    # quotes the option's declared key
    action = (next(a for a in parser._actions if named.argument_name.split("/")[0]
                   in a.option_strings) if named is not None else
              next((a for a in parser._actions if a.option_strings and f'"{a.dest}"' in str(err)),
                   None))
    if action is not None:
        flag = action.option_strings[0]
        value = _value_after(flag, rest)
        if not value:
            return f"{flag}: a value is missing; give {_expects(action)} {see}"
        return f"{flag} {value}: give {_expects(action)} {see}"
    known = {s for a in parser._actions for s in a.option_strings}
    for arg in rest:
        if arg.startswith("-") and arg.split("=")[0] not in known and not _is_number(arg):
            return f"{arg}: not an option of `{' '.join(path)}` {see}"
    given = {a.split("=")[0] for a in rest}
    for action in parser._actions:
        if action.required and action.option_strings and not set(action.option_strings) & given:
            return f"{action.option_strings[0]}: required {see}"
    return f"{err} {see}"


def _expects(action) -> str:
    if action.choices:
        return f"one of {', '.join(map(str, action.choices))}"
    hint = getattr(action, "_typehint", action.type)  # jsonargparse's ActionTypeHint keeps it
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    hint = args[0] if len(args) == 1 else hint  # Optional[X] is X or nothing
    return EXPECTS.get(hint, "a valid value")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
