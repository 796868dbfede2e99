"""Watch interpretability while a model trains: the plain-PyTorch door.

    monitor = Monitor("mis", layers="auto", units=64)
    for epoch in ...:
        train_one_epoch(model)
        table = monitor.check(model, step)      # one row per unit: step, layer, unit, score

A check is the scoring path of `interpscore score` on a model held in memory: units and probe
pool are fixed at the first check (one `Scorer` job kept for the run, so each probe image is
embedded by the metric once), then each check is one hooked forward pass of the pool under
`no_grad` (in few large batches), exemplar selection and the metric. It leaves no trace in
training: every module's train/eval mode and the RNG states (torch CPU and CUDA, numpy,
`random`) are put back, and nothing writes weights, buffers (eval mode: batch norm keeps its
running statistics) or `.grad`.
No Lightning here: the callback lives in `monitor.lightning`.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..resources import DEFAULT_CACHE

from .options import DEFAULT_POOL, WatchOptions, probe_batch

STATS = ("mean", "p05", "p50", "p95")
ALL_LAYERS = "all"  # the summary row over every unit of a check


@contextmanager
def untouched(model=None):
    """Run a block without leaving a trace on training: the RNG states (torch CPU and every
    CUDA device, numpy's global, python's `random`) and, for `model`, every module's
    train/eval mode are restored afterwards; the block runs with the model in eval mode."""
    import torch

    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)
    modes = [(m, m.training) for m in model.modules()] if model is not None else []
    try:
        if model is not None:
            model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training  # exactly as it was, module by module (not .train())
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


def wrap_model(module, label: str = "model"):
    """A user's `nn.Module` as the scoring path's LoadedModel: timm's normalisation where the
    module carries a timm config, ImageNet's otherwise."""
    from ..stimuli.networks import LoadedModel

    config = getattr(module, "pretrained_cfg", None) or {}
    mean = tuple(config.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(config.get("std", (0.229, 0.224, 0.225)))
    size = int(config.get("input_size", (3, 224, 224))[-1])
    return LoadedModel(module, label, mean, std, size)


class Monitor:
    """Predicted interpretability of a fixed sample of units, checked as a model trains.

    metric: "mis" (training-free) or a checkpoint of `python train.py`; layers: "auto" (the
    layers of interest) or `named_modules()` names; units: N (IMI sampling), N/layer, or
    LAYER:CHANNEL,...; images: "default" (the offline pool) or a folder; pool_size, image_size
    (None: the metric's; give the training resolution), batch_size (None: the pool, up to
    `PROBE_PIXELS` a batch), seed; other `ScoringOptions` (n_refs, n_batches, ...) as
    keywords. `features`: SAE latents or directions instead of channels: an SAE file of
    `interpscore sae fit`, a direction matrix [C, k] (file or array) or an object with `encode`,
    the latter two with `layers` naming their one layer (`stimuli.readouts.open_features`)."""

    def __init__(self, metric: str | Path = WatchOptions.metric, layers=WatchOptions.layers,
                 units=int(WatchOptions.units), features=None, images=WatchOptions.images,
                 pool_size: int = DEFAULT_POOL, image_size: int | None = None,
                 batch_size: int | None = WatchOptions.batch_size, seed: int = 0,
                 cache_dir: str | Path = DEFAULT_CACHE, **options):
        from ..stimuli.options import ScoringOptions
        from ..stimuli.units import check_units_spec

        if str(metric) != "mis" and not Path(metric).is_file():
            raise InputError(f"metric {metric}: no such checkpoint; give 'mis' or the best.ckpt "
                             "that `python train.py` printed")
        if images not in (None, "default") and not Path(images).exists():
            raise InputError(f"images {images}: no such folder; give a folder of images or "
                             "'default' (the offline pool)")
        from ..stimuli.readouts import layer_names

        layers = layer_names(layers)
        check_units_spec(units)  # before any model is looked at
        self.readout = None
        if features is not None:
            from ..stimuli.readouts import open_features

            one = layers[0] if isinstance(layers, list) and len(layers) == 1 else None
            self.readout = open_features(features, one, option="features")
        self.metric, self.layers, self.units, self.images = str(metric), layers, units, images
        self.cache_dir, self.batch_size = Path(cache_dir), batch_size
        self.options = ScoringOptions.from_kwargs(
            {"progress": False, **options, "pool_size": pool_size, "image_size": image_size,
             "seed": seed})
        self._scorer = None
        self._job = None

    @property
    def scorer(self):
        if self._scorer is None:
            from ..metric.scorer import load

            with untouched():  # building the metric's backbone draws no training randomness
                self._scorer = load(self.metric, cache_dir=self.cache_dir)
        return self._scorer

    def validate(self, model, option: str = "layers") -> None:
        """Refuse bad options before training starts: the layers exist in `model` (the
        message names `option`), features fit it (`_fitted_readout`), the metric loads."""
        from ..stimuli.networks import check_layers

        if self.layers != "auto" and self._feature_layer() is None:
            check_layers(model, self.layers, option)
        if self._feature_layer() is not None and self._job is None:
            self.readout = self._fitted_readout(
                model, "--features" if option.startswith("--") else "features")
        self.scorer  # noqa: B018 (a bad checkpoint is found now, not at the first check)

    def _feature_layer(self) -> str | None:
        """The one layer features read (None: channels, under any reduction)."""
        return None if self.readout is None else self.readout.layer

    def _fitted_readout(self, module, option: str):
        """The features' readout checked against `module`: an SAE of another architecture, a
        layer the module lacks, another width or more units than features are refused. The
        weights an SAE was fitted at are not compared (they move while a model trains: an SAE
        of the last checkpoint reads the first one's layer too)."""
        import torch

        from ..stimuli.readouts import check_readout
        from ..stimuli.units import parse_units

        readout = self.readout
        where = f"{option} {readout.source}" if readout.source else option
        arch = architecture(module)
        if readout.model is not None and arch is not None and _arch_of(readout.model) != arch:
            raise InputError(f"{where}: an SAE of {readout.model}, not of a {arch}; fit one "
                             f"on this architecture (`interpscore sae fit --model "
                             f"{arch}@WEIGHTS --layer {readout.layer} ...`)")
        if readout.layer not in dict(module.named_modules()):
            raise InputError(f"{where}: reads layer {readout.layer}, which the model does not "
                             "have (`interpscore layers` lists them); give features of one of "
                             "its layers")
        readout = replace(readout, model=None)  # the architecture is checked above
        loaded = wrap_model(module, arch or "model")
        with untouched(module), torch.no_grad():  # a dummy forward pass in eval mode
            check_readout(readout, loaded, loaded.label,
                          self.options.image_size or loaded.input_size, option=option)
        parse_units(self.units, {readout.layer: readout.n_features}, self.options.seed)
        return readout

    @property
    def units_chosen(self):
        """The units checked (known once the first check has run)."""
        return None if self._job is None else list(self._job.units)

    def _job_for(self, module):
        """The scoring job, made at the first check: units and pool fixed for the run. Later
        checks reuse it with the module's current weights (the same module, or a twin)."""
        if self._job is None:
            self.validate(module)
            layer = self._feature_layer()
            layers = [layer] if layer is not None else self.layers
            self._job = self.scorer.job(wrap_model(module), layers, self.units, self.images,
                                        readout=self.readout, **_fields(self.options))
            # The probe pool in few large batches, through the network and the metric's
            # backbone (their image sizes are known now): 2-3x faster on a CPU than batches
            # of 64, the same numbers.
            job, backbone = self._job, self.scorer.cache.backbone
            job.options.batch_size = self.batch_size or probe_batch(len(job.pool),
                                                                    job.options.image_size)
            job.embed_batch = probe_batch(len(job.pool), getattr(backbone, "image_size", 224))
        else:
            self._job.model.module = module
        return self._job

    def check(self, model, step: int) -> pd.DataFrame:
        """One row per unit: step, layer, unit (channel), score (predicted HIS), its 95 %
        interval over tasks, status. Weights, modes, RNG states and gradients are untouched."""
        import torch

        with untouched(model), torch.no_grad():
            job = self._job_for(model)
            frame = self.scorer.score_job(job, job.rankings()["rankings"])
        frame = frame.rename(columns={"channel": "unit"}).assign(step=int(step))
        return frame[["step", "layer", "unit", "readout", "score", "score_low", "score_high",
                      "layer_depth", "status"]]


def architecture(module) -> str | None:
    """A timm module's architecture (None for another module)."""
    return (getattr(module, "pretrained_cfg", None) or {}).get("architecture")


def _arch_of(spec: str) -> str:
    """The architecture a model spec names (`resnet18.a1_in1k@/w.pt` -> `resnet18`)."""
    from ..stimuli.model_spec import parse_model_spec

    return parse_model_spec(spec).name.split(".")[0]


def _fields(options) -> dict:
    from dataclasses import asdict

    return asdict(options)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per step and layer (in depth order), then over all units of the step (layer "all"):
    units scored, mean, 5th, 50th and 95th percentile of the predicted score."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    rows = []
    for step, at_step in ok.groupby("step", sort=True):
        order = (at_step.groupby("layer")["layer_depth"].first().sort_values().index
                 if "layer_depth" in at_step else sorted(at_step["layer"].unique()))
        groups = [(layer, at_step[at_step["layer"] == layer]["score"]) for layer in order]
        for layer, scores in groups + [(ALL_LAYERS, at_step["score"])]:
            values = scores.to_numpy(float)
            rows.append(dict(step=step, layer=layer, units=len(values), mean=values.mean(),
                             p05=np.percentile(values, 5), p50=np.percentile(values, 50),
                             p95=np.percentile(values, 95)))
    return pd.DataFrame(rows, columns=["step", "layer", "units", *STATS])


def log_values(table: pd.DataFrame) -> dict[str, float]:
    """What a logger gets from one check: `interp/<layer>/<stat>` and `interp/mean`."""
    values = {}
    for row in summary(table).itertuples():
        if row.layer == ALL_LAYERS:
            values["interp/mean"] = float(row.mean)
        else:
            values.update({f"interp/{row.layer}/{stat}": float(getattr(row, stat))
                           for stat in STATS})
    return values
