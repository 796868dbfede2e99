"""Watching interpretability while a network trains, offline on CPU: a small timm network
(resnet10t) learns from scratch to tell which photo a crop of the default pool comes from, with
`InterpretabilityMonitor` (training-free MIS, 64 units, a 500-image probe pool) checking once
before training and once per epoch. Records validation accuracy and predicted interpretability
per layer over training (the callback's figure), and the cost: the same training without the
monitor, then with it, then without again (the two runs without bracket the one with, as other
work shares the cores).

    python benchmarks/monitor.py [--epochs 3] [--out benchmarks/results/monitor.json]
        [--figure benchmarks/results/monitor.png]
    python benchmarks/monitor.py --checks-only --out benchmarks/results/monitor_checks.json
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import emit

SIZE = 32


def data(seed: int, n: int):
    """Photo crops of the offline pool (no dead leaves), labelled by their source photo."""
    import torch

    from interpscore.stimuli.pools import default_pool

    pool = default_pool(n_images=n, size=SIZE, seed=seed, photo_fraction=1.0)
    images = torch.from_numpy(pool.images).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(pool.sources), len(pool.source_names)


def module(n_classes: int):
    import lightning.pytorch as pl
    import timm
    import torch

    class PhotoOfCrop(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = timm.create_model("resnet10t", pretrained=False, num_classes=n_classes)
            cfg = self.model.pretrained_cfg
            self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255)

        def forward(self, x):
            return self.model((x.float() - self.mean) / self.std)  # as the monitor normalises

        def training_step(self, batch, _):
            x, y = batch
            x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x, x.flip(3))
            loss = torch.nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_acc", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=0.05)

    return PhotoOfCrop()


def run(epochs: int, monitor, root: Path):
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    x, y, n_classes = data(seed=11, n=3000)
    vx, vy, _ = data(seed=12, n=600)
    g = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=g)
    val = DataLoader(TensorDataset(vx, vy), batch_size=200)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1,
                         logger=CSVLogger(root, name="run"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[monitor] if monitor else [])
    net = module(n_classes)
    start = time.perf_counter()
    trainer.fit(net, train, val)
    seconds = time.perf_counter() - start
    return seconds, trainer, float(trainer.callback_metrics["val_acc"])


PROBE = dict(units=64, pool_size=500, image_size=SIZE, n_refs=9, n_batches=10)


def time_checks(n: int = 4) -> dict:
    """The checks alone, timed directly (the difference of two noisy trainings is not): n
    checks of the untrained network, the first with a fresh cache (it loads the metric, draws
    the units and embeds the pool images its exemplars use)."""
    import torch

    from interpscore.monitor import Monitor

    _, _, n_classes = data(seed=12, n=600)
    net = module(n_classes)
    root = Path(tempfile.mkdtemp(prefix="monitor-checks-"))
    try:
        monitor, seconds = Monitor(cache_dir=root, **PROBE), []
        for step in range(n):
            start = time.perf_counter()
            monitor.check(net.model, step)
            seconds.append(round(time.perf_counter() - start, 2))
            with torch.no_grad():  # the weights move between checks, as in training
                for p in net.model.parameters():
                    p.add_(torch.randn_like(p) * 1e-2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return dict(check_seconds=seconds, probe=PROBE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out")
    parser.add_argument("--figure")
    parser.add_argument("--checks-only", action="store_true",
                        help="only time the checks (seconds), no training")
    args = parser.parse_args()
    import torch

    from interpscore.monitor import InterpretabilityMonitor, summary

    torch.set_num_threads(2)
    if args.checks_only:
        emit(time_checks(), args.out)
        return
    root = Path(tempfile.mkdtemp(prefix="monitor-bench-"))
    cache = root / "cache"  # a fresh cache: the first check embeds its pool images here
    probe = PROBE
    try:
        bare1, _, acc_bare = run(args.epochs, None, root / "bare1")
        watcher = InterpretabilityMonitor(model_attr="model", cache_dir=cache, **probe)
        watched, trainer, acc_watched = run(args.epochs, watcher, root / "watched")
        bare2, _, _ = run(args.epochs, None, root / "bare2")
        table = watcher.table()
        overall = summary(table)
        overall = overall[overall["layer"] == "all"]
        if args.figure:
            shutil.copy(Path(trainer.log_dir) / "interpretability.png", args.figure)
        bare = (bare1 + bare2) / 2
        result = dict(
            network="resnet10t from scratch, 32 px, AdamW",
            task="which of the offline pool's photos a crop comes from (3000 train, 600 val)",
            epochs=args.epochs, checks=int(table["step"].nunique()),
            probe=dict(probe, metric="mis", images="default"),
            seconds_without_monitor=[round(bare1, 1), round(bare2, 1)],
            seconds_with_monitor=round(watched, 1),
            overhead_fraction=round(watched / bare - 1, 3),
            val_acc_without=round(acc_bare, 4), val_acc_with=round(acc_watched, 4),
            interp_mean_by_step={int(r.step): round(float(r.mean), 4)
                                 for r in overall.itertuples()},
            validation=watcher.validation,
            cpu_threads=torch.get_num_threads())
        emit(result, args.out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
