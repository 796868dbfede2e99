"""`python train.py` / `interpscore train`: LightningCLI over the packaged configs, then the final
evaluation.

With no arguments it reads the packaged `configs/default.yaml`: the embedded simulated IMI, the offline
EfficientNet-Lite0 backbone and the `pooled_lowrank` head. Every value can be overridden on the command
line (`--model.head setreg`, `--trainer.max_epochs 5`) or with more YAML files (`--config FILE`,
or a packaged config by name: `--config heads/setreg`, `--config debug`).
Outputs go to `checkpoints/<run_name>-<time>/`: the resolved `config.yaml`, `best.ckpt`, `last.ckpt`,
the CSV and (offline) wandb logs, and `metrics.json` from the test units with the MIS baseline.
The run is written in `checkpoints/.<run_name>-<time>/` and renamed into place when it has
finished, so `checkpoints/<run_name>-*/best.ckpt` only ever finds finished runs; a run that fails
is moved, without its checkpoints, to `checkpoints/failed/<run_name>-<time>/` (its logs).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from ..errors import InputError
from ..options import train_command
from ..resources import DEFAULT_CHECKPOINTS, config_file
from .lit import IMIDataModule, InterpScoreModule

RUN_DIR_PLACEHOLDER = "{run_dir}"


RUN_DIR_ENV = "INTERPSCORE_RUN_DIR"
# Lightning's and its libraries' warnings that read, in a newcomer's log, as if something went
# wrong with a run that went as planned:
QUIET_WARNINGS = (
    # `interpscore train ...` passes its own argv on purpose
    "LightningCLI's args parameter",
    # the closed-form heads and MIS are fitted without an optimizer on purpose (the module
    # says so in a line of its own, `InterpScoreModule.on_train_start`)
    ".*configure_optimizers.*returned `None`",
    # the run folder holds config.yaml (and wandb's folder) before the CSV logger and the
    # checkpoints arrive; nothing of this run's is deleted or overwritten
    "Experiment logs directory .* exists and is not empty",
    "Checkpoint directory .* exists and is not empty",
    # the validation and test sets are hundreds of conditions
    "Metric `SpearmanCorrcoef` will save all targets and predictions",
    # inside Lightning, about the installed torch
    ".*isinstance.treespec, LeafSpec.. is deprecated",
)


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
    parser_made = None  # the last parser built: its declarations word a parse error

    def init_parser(self, **kwargs):
        parser = super().init_parser(**kwargs)
        parser.prog = train_command()
        InterpScoreCLI.parser_made = parser
        return parser

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
            # hidden until finished (see the module's docstring); a second run started in the
            # same second gets its own folder
            root, name = Path(config.checkpoints_root), f"{config.run_name}-{stamp}"
            k = 1
            while (root / f".{name}").exists() or (root / name).exists():
                k += 1
                name = f"{config.run_name}-{stamp}-{k}"
            run_dir = str(root / f".{name}")
            os.environ[RUN_DIR_ENV] = run_dir
        run_dir = Path(run_dir)
        config.trainer = _fill(config.trainer, str(run_dir))
        config.trainer.default_root_dir = str(run_dir)
        self.run_dir = run_dir


def finished_dir(run_dir: Path) -> Path:
    """Where a run folder goes when the run has finished."""
    return run_dir.with_name(run_dir.name.removeprefix("."))


def failed_dir(run_dir: Path) -> Path:
    """Where a failed run's logs go: out of reach of `checkpoints/<run_name>-*/`."""
    return run_dir.parent / "failed" / run_dir.name.removeprefix(".")


def _close_wandb() -> None:
    """wandb writes into the run folder until its run is finished: before the folder moves."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def finish_run(run_dir: Path) -> Path:
    """Rename a finished run into place; its config.yaml names the folder it ends in."""
    _close_wandb()
    final = finished_dir(run_dir)
    config = run_dir / "config.yaml"
    if config.is_file():
        config.write_text(config.read_text().replace(str(run_dir), str(final)))
    run_dir.rename(final)
    return final


def give_up_run(run_dir: Path) -> Path | None:
    """A failed run: its checkpoints removed, its logs moved under `failed/`."""
    if not run_dir.is_dir():
        return None
    _close_wandb()
    for checkpoint in run_dir.rglob("*.ckpt"):
        checkpoint.unlink()
    target = failed_dir(run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    run_dir.rename(target)
    return target


def test_conditions(datamodule) -> int | None:
    """How many conditions the run's test split holds, read before training from a prepared
    dataset (None for the simulated default, built during the run)."""
    if datamodule.tensors is not None:
        return len(datamodule.split_ids["test"])
    if datamodule.simulated:
        return None
    from ..data.dataset import load_prepared

    units = load_prepared(datamodule.data_dir)["units"].to_pandas()
    if datamodule.fold is not None:
        return int((units["fold"] == datamodule.fold).sum())
    return int((units["split"] == "test").sum())


def moved_from(start: str, best: str) -> float:
    """The largest change of any parameter of the head between two checkpoints."""
    from ..metric.checkpoint import load_checkpoint

    before = {k: v.detach() for k, v in load_checkpoint(start).head.named_parameters()}
    after = {k: v.detach() for k, v in load_checkpoint(best).head.named_parameters()}
    return max((float((after[k] - v).abs().max()) for k, v in before.items()
                if k in after and after[k].shape == v.shape), default=0.0)


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


def _parse_or_explain(build, argv: list[str]):
    """jsonargparse's errors in the package's one form, `--key: problem` (`options.explain`:
    found from the parser's declarations and the arguments, not from the error's wording)."""
    import argparse

    from ..options import explain

    try:
        return build()
    except argparse.ArgumentError as err:
        parser = InterpScoreCLI.parser_made
        if parser is None:
            raise
        raise InputError(explain(parser, argv, err)) from None


def main(argv: list[str] | None = None) -> dict | None:
    """Train, then (unless --evaluate false, or the test split is too small) evaluate. Returns
    the metrics dict (None without an evaluation)."""
    argv = resolve_configs(sys.argv[1:] if argv is None else argv)
    inherited = RUN_DIR_ENV in os.environ  # set for us when we are a DDP child rank
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # wandb looks for a git repository at the run folder before Lightning has made it, and
    # warns that the folder does not exist; it records no git state then either.
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    cli = None
    try:
        cli = _parse_or_explain(lambda: InterpScoreCLI(
            InterpScoreModule, IMIDataModule, run=False, args=argv, seed_everything_default=0,
            parser_kwargs={"default_config_files": [str(config_file("default"))],
                           "exit_on_error": False},
            save_config_kwargs={"overwrite": True}), argv)
        _no_anonymous_setting(cli.trainer)
        too_small = cli.config.evaluate and _too_few_to_evaluate(cli.datamodule)
        if too_small and not inherited:  # said before the training, and again after it
            print(f"warning: {too_small}: the run trains and saves its checkpoint, and is not "
                  "evaluated", file=sys.stderr)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        best = cli.trainer.checkpoint_callback.best_model_path
        if not best:  # the training-free MIS takes no optimizer step, so nothing was saved yet
            best = str(cli.run_dir / "best.ckpt")
            # on every rank: it synchronises under DDP
            cli.trainer.save_checkpoint(best, weights_only=False)
        if cli.trainer.global_rank != 0 or inherited:
            return None
        return _finish(cli, Path(best))
    except BaseException:
        if cli is not None and not inherited and cli.trainer.global_rank == 0:
            failed = give_up_run(cli.run_dir)
            if failed is not None:
                print(f"the run failed: its logs are in {failed} (its checkpoints were "
                      "removed)", file=sys.stderr)
        raise
    finally:
        if not inherited:  # the next run in this process gets its own folder
            os.environ.pop(RUN_DIR_ENV, None)


def _no_anonymous_setting(trainer) -> None:
    """Lightning's WandbLogger passes wandb `anonymous=None`, which wandb 0.31 warns has no
    effect; leaving it out changes nothing else."""
    for logger in trainer.loggers:
        init = getattr(logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)


def _too_few_to_evaluate(datamodule) -> str | None:
    from ..data.split_size import too_few_test_units

    n_test = test_conditions(datamodule)
    problem = None if n_test is None else too_few_test_units(n_test)
    return problem and f"--data.data_dir {datamodule.data_dir}: its split {problem}"


def _finish(cli, best: Path) -> dict | None:
    """Evaluate (where asked and possible), rename the run into place, say where it is."""
    final = finished_dir(cli.run_dir)
    lines, metrics = [], None
    not_evaluated = cli.config.evaluate and _too_few_to_evaluate(cli.datamodule)
    if cli.config.evaluate and not not_evaluated:
        from ..evaluation.harness import evaluate_run, format_summary

        metrics = evaluate_run(cli.datamodule, str(best), cli.model,
                               benchmark=simulated_benchmark(cli.datamodule))
        metrics["checkpoint"] = str(final / best.relative_to(cli.run_dir))
        (cli.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        lines += [format_summary(metrics), ""]
    start = cli.config.model.init_from
    moved = moved_from(start, str(best)) if start else None
    finish_run(cli.run_dir)
    lines.append(f"checkpoint: {final / best.relative_to(cli.run_dir)}")
    if metrics is not None:
        lines.append(f"metrics:    {final / 'metrics.json'}")
    if moved is not None:
        lines.append(f"from {start}: " + (
            f"moved (largest change of a parameter {moved:.3g})" if moved > 0 else
            "held at it: the new training units did not show that moving helps "
            "(docs/study.md, Updating a metric)"))
    if not_evaluated:
        lines.append(f"not evaluated: {not_evaluated}; evaluate on other units with "
                     "`interpscore evaluate --checkpoint CKPT --data DIR`, or answer more units")
    print("\n".join(lines))
    return metrics
