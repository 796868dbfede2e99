"""Watching interpretability while a model trains: the one-line Lightning callback, the plain
PyTorch door (a check leaves no trace on training), and `interpscore track` over saved
checkpoints giving the callback's numbers. A tiny timm network at 32 px, 8 units, a probe pool
of 200 images: seconds."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from interpscore.cli import main
from interpscore.errors import InputError

ARCH = "test_resnet"
PROBE = dict(units=8, pool_size=200, image_size=32, n_refs=4, n_batches=3)
PROBE_ARGS = ["--units", "8", "--pool-size", "200", "--image-size", "32", "--n-refs", "4",
              "--n-batches", "3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("monitor-cache")


def tiny_net():
    import timm

    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False, num_classes=4)


class Classifier:
    """A LightningModule around a timm network (built lazily: Lightning is imported in tests
    only where a test needs it)."""

    @staticmethod
    def make(lr=0.5):
        import lightning.pytorch as pl

        class Module(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.model, self.steps = tiny_net(), 0

            def training_step(self, batch, _):
                self.steps += 1
                x, y = batch
                return torch.nn.functional.cross_entropy(self.model(x), y)

            def validation_step(self, batch, _):
                x, y = batch
                self.log("val_acc", (self.model(x).argmax(1) == y).float().mean())

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=lr)

        return Module()


def loaders():
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(48, 3, 32, 32, generator=g),
                         torch.randint(0, 4, (48,), generator=g))
    return DataLoader(data, batch_size=16, shuffle=True), DataLoader(data, batch_size=16)


class SaveAtChecks:
    """Saves the watched network at the monitor's checks (start, each epoch end) in the two
    forms `track` reads: a plain state dict first, then Lightning-style prefixed ones."""

    @staticmethod
    def make(folder):
        import lightning.pytorch as pl

        class Save(pl.Callback):
            paths = []

            def _save(self, trainer, pl_module):
                path = folder / f"step{trainer.global_step}.pt"
                state = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
                if not self.paths:
                    torch.save(state, path)
                else:
                    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()},
                                "global_step": trainer.global_step, "epoch": 0}, path)
                self.paths.append(path)

            on_train_start = _save
            on_train_epoch_end = _save

        return Save()


def fit(module, callbacks, folder, epochs=2):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    train, val = loaders()
    trainer = pl.Trainer(max_epochs=epochs, limit_train_batches=3, limit_val_batches=1,
                         accelerator="cpu", devices=1, logger=CSVLogger(folder, name="run"),
                         callbacks=callbacks, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train, val)
    return trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache):
    from interpscore.monitor import InterpretabilityMonitor

    folder = tmp_path_factory.mktemp("run")
    monitor = InterpretabilityMonitor(model_attr="model", cache_dir=cache, **PROBE)
    saver = SaveAtChecks.make(folder)
    trainer = fit(Classifier.make(), [monitor, saver], folder)
    return trainer, monitor, saver.paths, folder


def test_the_one_line_callback_logs_every_check_and_writes_table_and_figure(run):
    trainer, monitor, _, _ = run
    logged = pd.read_csv(f"{trainer.log_dir}/metrics.csv")
    checks = logged.dropna(subset=["interp/mean"])
    assert checks["step"].tolist() == [0, 3, 6]  # before training, after each epoch of 3 batches
    table = monitor.table()
    assert len(table) == 3 * 8 and table.groupby("step").size().tolist() == [8, 8, 8]
    for layer in table["layer"].unique():
        for stat in ("mean", "p05", "p50", "p95"):
            assert checks[f"interp/{layer}/{stat}"].notna().all()
    # the logged overall mean is the mean of that check's unit scores
    expected = table.groupby("step")["score"].mean().to_numpy()
    np.testing.assert_allclose(checks["interp/mean"].to_numpy(), expected, rtol=1e-6)
    assert table["score"].between(0, 1).all()
    figure = f"{trainer.log_dir}/interpretability.png"
    assert open(figure, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = pd.read_parquet(f"{trainer.log_dir}/interpretability.parquet")
    assert len(saved) == 24
    validation = pd.read_csv(f"{trainer.log_dir}/validation.csv")
    assert validation["name"].unique().tolist() == ["val_acc"]


def test_scores_move_when_weights_move_and_not_otherwise(run, cache):
    _, monitor, _, _ = run
    by_step = monitor.table().pivot_table(index=["layer", "unit"], columns="step", values="score")
    assert (by_step[0] != by_step[6]).any()  # three SGD steps at lr 0.5 moved the exemplars
    from interpscore.monitor import Monitor

    fixed = Monitor(cache_dir=cache, **PROBE)
    net = tiny_net()
    first, again = fixed.check(net, 0), fixed.check(net, 1)
    pd.testing.assert_frame_equal(first.drop(columns="step"), again.drop(columns="step"))


def test_a_check_leaves_no_trace_on_training(cache):
    from interpscore.monitor import Monitor

    net = tiny_net().train()
    net.bn1.eval()  # a user's frozen batch norm stays frozen, the rest stays in train mode
    x = torch.randn(4, 3, 32, 32)
    net(x).sum().backward()  # gradients present, as between backward and step
    torch.manual_seed(123), np.random.seed(7), random.seed(5)

    def snapshot():
        return dict(state={k: v.clone() for k, v in net.state_dict().items()},
                    modes={n: m.training for n, m in net.named_modules()},
                    grads={n: p.grad.clone() for n, p in net.named_parameters()},
                    torch=torch.get_rng_state(), numpy=np.random.get_state()[1].copy(),
                    python=random.getstate())

    before = snapshot()
    monitor = Monitor(cache_dir=cache, **PROBE)
    monitor.check(net, 0)  # the first check also chooses units and embeds the pool
    monitor.check(net, 1)
    after = snapshot()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert before["modes"] == after["modes"] and after["modes"]["bn1"] is False
    assert after["modes"]["layer1.0.bn1"] is True
    assert all(torch.equal(before["grads"][k], after["grads"][k]) for k in before["grads"])
    assert torch.equal(before["torch"], after["torch"])
    assert np.array_equal(before["numpy"], after["numpy"]) and before["python"] == after["python"]
    # the data order a shuffling loader draws next is the one it draws without a check
    order = lambda: [int(i) for i in torch.utils.data.RandomSampler(range(50))]  # noqa: E731
    torch.manual_seed(9)
    without = order()
    torch.manual_seed(9)
    monitor.check(net, 2)
    assert order() == without


def test_track_over_saved_checkpoints_gives_the_callbacks_numbers(run, cache, tmp_path, capsys):
    _, monitor, paths, _ = run
    assert len(paths) == 3
    out = tmp_path / "track"
    argv = ["track", "--model", ARCH, *map(str, paths), *PROBE_ARGS, "--cache-dir", str(cache),
            "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    tracked = pd.read_parquet(out / "interpretability.parquet")
    live = monitor.table()
    assert sorted(tracked["step"].unique()) == [0, 3, 6]  # the plain state dict is position 0
    merged = live.merge(tracked, on=["step", "layer", "unit"], suffixes=("_live", "_tracked"))
    assert len(merged) == 24
    np.testing.assert_allclose(merged["score_tracked"], merged["score_live"], atol=1e-6)
    assert (out / "interpretability.png").is_file()
    # a rerun keeps the finished checkpoints' rows and scores none again
    done = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}
    assert len(done) == 3
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == done
    pd.testing.assert_frame_equal(pd.read_parquet(out / "interpretability.parquet"), tracked)


def test_a_checkpoint_of_another_architecture_is_refused_before_any_work(run, cache, tmp_path,
                                                                         capsys):
    _, _, paths, _ = run
    import timm

    other = tmp_path / "other.pt"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), other)
    out = tmp_path / "track"
    code = main(["track", "--model", ARCH, str(paths[0]), str(other), *PROBE_ARGS,
                 "--cache-dir", str(cache), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {other}: not a checkpoint of this architecture" in err, err
    assert not out.exists()


def test_a_bad_layer_is_refused_before_training(tmp_path, cache):
    from interpscore.monitor import InterpretabilityMonitor

    module = Classifier.make()
    monitor = InterpretabilityMonitor(model_attr="model", layers=["layer9.conv"],
                                      cache_dir=cache, **PROBE)
    with pytest.raises(InputError, match=r"^layers layer9.conv: unknown layer"):
        fit(module, [monitor], tmp_path)
    assert module.steps == 0
    with pytest.raises(InputError, match="^model_attr net:"):
        fit(Classifier.make(), [InterpretabilityMonitor(model_attr="net", **PROBE)], tmp_path)
    with pytest.raises(InputError, match="^features: a direction matrix or encoder needs its layer"):
        InterpretabilityMonitor(features=np.ones((64, 3), np.float32))
    with pytest.raises(InputError, match="^every_n_epochs 0"):
        InterpretabilityMonitor(every_n_epochs=0)


DDP_SCRIPT = '''
import sys, torch, lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
sys.path.insert(0, sys.argv[2])
from test_monitor import PROBE, Classifier, loaders
from interpscore.monitor import InterpretabilityMonitor

train, val = loaders()
trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                     devices=2, strategy="ddp", logger=CSVLogger(sys.argv[1], name="run"),
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False,
                     callbacks=[InterpretabilityMonitor(model_attr="model", cache_dir=sys.argv[3],
                                                        **PROBE)])
trainer.fit(Classifier.make(), train, val)
'''


@pytest.mark.slow
def test_under_ddp_rank_0_checks_while_the_other_waits(tmp_path, cache):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_monitor.py"
    script.write_text(DDP_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent),
                           str(cache)], env=dict(os.environ, PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (version,) = (tmp_path / "run").iterdir()
    logged = pd.read_csv(version / "metrics.csv").dropna(subset=["interp/mean"])
    assert logged["step"].tolist() == [0, 2, 4]  # each rank takes 2 batches an epoch
    assert (version / "interpretability.png").is_file()


def test_features_are_watched_like_channels(cache):
    """A direction matrix of one layer: its k features are the units, each scored at a check."""
    from interpscore.monitor import Monitor

    net = tiny_net()
    layer = "layer2"
    rng = np.random.default_rng(0)
    monitor = Monitor(cache_dir=cache, layers=[layer], features=None, **{**PROBE, "units": "all"})
    channels = monitor.check(net, 0)
    width = channels["unit"].nunique()  # the layer's channels, as the scorer counts them
    directions = rng.normal(size=(width, 3)).astype(np.float32)
    watched = Monitor(cache_dir=cache, layers=[layer], features=directions,
                      **{**PROBE, "units": "all"})
    table = watched.check(net, 0)
    assert sorted(table["unit"]) == [0, 1, 2]
    assert (table["readout"] == "direction").all()
    assert table["score"].between(0, 1).all()
    net2 = tiny_net()
    torch.manual_seed(1)
    with torch.no_grad():  # other weights (a positive scale alone keeps a ReLU net's rankings)
        for p in net2.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert not table["score"].equals(watched.check(net2, 1)["score"])


def test_the_probe_pool_goes_in_few_large_batches_with_the_same_numbers(cache):
    """A check's forward pass takes the pool in batches of up to 4 M pixels (the whole probe at
    a small training resolution): the scores are those of small batches."""
    from interpscore.monitor import Monitor
    from interpscore.monitor.options import probe_batch

    assert probe_batch(500, 32) == 500 and probe_batch(1000, 128) == 256
    assert probe_batch(1000, 224) == 83 and probe_batch(10, 4096) == 1
    net = tiny_net()
    large = Monitor(cache_dir=cache, **PROBE)
    table = large.check(net, 0)
    assert large._job.options.batch_size == 200  # the whole pool at 32 px
    small = Monitor(cache_dir=cache, batch_size=7, **PROBE).check(net, 0)
    pd.testing.assert_frame_equal(table, small)
