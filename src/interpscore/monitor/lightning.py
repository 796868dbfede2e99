"""The Lightning door: one line, `callbacks=[InterpretabilityMonitor(units=64)]`.

Each check (every N epochs and/or every N steps, and once before training) scores the watched
units with `Monitor.check`, logs `interp/<layer>/{mean,p05,p50,p95}` and `interp/mean` to every
logger of the Trainer, and at the end of fit writes the table and figure (`report`) into the
Trainer's log dir or `out`. Under DDP rank 0 checks while the others wait at the strategy's
barrier (every rank reaches it, so none hangs).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from lightning.pytorch.callbacks import Callback

from ..errors import InputError
from .check import Monitor, log_values
from .report import write_outputs


class InterpretabilityMonitor(Callback):
    """Watch predicted interpretability of a fixed sample of units while a LightningModule
    trains. `model_attr` names the submodule to watch (e.g. "model"; dotted paths work), else
    the LightningModule itself; layers are its `named_modules()` names. `val_metric` is the
    logged metric drawn beside it (default: the first logged name starting with "val").
    Other keywords are `Monitor`'s (metric, layers, units, images, pool_size, image_size, ...)."""

    def __init__(self, every_n_epochs: int | None = 1, every_n_steps: int | None = None,
                 model_attr: str | None = None, out: str | Path | None = None,
                 val_metric: str | None = None, check_at_start: bool = True, **monitor):
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"{name} {value}: give a whole number of 1 or more, or None")
        self.monitor = Monitor(**monitor)
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.model_attr, self.out, self.val_metric = model_attr, out, val_metric
        self.check_at_start = check_at_start
        self.tables: list[pd.DataFrame] = []
        self.validation: list[dict] = []
        self._last_step = None

    def watched(self, pl_module):
        module = pl_module
        for part in (self.model_attr.split(".") if self.model_attr else []):
            module = getattr(module, part, None)
            if module is None:
                raise InputError(f"model_attr {self.model_attr}: {type(pl_module).__name__} has "
                                 f"no submodule {part!r}; name an attribute holding the network")
        return module

    # -- hooks -----------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # bad options are refused here, before the first batch
            self.monitor.validate(self.watched(pl_module))

    def on_train_start(self, trainer, pl_module) -> None:
        if self.check_at_start:
            self._check(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._check(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        out = self.out_dir(trainer)  # on every rank: `trainer.log_dir` is a broadcast
        if trainer.is_global_zero and self.tables:
            write_outputs(self.table(), out, self.monitor.metric,
                          pd.DataFrame(self.validation, columns=["step", "name", "value"]))
        trainer.strategy.barrier("interpscore-monitor-end")

    # -- the check -------------------------------------------------------------------------
    def _check(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if step == self._last_step:  # an epoch end that is also an every_n_steps step
            return
        self._last_step = step
        if trainer.is_global_zero:
            table = self.monitor.check(self.watched(pl_module), step)
            self.tables.append(table)
            for logger in trainer.loggers:
                logger.log_metrics(log_values(table), step=step)
            self._note_validation(trainer, step)
        trainer.strategy.barrier("interpscore-monitor")  # the other ranks wait for rank 0

    def _note_validation(self, trainer, step: int) -> None:
        logged = trainer.callback_metrics
        name = self.val_metric or next((k for k in sorted(logged) if k.startswith("val")), None)
        if name is not None and name in logged:
            self.validation.append(dict(step=step, name=name, value=float(logged[name])))

    def table(self) -> pd.DataFrame:
        """Every check so far: one row per unit and check."""
        return pd.concat(self.tables, ignore_index=True)

    def out_dir(self, trainer) -> Path:
        return Path(self.out or trainer.log_dir or trainer.default_root_dir)
