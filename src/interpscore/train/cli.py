"""`python train.py` / `interpscore train`: LightningCLI over the packaged configs, then the final
evaluation.

With no arguments it reads the packaged `configs/default.yaml`: the embedded simulated IMI, the offline
EfficientNet-Lite0 backbone and the `pooled_lowrank` head. Every value can be overridden on the command
line (`--model.head setreg`, `--trainer.max_epochs 5`) or with more YAML files (`--config FILE`,
or a packaged config by name: `--config heads/setreg`, `--config debug`).
Outputs go to `checkpoints/<run_name>-<time>/`: the resolved `config.yaml`, `best.ckpt`, `last.ckpt`,
the CSV and (offline) wandb logs, and `metrics.json` from the test units with the MIS baseline.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from ..errors import InputError
from ..resources import DEFAULT_CHECKPOINTS, config_file
from .lit import IMIDataModule, InterpScoreModule

RUN_DIR_PLACEHOLDER = "{run_dir}"


RUN_DIR_ENV = "INTERPSCORE_RUN_DIR"


def _fill(value, run_dir: str):
    """Replace the `{run_dir}` placeholder in every string of a (nested) config value."""
    if isinstance(value, str):
        return value.replace(RUN_DIR_PLACEHOLDER, run_dir)
    if isinstance(value, list):
        return [_fill(v, run_dir) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, run_dir) for k, v in value.items()}
    if hasattr(value, "__dict__"):  # jsonargparse Namespace
        for key, item in vars(value).items():
            setattr(value, key, _fill(item, run_dir))
    return value


class InterpScoreCLI(LightningCLI):
    def add_arguments_to_parser(self, parser):
        parser.add_argument("--run_name", default="default", help="checkpoints/<run_name>-<time>")
        parser.add_argument("--checkpoints_root", default=DEFAULT_CHECKPOINTS,
                            help="where run folders are made")
        parser.add_argument("--evaluate", type=bool, default=True,
                            help="evaluate the best checkpoint and MIS on the test units")
        parser.link_arguments("data.embedding_dim", "model.embedding_dim", apply_on="instantiate")
        parser.link_arguments("data.stage_dims", "model.stage_dims", apply_on="instantiate")
        parser.link_arguments("data.backbone", "model.backbone")
        parser.link_arguments("data.image_size", "model.image_size")

    def before_instantiate_classes(self):
        config = self.config
        # DDP starts the other ranks as copies of this command: they inherit the run folder.
        run_dir = os.environ.get(RUN_DIR_ENV)
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = str(Path(config.checkpoints_root) / f"{config.run_name}-{stamp}")
            os.environ[RUN_DIR_ENV] = run_dir
        run_dir = Path(run_dir)
        config.trainer = _fill(config.trainer, str(run_dir))
        config.trainer.default_root_dir = str(run_dir)
        self.run_dir = run_dir


def simulated_benchmark(datamodule) -> dict | None:
    """On the simulated default, the release's other audiences; None for other data."""
    from ..simulate.release import release_benchmark

    return release_benchmark(datamodule.simulation, datamodule.data_root, datamodule.data_dir,
                             datamodule.fold)


def resolve_configs(argv: list[str]) -> list[str]:
    """`--config NAME` may name a packaged config; every other argument is passed on as it is."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(config_file(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + str(config_file(arg.split("=", 1)[1]))
    return out


def _parse_or_explain(build):
    """jsonargparse's errors as the package's one-line `--key: problem` errors."""
    import argparse
    import re

    try:
        return build()
    except argparse.ArgumentError as err:
        text = str(err)
        key = re.match(r'Parser key "([^"]+)":', text)
        detail = " ".join(line.strip() for line in text.splitlines()[1:] if line.strip())
        if key:
            raise InputError(f"--{key[1]}: {detail[:300]} (see --help)") from None
        raise InputError(f"{text.splitlines()[0]} (see --help)") from None


def main(argv: list[str] | None = None) -> dict | None:
    """Train, then (unless --evaluate false) evaluate. Returns the metrics dict."""
    import sys

    argv = resolve_configs(sys.argv[1:] if argv is None else argv)
    inherited = RUN_DIR_ENV in os.environ  # set for us when we are a DDP child rank
    # `interpscore train ...` passes its own argv on purpose; Lightning would warn about it.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    try:
        cli = _parse_or_explain(lambda: InterpScoreCLI(
            InterpScoreModule, IMIDataModule, run=False, args=argv, seed_everything_default=0,
            parser_kwargs={"default_config_files": [str(config_file("default"))],
                           "exit_on_error": False},
            save_config_kwargs={"overwrite": True}))
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        if not inherited:  # the next run in this process gets its own folder
            os.environ.pop(RUN_DIR_ENV, None)
    best = cli.trainer.checkpoint_callback.best_model_path
    if not best:  # the training-free MIS takes no optimizer step, so nothing was saved yet
        best = str(cli.run_dir / "best.ckpt")
        cli.trainer.save_checkpoint(best)  # on every rank: it synchronises under DDP
    if not cli.config.evaluate or cli.trainer.global_rank != 0:
        return None
    from ..evaluation.harness import evaluate_run, format_summary

    metrics = evaluate_run(cli.datamodule, best, cli.model,
                           benchmark=simulated_benchmark(cli.datamodule))
    path = cli.run_dir / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2))
    print(format_summary(metrics))
    print(f"\ncheckpoint: {best}\nmetrics:    {path}")
    return metrics
