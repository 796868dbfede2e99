import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from interpscore.errors import InputError
from interpscore.evaluation.predict import predict_conditions
from interpscore.metric.heads import MISHead, nll
from interpscore.train.lit import InterpScoreModule
from interpscore.metric.tasks import TaskTensors, gather
from interpscore.resources import package_file
from interpscore.train.cli import main

CONFIG_DIR = package_file("configs")

ROOT = Path(__file__).resolve().parents[1]


def _test_predictions(run):
    """The debug run's data module (test split set up) and its test conditions."""
    import yaml

    from interpscore.train.lit import IMIDataModule

    data = IMIDataModule(**yaml.safe_load((run / "config.yaml").read_text())["data"])
    data.setup("test")
    return data, data.split_ids["test"]


def test_debug_config_trains_end_to_end(debug_run):
    """metrics.json records the evaluation of best.ckpt on the test units: its numbers are
    those scipy and numpy give for the checkpoint's predictions against the measured HIS."""
    from scipy.stats import pearsonr, spearmanr

    from interpscore.metric.checkpoint import load_checkpoint

    _, run, _, _ = debug_run
    for name in ("best.ckpt", "last.ckpt", "config.yaml", "metrics.json", "metrics.csv"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["data"]["source"] == "simulated"
    assert Path(saved["checkpoint"]) == run / "best.ckpt"
    trained, mis = saved["predictors"]["trained"], saved["predictors"]["mis"]
    for key in ("spearman", "pearson", "mae", "n_units", "within_group_spearman"):
        assert key in trained and key in mis
    assert "ceiling" in saved
    data, ids = _test_predictions(run)
    units = data.tensors.conditions.iloc[ids]
    assert (units["split"] == "test").all() and len(units) == (data.tensors.conditions["split"] == "test").sum()
    assert saved["n_units"] == trained["n_units"] == len(ids) > 0
    predicted = predict_conditions(load_checkpoint(run / "best.ckpt").head, data.tensors, ids)
    measured = units["his"].to_numpy(float)
    assert trained["spearman"] == pytest.approx(spearmanr(predicted, measured)[0], abs=1e-9)
    assert trained["pearson"] == pytest.approx(pearsonr(predicted, measured)[0], abs=1e-6)
    assert trained["mae"] == pytest.approx(np.abs(predicted - measured).mean(), abs=1e-9)


def test_a_saved_checkpoint_scores_the_tasks_as_the_module_that_wrote_it(debug_run, tmp_path):
    """A module trained in memory, saved by Lightning and read back through the inference door
    (`load_checkpoint`, what `interpscore.load` and `evaluate` use) predicts every test
    condition bit for bit as the module did; training moved it away from a fresh head, so the
    comparison would see a head that came back untrained."""
    import lightning as L
    import yaml

    from interpscore.metric.checkpoint import load_checkpoint

    _, run, _, _ = debug_run
    data, ids = _test_predictions(run)
    options = dict(yaml.safe_load((run / "config.yaml").read_text())["model"],
                   embedding_dim=data.embedding_dim, stage_dims=data.stage_dims)
    L.seed_everything(0, verbose=False)
    module = InterpScoreModule(**options)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=data)
    in_memory = predict_conditions(module.head.eval(), data.tensors, ids)
    trainer.save_checkpoint(tmp_path / "saved.ckpt")
    loaded = load_checkpoint(tmp_path / "saved.ckpt")
    np.testing.assert_array_equal(predict_conditions(loaded.head, data.tensors, ids), in_memory)
    assert loaded.hparams["head"] == options["head"]
    fresh = InterpScoreModule(**options).head.eval()
    assert np.abs(predict_conditions(fresh, data.tensors, ids) - in_memory).max() > 1e-4


def _known_tensors(alpha_true: float, n: int = 2000) -> TaskTensors:
    """Two tasks with orthogonal max/min references: MIS delta = 2, and 1 + 1/sqrt(2)."""
    import pandas as pd

    from interpscore.data.layouts import Task
    from interpscore.metric.tasks import summarise_tasks

    e = torch.eye(3)
    embeddings = torch.stack([e[0], e[1], (e[0] + e[2]) / 2 ** 0.5])
    # task 0: q+ = E+ = e0, q- = E- = e1;  task 1: q+ = (e0 + e2)/sqrt2, cos(q+, E+) = 1/sqrt2
    p = torch.sigmoid(alpha_true * torch.tensor([2.0, 1 + 2 ** -0.5]))
    summaries = summarise_tasks(embeddings, [Task(0, 1, [0, 0], [1, 1]),
                                             Task(2, 1, [0, 0], [1, 1])])
    return TaskTensors(**summaries, n=torch.tensor([n, n], dtype=torch.float32), k=(p * n).round(),
                       condition_tasks=torch.tensor([[0, 1]]),
                       conditions=pd.DataFrame({"unit_id": ["u"], "his": [float(p.mean())]}))


def test_mis_on_a_case_with_a_known_answer():
    tensors = _known_tensors(alpha_true=1.5)
    mis = MISHead(3, alpha=1.0)
    batch = gather(tensors, [0])
    expected = torch.sigmoid(torch.tensor([2.0, 1 + 2 ** -0.5]))
    assert torch.allclose(mis(batch)[0], expected, atol=1e-6)
    assert mis.fit_alpha([batch]) == pytest.approx(1.5, abs=0.05)
    assert predict_conditions(mis, tensors, [0])[0] == pytest.approx(tensors.conditions.his[0], abs=1e-3)
    assert nll(mis(batch), batch, "trial") < nll(MISHead(3, alpha=0.1)(batch), batch, "trial")


def test_the_training_free_mis_head_gives_a_checkpoint_equal_to_the_baseline(debug_run):
    _, _, _, debug_args = debug_run
    metrics = main(debug_args + ["--config", str(CONFIG_DIR / "heads" / "mis.yaml")])
    assert Path(metrics["checkpoint"]).is_file() and metrics["head"] == "mis"
    trained, mis = metrics["predictors"]["trained"], metrics["predictors"]["mis"]
    assert trained["spearman"] == pytest.approx(mis["spearman"])
    assert trained["mae"] == pytest.approx(mis["mae"], abs=1e-6)


def test_every_config_parses():
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        with pytest.raises(SystemExit) as done:
            main(["--config", str(path), "--print_config"])
        assert done.value.code in (0, None), path


@pytest.mark.parametrize("args,message", [
    (["--model.head", "nope"], "--model.head nope: unknown head"),
    (["--data.batch_size", "0"], "--data.batch_size 0: must be positive"),
    (["--data.backbone", "efficientnet_lite2"], "observer"),
    (["--data.simulation", '{"units_per_modell": 3}'], "units_per_modell"),
])
def test_bad_config_values_give_clear_errors(debug_run, args, message):
    base, _, _, debug_args = debug_run
    with pytest.raises(InputError, match=message):
        main(debug_args + args)


def test_an_observer_network_is_refused_by_its_weights_under_another_name(tmp_path):
    """The observers' Lite2 saved to a file and loaded through timm's own architecture name is
    still Lite2; other weights of the same architecture are not."""
    import torch

    from interpscore.metric.backbones import create_backbone
    from interpscore.stimuli.networks import load_model

    weights = tmp_path / "lite2.pth"
    torch.save(load_model("efficientnet_lite2").module.state_dict(), weights)
    with pytest.raises(InputError, match="weights are those of efficientnet_lite2"):
        create_backbone(f"timm:tf_efficientnet_lite2@{weights}", image_size=64)
    assert create_backbone("timm:tf_efficientnet_lite2@random", image_size=64).dim > 0


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(debug_run):
    base, _, _, debug_args = debug_run
    root = base / "ddp"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *debug_args[:-1], str(root),
         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
         "--trainer.max_epochs", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = root.iterdir()
    assert json.loads((run / "metrics.json").read_text())["n_units"] > 0
    assert "distributed_backend=gloo" in done.stderr + done.stdout


def test_a_head_on_two_networks_says_how_much_each_counts(debug_run):
    """`--data.backbone A+B`: the attention head reads both networks' stages; metrics.json and
    the summary say which rule it found and how much each network's stages weigh."""
    from interpscore.evaluation.harness import format_summary

    _, _, _, debug_args = debug_run
    networks = ["efficientnet_lite0", "timm:test_resnet@random"]
    metrics = main(debug_args + ["--model.head", "attention", "--data.backbone", "+".join(networks)])
    learned = metrics["learned"]
    assert list(learned["network_weights"]) == networks
    assert all(0 < w < 1 for w in learned["network_weights"].values())
    from interpscore.metric.backbones import create_backbone

    stages = create_backbone("+".join(networks), image_size=64).stage_dims
    assert len(learned["stage_weights"]) == len(learned["attention_weights"]) == len(stages)
    assert 0 <= learned["attention_entropy"] <= 1
    assert "networks efficientnet_lite0" in format_summary(metrics)


def test_the_low_rank_head_trains_reloads_and_scores(debug_run, tmp_path):
    """`--model.head pooled_lowrank --model.rank 4`, its learned space's prior given (on the
    tiny debug data the chosen one switches the space off): trained through the CLI, it says
    how much of the similarity its learned space carries; the checkpoint reloads with that
    space, and scoring a unit from its exemplars reads it."""
    from interpscore.metric.scorer import load

    _, _, _, debug_args = debug_run
    metrics = main(debug_args + ["--model.head", "pooled_lowrank", "--model.rank", "4",
                                 "--model.shrink_learned", "0.001"])
    learned = metrics["learned"]
    assert learned["rank"] == 4 and learned["shrink_learned"] == pytest.approx(0.001)
    assert learned["learned_share"] > 0.05
    scorer = load(metrics["checkpoint"], cache_dir=tmp_path / "cache")
    assert scorer.metric.head.projection.shape[1] == 4
    rng = torch.Generator().manual_seed(0)

    def image():
        return torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=rng)

    exemplars = ([(image(), image())] * 2, [[image() for _ in range(3)]] * 2,
                 [[image() for _ in range(3)]] * 2)
    learned = scorer.score_exemplars(*exemplars)["score"]
    with torch.no_grad():
        scorer.metric.head.projection.zero_()  # the same head without its learned space
    assert learned != pytest.approx(scorer.score_exemplars(*exemplars)["score"], abs=1e-6)
