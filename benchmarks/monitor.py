"""Watching interpretability while a network trains, offline on CPU: a small timm network
(resnet10t) learns from scratch to tell which photo a crop of the default pool comes from, with
`InterpretabilityMonitor` (training-free MIS, 64 units, a 500-image probe pool at the training
resolution) checking once before training and once per epoch.

Records validation accuracy and predicted interpretability per layer over training (the
callback's figure) and the monitor's cost, two ways, on a machine other work shares:
- whole runs, in rounds of without, with, with, without (the two runs without bracket the
  two with, so a load that drifts in time hits both sides alike); the first run with the
  monitor starts from a fresh cache (the metric embeds the probe pool), the others find it
  warm, as a second run of the same probe does; each run with it pays what a new process
  pays once (the metric's backbone and its weight check);
- inside each run with the monitor, the seconds of its checks and of its end-of-fit report
  (table, figure) against the seconds of the training around them (the same minutes of load).
All runs share one process: imports (Lightning's, the metric's, matplotlib's) are paid by the
first run, as a user's process pays them once.
With --sae-figure, the first run with the monitor also saves the network at each check; an SAE
is fitted on one layer of the final network (`stimuli.sae`, `interpscore sae fit`'s code and
defaults), and `interpscore track` scores that layer's channels and the SAE's latents over the
saved checkpoints: a figure of the two over training.

    python benchmarks/monitor.py [--epochs 3] [--rounds 3] [--out benchmarks/results/monitor.json]
        [--figure benchmarks/results/monitor.png] [--sae-figure benchmarks/results/monitor_sae.png]
        [--no-overhead]   # one run with the monitor only (the figures, minutes not an hour)
"""

import argparse
import os
import platform
import shutil
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

from common import emit

ARCH, SIZE = "resnet10t", 32
PROBE = dict(units=64, pool_size=500, image_size=SIZE, n_refs=9, n_batches=10)
PROBE_ARGS = ["--units", "all", "--pool-size", "500", "--image-size", str(SIZE), "--n-refs",
              "9", "--n-batches", "10"]
SAE_LAYER, SAE_LATENTS = "layer2", 256  # 128 channels at 4 x 4 positions (32 px input)


@lru_cache(maxsize=None)
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
            self.model = timm.create_model(ARCH, pretrained=False, num_classes=n_classes)
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


def callbacks(cache: Path, checkpoints: Path | None):
    """The monitor, timing each of its checks, and (with `checkpoints`) a callback saving the
    network at the monitor's checks as Lightning does (`model.` keys, global_step)."""
    import lightning.pytorch as pl
    import torch

    from interpscore.monitor import InterpretabilityMonitor

    class TimedMonitor(InterpretabilityMonitor):
        """Times each check, its setup (loading the metric) as a part of the first, and the
        report written when training ends."""

        seconds: list = []
        setup_seconds = report_seconds = 0.0

        def setup(self, trainer, pl_module, stage):
            start = time.perf_counter()
            super().setup(trainer, pl_module, stage)
            self.setup_seconds += time.perf_counter() - start

        def _check(self, trainer, pl_module):
            start = time.perf_counter()
            super()._check(trainer, pl_module)
            seconds = time.perf_counter() - start + (0 if self.seconds else self.setup_seconds)
            self.seconds.append(round(seconds, 2))

        def on_fit_end(self, trainer, pl_module):  # the table and figure: the monitor's too
            start = time.perf_counter()
            super().on_fit_end(trainer, pl_module)
            self.report_seconds = round(time.perf_counter() - start, 2)

    class SaveAtChecks(pl.Callback):
        paths: list = []

        def _save(self, trainer, pl_module):
            path = checkpoints / f"step{trainer.global_step}.ckpt"
            torch.save({"state_dict": {f"model.{k}": v for k, v in
                                       pl_module.model.state_dict().items()},
                        "global_step": trainer.global_step}, path)
            self.paths.append(path)

        on_train_start = on_train_epoch_end = _save

    from interpscore.stimuli import networks

    networks._RESERVED.clear()  # what a new process pays once (the backbone's weight check)
    watcher = TimedMonitor(model_attr="model", cache_dir=cache, **PROBE)
    watcher.seconds = []
    if checkpoints is None:
        return watcher, [watcher]
    checkpoints.mkdir(parents=True, exist_ok=True)
    saver = SaveAtChecks()
    saver.paths = []
    return watcher, [watcher, saver]


class Load:
    """The 1-minute load average, sampled every 10 s while a run trains."""

    def __enter__(self):
        self.samples, self._stop = [os.getloadavg()[0]], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(10):
            self.samples.append(os.getloadavg()[0])

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return dict(mean=round(sum(self.samples) / len(self.samples), 1),
                    min=round(min(self.samples), 1), max=round(max(self.samples), 1))


def run(epochs: int, extra: list, root: Path) -> dict:
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
                         num_sanity_val_steps=0, callbacks=extra)
    net = module(n_classes)
    with Load() as load:
        start = time.perf_counter()
        trainer.fit(net, train, val)
        seconds = time.perf_counter() - start
    return dict(seconds=round(seconds, 1), trainer=trainer, load=load.summary(),
                val_acc=round(float(trainer.callback_metrics["val_acc"]), 4))


def overhead(runs: list[dict]) -> dict:
    """Per round (without, with, with, without): each run with the monitor against the mean of
    the round's two runs without; inside each run with it, its checks and report against the
    training around them (the same minutes of load). Then the medians over the warm-cache runs."""
    result = dict(order=[r["kind"] for r in runs], seconds=[r["seconds"] for r in runs],
                  load_1min=[r["load"] for r in runs], val_acc=[r["val_acc"] for r in runs],
                  runs_with=[])
    for r in runs:
        if r["kind"] == "without":
            continue
        bare = [b["seconds"] for b in runs if b["kind"] == "without" and b["round"] == r["round"]]
        checks = sum(r["check_seconds"]) + r["report_seconds"]  # all the monitor does
        training = r["seconds"] - checks
        result["runs_with"].append(dict(
            round=r["round"], cache=r["kind"].split("(")[1].split()[0], seconds=r["seconds"],
            check_seconds=r["check_seconds"], report_seconds=r["report_seconds"],
            whole_run_fraction=round(r["seconds"] / (sum(bare) / len(bare)) - 1, 3),
            checks_over_training=round(checks / training, 3),
            # one check per epoch: also the mean later check over the mean epoch
            later_checks_over_training=round(sum(r["check_seconds"][1:]) / training, 3)))
    warm = [w for w in result["runs_with"] if w["cache"] == "warm"]
    if warm:
        import numpy as np

        result["median_warm"] = {key: round(float(np.median([w[key] for w in warm])), 3)
                                 for key in ("whole_run_fraction", "checks_over_training",
                                             "later_checks_over_training")}
    return result


def sae_demo(paths: list[Path], cache: Path, root: Path, validation: list) -> dict:
    """An SAE of SAE_LAYER fitted on the final checkpoint, then `interpscore track` of that
    layer's channels and of the SAE's latents over every saved checkpoint."""
    import pandas as pd

    from interpscore.cli import main
    from interpscore.stimuli.options import SAEFitOptions
    from interpscore.stimuli.pools import open_pool
    from interpscore.stimuli.sae import (collect_vectors, fit_sae, reconstruction_stats,
                                         sae_record, write_sae)
    from interpscore.stimuli.user_input import load_model

    final = paths[-1]
    loaded = load_model(f"{ARCH}@{final}", image_size=SIZE)  # a 10-way head, a Lightning ckpt
    o = SAEFitOptions(image_size=SIZE)  # `sae fit`'s defaults at the training resolution
    start = time.perf_counter()
    pool = open_pool(o.images, size=SIZE, n_images=o.pool_size, seed=o.seed,
                     cache_dir=cache / "pools")
    vectors = collect_vectors(loaded, SAE_LAYER, pool, o.positions_per_image, 256, o.seed,
                              progress=False)
    sae = fit_sae(vectors, SAE_LATENTS, o.top_k, o.epochs, o.batch_size, o.lr, o.seed,
                  progress=False)
    r2, dead = reconstruction_stats(sae, vectors)
    sae_file = write_sae(root / f"{SAE_LAYER}.sae.pt", sae_record(
        sae, f"{ARCH}@{final}", SAE_LAYER, o.top_k, o.reduction, r2, dead,
        dict(pool_images=len(pool), vectors=len(vectors))))
    fit_seconds = time.perf_counter() - start
    tables, seconds = {}, {}
    for name, given in (("channels", ["--layers", SAE_LAYER]),
                        ("sae latents", ["--features", str(sae_file)])):
        out = root / f"track-{name.replace(' ', '-')}"
        start = time.perf_counter()
        assert main(["track", "--model", ARCH, *map(str, paths), *given, *PROBE_ARGS,
                     "--cache-dir", str(cache), "--out", str(out)]) == 0
        seconds[name] = round(time.perf_counter() - start, 1)
        tables[name] = pd.read_parquet(out / "interpretability.parquet")
    by_step = {name: per_step(table) for name, table in tables.items()}
    return dict(layer=SAE_LAYER, channels=int(vectors.shape[1]), latents=SAE_LATENTS,
                top_k=o.top_k, fitted_on=f"the final checkpoint ({final.stem}), "
                f"{len(vectors)} vectors of {len(pool)} pool images",
                r2=round(r2, 3), dead_fraction=round(dead, 3),
                fit_seconds=round(fit_seconds, 1), track_seconds=seconds, by_step=by_step,
                validation=validation, tables=tables)


def per_step(table) -> dict:
    """Per step: units scored (neither constant over the probe nor too sparse for a max side),
    the units too sparse, mean predicted score with a 95 % bootstrap interval over units, 5th
    and 95th percentile."""
    import numpy as np

    rows = {}
    sparse = table["status"].str.startswith("too sparse").groupby(table["step"]).sum()
    for step, at in table[table["status"] == "ok"].groupby("step"):
        scores = at["score"].to_numpy(float)
        draws = np.random.default_rng(0).choice(scores, (2000, len(scores))).mean(1)
        rows[int(step)] = dict(units=len(scores), too_sparse=int(sparse.get(step, 0)),
                               mean=round(float(scores.mean()), 4),
                               ci=[round(float(v), 4) for v in np.percentile(draws, [2.5, 97.5])],
                               p05=round(float(np.percentile(scores, 5)), 4),
                               p95=round(float(np.percentile(scores, 95)), 4))
    return rows


def plot_sae(demo: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, vax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, rows), colour in zip(demo["by_step"].items(), ("tab:blue", "tab:orange")):
        steps = list(rows)
        ax.fill_between(steps, [r["p05"] for r in rows.values()],
                        [r["p95"] for r in rows.values()], color=colour, alpha=0.15)
        ax.errorbar(steps, [r["mean"] for r in rows.values()], yerr=[
            [r["mean"] - r["ci"][0] for r in rows.values()],
            [r["ci"][1] - r["mean"] for r in rows.values()]], color=colour, marker="o",
            capsize=3, label=f"{name} (mean, 95 % CI; band 5th-95th pct; "
            f"{rows[steps[-1]]['units']} scored at the end)")
    ax.set(xlabel="training step", ylabel="predicted interpretability (MIS, P correct)",
           title=f"{ARCH} {demo['layer']}: {demo['channels']} channels vs {demo['latents']} "
           "SAE latents\n(SAE fitted on the final checkpoint)")
    ax.legend(fontsize=8, loc="lower right")
    vax.plot([v["step"] for v in demo["validation"]], [v["value"] for v in demo["validation"]],
             marker="o", color="black")
    vax.set(xlabel="training step", title="validation accuracy")
    fig.suptitle("predicted by MIS: what the metric expects people to answer, not a "
                 "measurement of people", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    return dict(cpu=model, cores=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, note="cores shared with other developers' jobs; "
                "the load is the 1-minute load average sampled every 10 s during each run")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out")
    parser.add_argument("--figure")
    parser.add_argument("--sae-figure")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (without, with, with, without) runs")
    parser.add_argument("--no-overhead", action="store_true",
                        help="only the run with the monitor (and the SAE demonstration)")
    args = parser.parse_args()
    import torch

    from interpscore.monitor import summary

    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp(prefix="monitor-bench-"))
    cache = root / "cache"  # fresh: the first run with the monitor embeds its probe pool
    kinds = ["with"] if args.no_overhead else ["without", "with", "with", "without"]
    try:
        runs, first = [], None
        rounds = 1 if args.no_overhead else args.rounds
        for k, (round_, kind) in enumerate((r, kind) for r in range(rounds) for kind in kinds):
            if kind == "with":
                kind = f"with ({'warm' if first else 'cold'} cache)"
            watcher, extra = (None, []) if kind == "without" else callbacks(
                cache, root / "ckpts" if first is None and args.sae_figure else None)
            done = run(args.epochs, extra, root / f"run{k}")
            done.update(kind=kind, round=round_)
            print(f"round {round_}, {kind}: {done['seconds']} s, load {done['load']}",
                  flush=True)
            if watcher is not None:
                done["check_seconds"] = watcher.seconds
                done["report_seconds"] = watcher.report_seconds
                if first is None:
                    first = dict(done, watcher=watcher, paths=list(extra[-1].paths)
                                 if len(extra) > 1 else [])
            runs.append(done)
        watcher = first["watcher"]
        table = watcher.table()
        overall = summary(table)
        overall = overall[overall["layer"] == "all"]
        if args.figure:
            shutil.copy(Path(first["trainer"].log_dir) / "interpretability.png", args.figure)
        result = dict(
            network=f"{ARCH} from scratch, {SIZE} px, AdamW",
            task="which of the offline pool's photos a crop comes from (3000 train, 600 val)",
            epochs=args.epochs, checks=int(table["step"].nunique()),
            probe=dict(PROBE, metric="mis", images="default"), machine=machine(),
            interp_mean_by_step={int(r.step): round(float(r.mean), 4)
                                 for r in overall.itertuples()},
            validation=watcher.validation)
        if not args.no_overhead:
            result["overhead"] = overhead(runs)
        else:
            result["run"] = {k: first[k] for k in ("seconds", "load", "val_acc",
                                                   "check_seconds", "report_seconds")}
        if args.sae_figure:
            demo = sae_demo(first["paths"], cache, root, watcher.validation)
            plot_sae(demo, args.sae_figure)
            demo.pop("tables")
            result["sae"] = demo
        emit(result, args.out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
