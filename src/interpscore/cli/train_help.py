"""`interpscore train --help` (and `python train.py --help`): the options a user changes, read
without Lightning (its full list, hundreds of lines and seconds to build, is `--help-all`).
Each option's text is its Args entry in `train/lit.py` and its default the packaged
`default.yaml`'s, else the signature's: read as source, so the help has one place."""

from __future__ import annotations

import ast
import textwrap

from .. import resources
from ..resources import config_file, list_configs, package_file

# (flag, class in train/lit.py, argument): the options a first run changes
SHOWN = (("--model.init_from", "InterpScoreModule", "init_from"),
         ("--model.head", "InterpScoreModule", "head"),
         ("--data.data_dir", "IMIDataModule", "data_dir"),
         ("--data.images_dir", "IMIDataModule", "images_dir"),
         ("--data.backbone", "IMIDataModule", "backbone"),
         ("--data.train_units", "IMIDataModule", "train_units"),
         ("--data.cache_dir", "IMIDataModule", "cache_dir"),
         ("--data.data_root", "IMIDataModule", "data_root"))
# The options train/cli.py adds itself (its `add_arguments_to_parser`), and Lightning's own
OWN = (("--run_name NAME", "the run folder is checkpoints/<run_name>-<time>/ (default: the "
        "config's run_name)"),
       ("--checkpoints_root DIR", "where run folders are made (default: checkpoints)"),
       ("--evaluate BOOL", "evaluate the best checkpoint, MIS and the baselines on the test "
        "units at the end (default: true)"),
       ("--trainer.max_epochs N", "passes over the training units (the closed-form heads "
        "need 1)"))


def _args_sections(tree) -> dict[str, dict[str, str]]:
    """{class: {argument: its Args text}} from the classes' and their __init__'s docstrings."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef)
                         and n.name == "__init__"), None)
            text = (ast.get_docstring(node) or "") + "\n" + (ast.get_docstring(init) or "")
            entries, name = {}, None
            for line in text.split("Args:", 1)[-1].splitlines():
                stripped = line.strip()
                head, sep, rest = stripped.partition(": ")
                if sep and line.startswith(" " * 4) and not line.startswith(" " * 8) \
                        and head.isidentifier():
                    name, entries[head] = head, rest
                elif name and stripped:
                    entries[name] += " " + stripped
            found[node.name] = {"entries": entries, "defaults": _defaults(init)}
    return found


def _defaults(init) -> dict[str, str]:
    if init is None:
        return {}
    args = init.args.args[-len(init.args.defaults):] if init.args.defaults else []
    return {a.arg: ast.unparse(d) for a, d in zip(args, init.args.defaults)}


def _config_summary(name: str) -> str:
    """The first sentence of a packaged config's leading comment."""
    lines = []
    for line in config_file(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    text = " ".join(lines)
    return text.split(". ")[0].split(": ", 1)[0].rstrip(".") + "." if text else ""


def short_help(prog: str) -> str:
    import yaml

    classes = _args_sections(ast.parse(package_file("train", "lit.py").read_text()))
    default = yaml.safe_load(config_file("default").read_text())
    section = {"InterpScoreModule": "model", "IMIDataModule": "data"}
    rows = [("--config NAME|FILE", "a packaged config by name, or a YAML file; several may be "
             "given (later ones win)")]
    rows += OWN
    for flag, cls, arg in SHOWN:
        info = classes[cls]
        value = (default.get(section[cls]) or {}).get(arg, info["defaults"].get(arg))
        value = {None: "null", "None": "null"}.get(value, value)
        value = getattr(resources, str(value), value)  # a named default (DEFAULT_CACHE)
        text = info["entries"][arg]
        if "(default" not in text:
            text += f" (default: {str(value).strip(chr(39))})"
        rows.append((f"{flag} VALUE", text))
    lines = [f"usage: {prog} [--config NAME] [--OPTION VALUE ...]", ""]
    lines += textwrap.wrap("Train a metric on a prepared dataset (default: the embedded simulated "
                           "IMI), then evaluate it on the test units.", 96)
    lines += ["", "packaged configs (--config NAME):"]
    names = list_configs()
    main = [n for n in ("default", "quick", "debug", "synthetic") if n in names]
    for name in main:
        lines += textwrap.wrap(_config_summary(name), 96, initial_indent=f"  {name:11s}",
                               subsequent_indent=" " * 13)
    rest = [n for n in names if n not in main]
    lines += textwrap.wrap("also: " + ", ".join(rest), 96, initial_indent="  ",
                           subsequent_indent="    ")
    lines += ["", "options:"]
    for flag, text in rows:
        lines.append(f"  {flag}")
        lines += textwrap.wrap(text, 96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines += [""] + textwrap.wrap(
        "Any other value of the config is set the same way (--trainer.X, --model.X, --data.X); "
        "--help-all lists them all, Lightning's options included.", 96)
    return "\n".join(lines)
