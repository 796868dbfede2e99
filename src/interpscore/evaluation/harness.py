"""The evaluation harness: any predictor (see `predict`) against measured HIS, on exactly the
same units."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..correlation import MIN_GROUP
from ..errors import InputError
from ..metric.tasks import TaskTensors
from ..resources import DEFAULT_BACKBONE, DEFAULT_BACKBONE_IMAGE_SIZE, DEFAULT_CACHE
from .agreement import (breakdowns, ceiling_used, ceilings, model_level, paired_bootstrap,
                        predictor_report)
from .baselines import Predictor, fit_mis, fit_stage_mis, metadata_baselines
from .names import BASELINES, BENCHMARK_PREDICTORS, SPLITS
from .predict import predict_conditions

log = logging.getLogger(__name__)  # progress lines; the CLI shows them


def without_spread(measured: np.ndarray) -> str | None:
    """Why every correlation of an evaluation is NaN, where it is: the measured HIS of its units
    is one value (a small study answered all right, say)."""
    if len(measured) == 0 or np.ptp(measured) > 0:
        return None
    return (f"all {len(measured)} test units have the same measured HIS ({measured[0]:.3f}), so "
            "no correlation with it is defined (nan; - in a table); more answers per unit, or "
            "more units, give it a spread")


def evaluate_predictors(predictors: dict[str, Predictor], tensors: TaskTensors, ids,
                        reference: str | None = None, n_boot: int = 1000, seed: int = 0
                        ) -> tuple[dict, pd.DataFrame]:
    """Every measure for every predictor on the conditions `ids`. Returns (metrics, per-unit
    predictions). `reference` (default: the first predictor) is tested against the others."""
    ids = list(ids)
    if len(ids) < MIN_GROUP:
        raise InputError(f"only {len(ids)} units to evaluate: too few for correlations")
    units = tensors.conditions.iloc[ids].reset_index(drop=True)
    measured = units["his"].to_numpy(float)
    table = units.copy()
    ceiling = ceilings(units)
    results = {}
    for name, predictor in predictors.items():
        table[f"pred_{name}"] = predict_conditions(predictor, tensors, ids)
        results[name] = predictor_report(table[f"pred_{name}"], units, ceiling, n_boot, seed,
                                         name)
    reference = reference or next(iter(predictors))
    tests = {f"{reference} vs {other}": paired_bootstrap(table[f"pred_{reference}"],
                                                         table[f"pred_{other}"], measured,
                                                         n_boot, seed, units["unit_id"])
             for other in predictors if other != reference
             and np.ptp(table[f"pred_{other}"]) > 0}
    measured_level = {"models": model_level(measured, measured, units["model"], n_boot, seed)["models"],
                      "breakdowns": breakdowns(measured, units)}
    metrics = {"predictors": results, "ceiling": ceiling, "ceiling_used": ceiling_used(ceiling),
               "paired_tests": tests, "measured": measured_level, "n_units": len(ids),
               "notes": [] if "act_sparsity" in units else [
                   "Activation-statistics baselines (sparsity, spatial contrast) need the units' "
                   "activations, which this dataset does not record (neither IMI's nor a "
                   "browser study's does)."]}
    if without_spread(measured):
        metrics["undefined"] = without_spread(measured)
        metrics["notes"].insert(0, metrics["undefined"])
    return metrics, table




def evaluate(head, tensors: TaskTensors, ids, train_ids, n_boot: int = 1000,
             benchmark: dict | None = None, load_tensors=None, stage_owners=()) -> tuple[dict, pd.DataFrame]:
    """The one evaluation, at the end of `python train.py` and in `interpscore evaluate`: the
    head (`trained`), MIS, stage-weighted MIS and the metadata baselines, all fitted on
    `train_ids`, measured on the conditions `ids` (every measure, and within model x
    difficulty groups with unit-resampled CIs); what the head learned; and, given `benchmark`
    = {"datasets": {name: path}, "headline": [names]}, the same predictors on datasets the
    head never saw (`load_tensors(path)` gives their task tensors). Returns (metrics, the
    per-unit predictions)."""
    from .benchmark import heldout_benchmark, measure_dataset

    predictors = predictors_for(tensors, train_ids, head)
    metrics, table = evaluate_predictors(predictors, tensors, ids, reference="trained",
                                         n_boot=n_boot)
    shown = {k: predictors[k] for k in BENCHMARK_PREDICTORS if k in predictors}
    metrics["grouped"], _ = measure_dataset(shown, tensors, ids, n_boot, 0)
    modes = tensors.conditions["mode"].iloc[list(ids)]
    if modes.nunique() > 1:  # natural and synthetic references: each on its own, beside MIS
        metrics["by_mode"] = {
            str(mode): measure_dataset(shown, tensors, [i for i, m in zip(ids, modes) if m == mode],
                                       n_boot, 0)[0]
            for mode in sorted(modes.unique())}
    metrics["mis_alpha"] = float(predictors["mis"].alpha)
    if hasattr(head, "describe"):  # what rule the head found, for a person to read
        metrics["learned"] = describe_head(head, stage_owners)
    if benchmark:
        log.info("evaluate: the held-out benchmark (%d datasets)", len(benchmark["datasets"]))
        metrics["benchmark"] = heldout_benchmark(shown, benchmark["datasets"],
                                                 benchmark["headline"], load_tensors,
                                                 n_boot=n_boot)
    return metrics, table


def evaluate_run(datamodule, checkpoint: str | None, module=None, n_boot: int = 1000,
                 benchmark: dict | None = None) -> dict:
    """End of `python train.py`: `evaluate` on the data module's test units with the best
    checkpoint (or the module's head)."""
    from ..metric.checkpoint import load_checkpoint
    from ..metric.tasks import load_task_tensors

    if datamodule.tensors is None:
        datamodule.setup("test")
    head = load_checkpoint(checkpoint).head if checkpoint else module.head.eval()
    split = datamodule.split_ids
    metrics, _ = evaluate(
        head, datamodule.tensors, split["test"], split["train"], n_boot, benchmark,
        lambda path: load_task_tensors(path, datamodule.backbone, datamodule.cache_dir),
        datamodule.backbone.stage_owners)
    metrics.update(split="test", checkpoint=checkpoint, backbone=datamodule.backbone_name,
                   head=(module.hparams if module is not None else {}).get("head"),
                   data={"source": datamodule.dataset_info().get("source", "unknown"),
                         "path": str(datamodule.data_dir), "fold": datamodule.fold})
    return metrics


def describe_head(head, stage_owners) -> dict:
    """The head's own account of what it learned, plus how much each network of a mixture
    counts: in a mixture's similarity a network's stages share its part equally, so a network
    counts as the mean of its stages' learned weights (at MIS, every network the same)."""
    learned = head.describe()
    weights = learned.get("stage_weights")
    if weights and len(set(stage_owners)) > 1 and len(weights) == len(stage_owners):
        networks = list(dict.fromkeys(stage_owners))
        share = {n: np.mean([w for o, w in zip(stage_owners, weights) if o == n])
                 for n in networks}
        total = sum(share.values())
        learned["network_weights"] = {n: float(share[n] / total) for n in networks}
    return learned


def format_learned(learned: dict) -> str:
    """One line: the rule a head found, the stage (and network) weights, the shrinkage."""
    how = (f"sharpness {learned['beta']:.2f}" if "beta" in learned else
           f"attention entropy {learned['attention_entropy']:.2f}")
    line = (f"learned: {learned['rule']} ({how}), stage weights "
            + " ".join(f"{w:.2f}" for w in learned["stage_weights"]))
    if "network_weights" in learned:
        line += ", networks " + ", ".join(f"{k} {w:.2f}"
                                          for k, w in learned["network_weights"].items())
    line += f", shrink toward {learned.get('anchor', 'MIS')} {learned['shrink']:g}"
    if "learned_share" in learned:
        line += (f", learned space {learned['learned_share']:.2f} of the differences"
                 f" (shrink {learned['shrink_learned']:g})")
    return line


def format_summary(metrics: dict) -> str:
    from .benchmark import format_benchmark
    from .report import verdict

    lines = [verdict(metrics)] if verdict(metrics) else []
    if "benchmark" in metrics:
        lines += [format_benchmark(metrics["benchmark"]), ""]
    predictors = metrics["predictors"]
    names = {"trained": f"trained {metrics.get('head', '')}".strip(), "mis": "MIS (baseline)"}
    units = metrics.get("grouped", {}).get("n_units")  # a unit's difficulties are conditions
    of_units = f" of {units} units" if units else ""
    lines += [f"in-distribution test: {metrics['n_units']} unit x difficulty conditions"
              f"{of_units} ({metrics['data']['source']} data, the training audience)",
              f"{'predictor':22s} {'spearman':>20s} {'within':>7s} {'mae':>7s} {'of ceiling':>10s}"]
    for name in BENCHMARK_PREDICTORS:
        if name not in predictors:
            continue
        m = predictors[name]
        ci = f"[{m['spearman_ci'][0]:.2f}, {m['spearman_ci'][1]:.2f}]"
        spearman = f"{m['spearman']:7.3f} {ci:>12s}" if np.isfinite(m["spearman"]) else f"{'-':>20s}"
        within = m.get("within_group_spearman", float("nan"))
        within = f"{within:7.3f}" if np.isfinite(within) else f"{'-':>7s}"
        fraction = f"{m['fraction_of_ceiling']:10.2f}" if np.isfinite(m["fraction_of_ceiling"]) else f"{'-':>10s}"
        lines.append(f"{names.get(name, name):22s} {spearman} {within} {m['mae']:7.3f} {fraction}")
    ceiling = metrics["ceiling"]
    lines.append("noise ceiling: " + ", ".join(f"{k} {v:.3f}" for k, v in ceiling.items()))
    test = metrics["paired_tests"]["trained vs mis"]
    lines.append(f"trained - MIS Spearman: {test['spearman_difference']:+.3f} "
                 f"[{test['ci'][0]:+.3f}, {test['ci'][1]:+.3f}], p = {test['p_value']:.3f}")
    for mode, report in metrics.get("by_mode", {}).items():
        trained, mis = report["predictors"]["trained"], report["predictors"]["mis"]
        ci = trained["within_minus_mis_ci"]
        lines.append(f"{mode} references ({report['n_units']} units): within-group trained "
                     f"{trained['within']:.3f}, MIS {mis['within']:.3f}, difference "
                     f"{trained['within_minus_mis']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
    if "learned" in metrics:
        lines.append(format_learned(metrics["learned"]))
    if "undefined" in metrics:
        lines.append(f"note: {metrics['undefined']}")
    return "\n".join(lines)


# --- the `interpscore evaluate` command --------------------------------------------------------

def split_ids(units: pd.DataFrame, split: str, source) -> list[int]:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    ids = list(range(len(units))) if split == "all" else np.flatnonzero(units["split"] == split).tolist()
    if not ids:
        raise InputError(f"{source}: no units in the '{split}' split")
    return ids


def predictors_for(tensors: TaskTensors, train_ids, head=None, only: str | None = None
                   ) -> dict[str, Predictor]:
    """The one rule from 'a checkpoint or a baseline' to predictors: the checkpoint's head as
    `trained` (when given), MIS fitted on the training units, and the metadata baselines.
    `only` keeps one of them by name."""
    predictors = {"trained": head} if head is not None else {}
    predictors.update(mis=fit_mis(tensors, train_ids), stage_mis=fit_stage_mis(tensors, train_ids),
                      **metadata_baselines(tensors, train_ids))
    if only is None:
        return predictors
    if only not in predictors:
        raise InputError(f"unknown baseline {only!r}; valid: "
                         f"{', '.join(k for k in predictors if k != 'trained')}")
    return {only: predictors[only]}


def checkpoint_tensors(checkpoint, data_dir=None, backbone: str | None = None, images_dir=None,
                       cache_dir: str = DEFAULT_CACHE):
    """A checkpoint, its backbone, and the task tensors of a dataset in its embeddings."""
    from ..metric.backbones import create_backbone
    from ..metric.checkpoint import load_checkpoint
    from ..metric.tasks import load_task_tensors

    metric = load_checkpoint(checkpoint)
    if backbone and backbone != metric.backbone:
        raise InputError(f"{checkpoint}: the checkpoint reads {metric.backbone!r} embeddings, "
                         f"not {backbone!r}; a head only works with the backbone it was trained on")
    data_dir = data_dir or metric.data_hparams.get("data_dir")
    if not data_dir:
        raise InputError(f"{checkpoint}: it records no dataset (MIS is fitted on a dataset's "
                         "training units); pass --data DIR, a prepared dataset such as "
                         "data/simulated-*/prepared/default (`python train.py` builds it)")
    encoder = create_backbone(metric.backbone, metric.image_size)
    tensors = load_task_tensors(data_dir, encoder, cache_dir, images_dir)
    if tensors.dim != metric.hparams["embedding_dim"]:
        raise InputError(f"{checkpoint}: the head expects {metric.hparams['embedding_dim']}-dim "
                         f"embeddings, backbone {metric.backbone!r} gives {tensors.dim}")
    return metric, encoder, tensors, data_dir


def drop_seen(metric, units, ids) -> tuple[list[int], int]:
    """The conditions of `ids` whose units the checkpoint never trained or selected on."""
    seen = metric.seen_units
    kept = [i for i in ids if units["unit_id"].iloc[i] not in seen]
    return kept, len(ids) - len(kept)


def run_evaluation(checkpoint, data_dir=None, split: str = "test", backbone: str | None = None,
                   images_dir=None, cache_dir: str = DEFAULT_CACHE, n_boot: int = 1000,
                   benchmark: dict | None = None):
    """`interpscore evaluate`: `evaluate` a checkpoint on one split of a dataset (default: the
    one it was trained on), leaving out the units it was trained or selected on. Returns
    (metrics, per-unit table, the task tensors)."""
    from ..metric.tasks import dataset_info, load_task_tensors

    log.info("evaluate: task tensors of %s (embeddings are cached after the first run)",
             data_dir or "the training dataset")
    metric, encoder, tensors, data_dir = checkpoint_tensors(checkpoint, data_dir, backbone,
                                                            images_dir, cache_dir)
    units = tensors.conditions
    ids, dropped = drop_seen(metric, units, split_ids(units, split, data_dir))
    if len(ids) < MIN_GROUP and dropped:
        raise InputError(f"{checkpoint}: it was trained or selected on {dropped} of the "
                         f"'{split}' units, leaving {len(ids)}: evaluate on units it has not seen")
    if len(ids) < MIN_GROUP:
        raise InputError(f"--data {data_dir}: its '{split}' split holds {len(ids)} unit "
                         f"condition(s), too few to evaluate (correlations need {MIN_GROUP}); "
                         "give a dataset with more units")
    train = np.flatnonzero(units["split"] == "train").tolist()
    log.info("evaluate: %d conditions, %d bootstrap draws of units", len(ids), n_boot)
    metrics, table = evaluate(metric.head, tensors, ids, train, n_boot, benchmark,
                              lambda path: load_task_tensors(path, encoder, cache_dir),
                              encoder.stage_owners)
    metrics["dropped_seen_units"] = dropped
    if dropped:
        metrics.setdefault("notes", []).append(
            f"{dropped} condition(s) of units the checkpoint was trained or selected on were "
            "left out.")
    metrics.update(split=split, checkpoint=str(checkpoint), head=metric.hparams["head"],
                   backbone=metric.backbone,
                   data={"source": dataset_info(data_dir).get("source", "unknown"),
                         "path": str(data_dir)})
    return metrics, table, tensors


def predict_units(dataset, keys: pd.DataFrame, checkpoint=None, baseline: str | None = None,
                  backbone: str = DEFAULT_BACKBONE, image_size: int = DEFAULT_BACKBONE_IMAGE_SIZE,
                  cache_dir: str = DEFAULT_CACHE, fit_on=None) -> np.ndarray:
    """Predictions of a checkpoint or a baseline for the units `keys` (unit_id, mode,
    difficulty) of a prepared dataset: what a leaderboard entry submits. Baselines are fitted
    on the training units of `fit_on` (default: the same dataset)."""
    from ..metric.backbones import create_backbone
    from ..data.dataset import CONDITION_KEYS
    from ..metric.tasks import load_task_tensors

    if (checkpoint is None) == (baseline is None):
        raise InputError(f"give a checkpoint or a baseline ({', '.join(BASELINES)})")
    if checkpoint is not None:
        metric, _, tensors, _ = checkpoint_tensors(checkpoint, dataset, cache_dir=cache_dir)
        seen = sorted(set(keys["unit_id"]) & metric.seen_units)
        if seen:
            raise InputError(f"{checkpoint}: it was trained or selected on {len(seen)} of these "
                             f"units (e.g. {seen[0]}); its predictions for them would not be fair")
        head = metric.head
    else:
        encoder = create_backbone(backbone, image_size)
        tensors = load_task_tensors(dataset, encoder, cache_dir)
        head = None
    position = {k: i for i, k in enumerate(map(tuple, tensors.conditions[CONDITION_KEYS].to_numpy()))}
    missing = [k for k in map(tuple, keys[CONDITION_KEYS].to_numpy()) if k not in position]
    if missing:
        raise InputError(f"{dataset}: {len(missing)} of the requested units are not in the "
                         f"dataset, e.g. {'/'.join(map(str, missing[0]))}")
    ids = [position[k] for k in map(tuple, keys[CONDITION_KEYS].to_numpy())]
    if head is not None:
        return predict_conditions(head, tensors, ids)
    fit = tensors if fit_on in (None, dataset) else load_task_tensors(fit_on, encoder, cache_dir)
    train = np.flatnonzero(fit.conditions["split"] == "train").tolist()
    (predictor,) = predictors_for(fit, train, only=baseline).values()
    return predict_conditions(predictor, tensors, ids)
