import json

import re

import numpy as np
import pandas as pd
import pytest
import torch

from interpscore.cli import main
from interpscore.errors import InputError
from interpscore.correlation import spearman
from interpscore.evaluation.agreement import (average_reports, binomial_ceiling, grouped_report,
                                              paired_bootstrap, split_half_ceiling, unit_draws,
                                              unit_metrics)
from interpscore.evaluation.harness import evaluate_predictors, split_ids
from interpscore.metric.checkpoint import load_checkpoint


def _simulated_units(n_units=400, n=30, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.beta(6, 2, n_units)
    k = rng.binomial(n, p)
    return p, np.full(n_units, n), k


def test_perfect_predictor_reaches_the_ceiling_and_shuffled_is_near_zero():
    direct, from_data, halves, shuffled = [], [], [], []
    for seed in range(5):
        p, n, k = _simulated_units(seed=seed)
        his = k / n
        direct.append(spearman(p, his))  # a perfect predictor knows the true accuracies
        from_data.append(binomial_ceiling(n, k, seed=seed))
        halves.append(split_half_ceiling(n, k, seed=seed))
        shuffled.append(spearman(np.random.default_rng(seed).permutation(p), his))
    assert np.mean(from_data) == pytest.approx(np.mean(direct), abs=0.04)
    assert np.mean(halves) == pytest.approx(np.mean(direct), abs=0.08)
    assert abs(np.mean(shuffled)) < 0.05


@pytest.mark.slow
def test_bootstrap_ci_covers_the_truth_at_about_the_nominal_rate():
    rho = 0.6
    population = 6 / np.pi * np.arcsin(rho / 2)  # Spearman of a bivariate normal
    cov = [[1, rho], [rho, 1]]
    hits = 0
    reps = 150
    for seed in range(reps):
        x = np.random.default_rng(seed).multivariate_normal([0, 0], cov, 100)
        ci = unit_metrics(x[:, 0], x[:, 1], n_boot=300, seed=seed)["spearman_ci"]
        hits += ci[0] <= population <= ci[1]
    assert 0.88 <= hits / reps <= 0.99


def test_paired_bootstrap_tells_a_better_predictor():
    p, n, k = _simulated_units()
    rng = np.random.default_rng(1)
    good, bad = p + rng.normal(0, 0.02, len(p)), p + rng.normal(0, 0.3, len(p))
    assert paired_bootstrap(good, bad, k / n)["p_value"] < 0.01
    assert paired_bootstrap(bad, good, k / n)["p_value"] > 0.9


def _grouped_units(seed=0):
    """Three models of 60 units, each shown easy and hard; the models' HIS levels differ."""
    rng = np.random.default_rng(seed)
    rows = []
    for m, level in enumerate((0.6, 0.75, 0.9)):
        for u in range(60):
            skill = rng.normal(0, 0.06)
            for difficulty, drop in (("easy", 0.0), ("hard85", 0.1)):
                rows.append(dict(model=f"m{m}", difficulty=difficulty, unit_id=f"m{m}/l/{u}",
                                 true_accuracy=np.clip(level - drop + skill, 0.5, 1.0)))
    units = pd.DataFrame(rows)
    units["his"] = rng.binomial(30, units["true_accuracy"]) / 30
    return units


def test_unit_draws_keep_a_units_conditions_together():
    units = _grouped_units()
    for draw in unit_draws(units["unit_id"], n_boot=20, seed=1):
        drawn = units.iloc[draw]
        assert (drawn.groupby("unit_id").size() % 2 == 0).all()  # easy and hard, every time
        assert len(draw) == len(units)


def test_within_group_spearman_is_blind_to_model_identity():
    units = _grouped_units()
    model_means = units.groupby(["model", "difficulty"])["his"].transform("mean")
    ranks_inside = units["true_accuracy"] + units["model"].map({"m0": 0.0, "m1": -1.0, "m2": -2.0})
    report, _ = grouped_report({"identity": model_means.to_numpy(), "truth": units["true_accuracy"],
                                "inside": ranks_inside.to_numpy()}, units, n_boot=200)
    rows = report["predictors"]
    # model identity gets the between-model part and nothing inside a model (a constant
    # ranks nothing: 0)
    assert rows["identity"]["overall"] > 0.6 and rows["identity"]["within"] == 0
    # ranking units perfectly inside each model with the models' order reversed: the within-group
    # number is the truth's, the overall one collapses
    assert rows["inside"]["within"] == pytest.approx(rows["truth"]["within"])
    assert rows["inside"]["overall"] < 0.2 < rows["truth"]["overall"]
    assert rows["truth"]["within"] == pytest.approx(report["ceiling"]["within"])
    assert rows["truth"]["within_of_ceiling"] == pytest.approx(1.0)
    assert report["n_units"] == 180 and report["n_conditions"] == 360


def test_paired_difference_to_mis_and_the_average_over_datasets():
    units = _grouped_units()
    noisy = units["true_accuracy"] + np.random.default_rng(2).normal(0, 0.08, len(units))
    predictions = {"mis": noisy.to_numpy(), "better": units["true_accuracy"].to_numpy()}
    # the same units in another order (another dataset of the same test units): draws pair up
    shuffled = units.sample(frac=1, random_state=3)
    reports, boots = zip(grouped_report(predictions, units, n_boot=300),
                         grouped_report({k: v[shuffled.index] for k, v in predictions.items()},
                                        shuffled.reset_index(drop=True), n_boot=300))
    row = reports[0]["predictors"]["better"]
    assert row["within_minus_mis"] > 0 and row["within_minus_mis_ci"][0] > 0
    both = average_reports(list(reports), list(boots), "mis")
    assert both["predictors"]["better"]["within"] == pytest.approx(row["within"])
    assert both["predictors"]["better"]["within_ci"] == pytest.approx(row["within_ci"])


def test_nan_predictions_and_missing_split_are_refused():
    with pytest.raises(InputError, match="predictor broken: 2 of 3 predictions are NaN"):
        unit_metrics([0.5, np.nan, np.nan], [0.1, 0.2, 0.3], name="broken")
    units = pd.DataFrame({"split": ["train", "val", "train"]})
    with pytest.raises(InputError, match="data/x: no units in the 'test' split"):
        split_ids(units, "test", "data/x")


def test_any_callable_is_evaluated_with_the_same_code(debug_run):
    from interpscore.train.lit import IMIDataModule
    import yaml

    _, run, _, _ = debug_run
    data = IMIDataModule(**yaml.safe_load((run / "config.yaml").read_text())["data"])
    data.setup("test")
    units = data.tensors.conditions
    oracle = lambda batch: torch.as_tensor(units["his"].to_numpy()[batch["condition"].numpy()])  # noqa: E731
    metrics, table = evaluate_predictors({"oracle": oracle, "trained": load_checkpoint(run / "best.ckpt").head},
                                         data.tensors, range(len(units)), n_boot=200)
    assert metrics["predictors"]["oracle"]["spearman"] == pytest.approx(1.0)
    assert metrics["predictors"]["oracle"]["mae"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["paired_tests"]["oracle vs trained"]["spearman_difference"] > 0
    assert set(table.columns) >= {"pred_oracle", "pred_trained", "his"}


def test_evaluate_command_writes_the_report(debug_run, tmp_path, capsys):
    base, run, _, _ = debug_run
    out = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", str(run / "best.ckpt"), "--out", str(out),
                 "--split", "all", "--folds", "lomo", "--lomo-epochs", "1",
                 "--cache-dir", str(base / "cache"), "--n-boot", "100"]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"metrics.json", "report.md", "report.html", "predictions.csv", "scatter.png",
            "model_means.png", "layer_depth.png", "difficulty.png", "calibration.png"} <= files
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["source"] == "simulated" and metrics["split"] == "all"
    assert set(metrics["predictors"]) == {"trained", "mis", "stage_mis", "model_identity", "constant", "layer_depth",
                                          "act_sparsity", "act_spatial_contrast"}
    # the simulated data records activation statistics; the units the checkpoint fit or
    # selected on are never scored as if new
    assert metrics["dropped_seen_units"] > 0
    assert metrics["notes"] == [f"{metrics['dropped_seen_units']} condition(s) of units the "
                                "checkpoint was trained or selected on were left out."]
    for key in ("spearman", "spearman_ci", "pearson", "kendall", "mae", "calibration",
                "model_level", "breakdowns", "fraction_of_ceiling", "spearman_vs_true_accuracy"):
        assert key in metrics["predictors"]["trained"], key
    assert {"split_half_spearman_brown", "binomial_simulation", "true_vs_measured"} <= set(metrics["ceiling"])
    assert set(metrics["lomo"]["folds"]) == {"efficientnet_lite0", "test_resnet-random"}
    assert "simulated data" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<table>" in html


def test_evaluate_never_deletes_what_the_out_folder_holds(debug_run, tmp_path, capsys):
    base, run, _, _ = debug_run
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    args = ["evaluate", "--checkpoint", str(run / "best.ckpt"), "--out", str(out),
            "--cache-dir", str(base / "cache"), "--n-boot", "50"]
    assert main(args) == 2  # refused before any work
    assert f"--out {out}: already holds files" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(args + ["--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "my notes"  # only the report's files replaced
    assert {"metrics.json", "report.md"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    (tmp_path / "file").write_text("x")
    assert main(args[:4] + [str(tmp_path / "file")] + args[5:]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_evaluate_refuses_a_checkpoint_for_another_backbone(debug_run, tmp_path, capsys):
    _, run, _, _ = debug_run
    assert main(["evaluate", "--checkpoint", str(run / "best.ckpt"), "--out", str(tmp_path / "r"),
                 "--backbone", "efficientnet_lite1"]) == 2
    assert "reads 'efficientnet_lite0' embeddings" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_file_that_is_not_our_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, path)
    with pytest.raises(InputError, match="not an interpscore checkpoint"):
        load_checkpoint(path)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")


def test_a_fraction_of_a_ceiling_at_or_below_zero_is_undefined():
    """Three test units of a small study gave a ceiling of -0.045 and fractions of 22 and -11."""
    from interpscore.evaluation.agreement import of_ceiling

    assert of_ceiling(0.5, 0.8) == pytest.approx(0.625)
    assert np.isnan(of_ceiling(0.5, -0.045)) and np.isnan(of_ceiling(0.5, 0.0))
    assert np.isnan(of_ceiling(0.5, float("nan")))


def test_the_binomial_ceiling_of_units_all_answered_right_is_undefined():
    """A person's small study: 3 test units, 2 trials each, every answer right (the beta
    posterior had b = 0, and training failed at its evaluation)."""
    n = np.array([2, 2, 2])
    assert np.isnan(binomial_ceiling(n, n)) and np.isnan(binomial_ceiling(n, 0 * n))
    assert np.isfinite(binomial_ceiling(n, np.array([2, 1, 0])))


def test_units_that_all_measure_the_same_say_why_every_correlation_is_nan(debug_run):
    """A person's small study answered all right: its 3 test units measure HIS 1.0 each."""
    from dataclasses import replace

    from interpscore.evaluation.harness import format_summary
    from interpscore.train.lit import IMIDataModule
    import yaml

    _, run, _, _ = debug_run
    data = IMIDataModule(**yaml.safe_load((run / "config.yaml").read_text())["data"])
    data.setup("test")
    tensors = replace(data.tensors, conditions=data.tensors.conditions.assign(his=1.0))
    metrics, _ = evaluate_predictors({"trained": load_checkpoint(run / "best.ckpt").head,
                                      "mis": load_checkpoint(run / "best.ckpt").head},
                                     tensors, range(3), n_boot=50)
    assert np.isnan(metrics["predictors"]["trained"]["spearman"])
    expected = ("all 3 test units have the same measured HIS (1.000), so no correlation with it "
                "is defined (nan; - in a table)")
    assert metrics["undefined"].startswith(expected) and metrics["notes"][0].startswith(expected)
    metrics.update(data={"source": "human"})
    summary = format_summary(metrics)
    assert f"note: {expected}" in summary
    assert re.search(r"^trained +- +- ", summary, re.M)  # no number where none is defined
    varied, _ = evaluate_predictors({"trained": load_checkpoint(run / "best.ckpt").head},
                                    data.tensors, range(len(data.tensors.conditions)), n_boot=50)
    assert "undefined" not in varied
