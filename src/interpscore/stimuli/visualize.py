"""Feature visualisations, IMI's "optimized" (synthetic) references: for each unit, `n_images`
maximally and minimally activating images optimised from noise, the way IMI made them with lucent
(brendel-group/imi, `stimuli_generation/get_diverse_optimized_stimuli.py`):

- a Fourier parameterisation with decorrelated colour (`fourier.py`), `padding` pixels on each
  side that are cropped away at the end;
- robustness transforms each step: jitter(16), scale 0.95-1.05, rotation +-5 degrees, jitter(8);
- Adam; the objective is the unit's spatially averaged (token-averaged) activation, maximised or
  minimised, plus alpha x the mean pairwise cosine similarity of the layer's Gram matrices;
- early stop once the smoothed gradient norm flattens;
- the model's own preprocessing (`LoadedModel.mean/std`: CLIP's for open_clip models, which, as
  in IMI, also see a centre crop of the padded image).

No library fits: torch-lucent 0.1.8 pins kornia 0.4.1, hooks every module of the model, and
optimises one objective per run; horama optimises one image with its own recipe (crops, NAdam,
no diversity). So the parameterisation is written out (`fourier.py`) and many units are
optimised in one batch: each step is one forward and backward pass of the model for every image
of every unit of the batch, cut short after the deepest layer needed. Adam's per-parameter steps
keep units independent of their batch-mates; a unit whose gradient norm has flattened leaves
the batch.

The diversity search, simplified for a CPU: IMI ran a whole optimisation per tried alpha
(exponential, then 7 binary steps) and kept the largest whose weakest image still beat the most
extreme natural exemplar. Here every alpha of `alphas` is a group of `n_images - 1` images in the
same batch, and the largest whose weakest image beats the natural extreme is kept (with the
strongest of the non-diverse images as the last, as in IMI). Alpha is measured in units of the
unit's natural activation range (the activation term is divided by it), so that one grid fits
every unit; without natural exemplars the range is 1 and the largest alpha is kept.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from . import fourier
from .networks import LoadedModel, _is_vit, check_layers, normalise
from .options import IMI_OPTIONS, VisualizationOptions  # noqa: F401 (their home is light)
from .objectives import LayerTaps, clip_both, clip_for_side, diversity, gram_cosines, mean_pairwise
from .units import Unit

log = logging.getLogger(__name__)
SIDES = {"max": 1.0, "min": -1.0}  # the sign of the channel objective


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(options: VisualizationOptions) -> None:
    """Before any work: every option is usable; messages name the command-line option."""
    def bad(name, problem):
        raise InputError(f"{option_name(name)} {getattr(options, name)}: {problem}")

    for name in ("size", "steps", "n_images", "units_per_batch", "stop_window"):
        if not isinstance(getattr(options, name), int) or getattr(options, name) < 1:
            bad(name, "must be a whole number of at least 1")
    if options.size < 16:
        bad("size", "must be at least 16 px (the network downsamples it)")
    if not isinstance(options.min_steps, int) or options.min_steps < 0:
        bad("min_steps", "must be a whole number of 0 or more (--steps or more: no early stop)")
    if options.n_images < 2:
        bad("n_images", "must be at least 2 (n - 1 diverse images and one non-diverse)")
    if options.stop_window < 2:
        bad("stop_window", "must be at least 2 steps (it compares two halves)")
    if not options.stop_ratio > 0:
        bad("stop_ratio", "must be above 0 (1.1 stops once the gradient norm falls < 10 %)")
    if not options.lr > 0:
        bad("lr", "must be above 0 (IMI: 0.05)")
    if options.padding < 0:
        bad("padding", "must be 0 or more pixels (IMI: 16)")
    if len(options.jitter) != 2 or min(options.jitter) < 0:
        bad("jitter", "must be two non-negative pixel counts, before and after (IMI: 16,8)")
    if not options.scales or min(options.scales) <= 0:
        bad("scales", "must be positive factors, e.g. 0.95,1,1.05")
    if not options.angles:
        bad("angles", "must list at least one angle in degrees, e.g. -5,0,5")
    if any(not np.isfinite(a) or a <= 0 for a in options.alphas) or \
            len(set(options.alphas)) != len(options.alphas):
        bad("alphas", "diversity weights must be distinct and above 0 (none: no diversity)")
    if options.device not in ("auto", "cpu") and not options.device.startswith("cuda"):
        bad("device", "must be auto, cpu or cuda[:N]")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        bad("device", "no CUDA device here; use auto or cpu")


@dataclass
class SideVisualizations:
    """The visualisations of one direction of a unit, weakest first (index n-1 the strongest)."""

    images: np.ndarray  # (n, size, size, 3) uint8, as written
    activations: np.ndarray  # (n,) of the images as written (no transforms, no padding)
    alpha: float  # the diversity weight of the diverse images kept (0: none)
    diversity: float  # lucent's: minus the mean pairwise cosine similarity of Gram matrices
    natural: float = float("nan")  # the pool's most extreme activation on this side

    @property
    def weakest(self) -> float:
        return float(self.activations[0])


@dataclass
class UnitVisualizations:
    unit: Unit
    sides: dict[str, SideVisualizations]  # "max", "min"
    steps: int  # optimisation steps taken (early stop included)
    # the mean signed channel objective at each step, as optimised (transformed images; see
    # objectives.clip_for_side for layers with a built-in ReLU6)
    history: list[float] = field(default_factory=list)

    def beats_natural(self, side: str) -> bool | None:
        """IMI's check: the weakest visualisation is more extreme than the most extreme natural
        exemplar of the pool (None without natural exemplars)."""
        s = self.sides[side]
        if np.isnan(s.natural):
            return None
        return bool(s.weakest > s.natural) if side == "max" else bool(s.weakest < s.natural)

    def stats(self) -> dict:
        """IMI's checks as a table row; `ties_natural`: the weakest image equals the pool's extreme
        (both at a bound no image can pass, e.g. 0 after a ReLU6 whose pool holds a silent image)."""
        row = dict(layer=self.unit.layer, channel=self.unit.channel, steps=self.steps)
        for side, s in self.sides.items():
            row.update({f"{side}_weakest": s.weakest, f"{side}_strongest": float(s.activations[-1]),
                        f"{side}_natural": s.natural, f"{side}_beats_natural": self.beats_natural(side),
                        f"{side}_ties_natural": bool(s.weakest == s.natural),
                        f"{side}_diversity": s.diversity, f"{side}_alpha": s.alpha})
        return row


def natural_rankings(model: LoadedModel, pool, units: list[Unit], keep: int = 9,
                     batch_size: int = 64, seed: int = 0, progress: bool = False,
                     readout=None) -> dict:
    """Each unit's most extreme natural exemplars in the pool: the activation pass of
    `activations.collect_rankings` (one pass, all units), its `keep` top and bottom images.
    The pool's images should have the visualisations' size: activations depend on it."""
    from .activations import collect_rankings

    return collect_rankings(model, pool, units, keep, reservoir_size=16, batch_size=batch_size,
                            seed=seed, progress=progress, readout=readout)


# --- the optimisation ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Group:
    """Images of one unit optimised alike: a side, a diversity weight, their rows."""

    side: str
    alpha: float
    rows: slice

    @property
    def sign(self) -> float:
        return SIDES[self.side]

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.rows.start, self.rows.stop)


def _groups(options: VisualizationOptions) -> list[_Group]:
    """One unit's image groups in row order: per side the non-diverse images (alpha 0), then
    `n_images - 1` for each alpha tried."""
    nondiverse = options.n_images if options.fallback or not options.alphas else 1
    groups, start = [], 0
    for side in SIDES:
        for alpha, n in [(0.0, nondiverse)] + [(float(a), options.n_images - 1)
                                                for a in options.alphas]:
            groups.append(_Group(side, alpha, slice(start, start + n)))
            start += n
    return groups


def _unit_seed(seed: int, unit: Unit) -> int:
    """A unit's images start from the same noise whichever units share its batch."""
    return zlib.crc32(f"visualize:{seed}:{unit.layer}:{unit.channel}".encode())


def _natural_extremes(natural, unit) -> tuple[float, float]:
    if natural is None:
        return float("nan"), float("nan")
    ranking = natural[unit]
    return float(ranking.top_value[0]), float(ranking.bottom_value[0])


def _model_input(model: LoadedModel, x: torch.Tensor, crop: int | None) -> torch.Tensor:
    if crop is not None:  # fixed-size models (CLIP, ViTs) see the centre, as in IMI
        offset = (x.shape[-1] - crop) // 2
        x = x[..., offset:offset + crop, offset:offset + crop]
    return normalise(x, model.mean, model.std, x.device)


def visualize_units(model: LoadedModel, units: list[Unit],
                    options: VisualizationOptions = VisualizationOptions(),
                    natural: dict | None = None, readout=None) -> list[UnitVisualizations]:
    """The visualisations of every unit, `options.units_per_batch` units per batch. `natural`
    (from `natural_rankings`) gives each unit's pool extremes: the scale of alpha, the choice
    among `alphas`, and the check recorded in `beats_natural`. `readout`
    (`stimuli.readouts`; default channels) makes a unit's activation from its layer's maps:
    a direction's or a latent's, reduced over positions as it declares."""
    check_options(options)
    units = list(dict.fromkeys(units))
    if not units:
        raise InputError("--units: no units to visualise")
    check_layers(model.module, sorted({u.layer for u in units}))
    if natural is not None and (missing := [u for u in units if u not in natural]):
        raise InputError(f"natural exemplars missing for {len(missing)} unit(s), e.g. "
                         f"{missing[0].layer}:{missing[0].channel}")
    if options.device != "auto":
        model.module.to(options.device)
    out = []
    # Gradients through saturated sigmoids turn denormal and slow a CPU down 3-fold; flushing
    # them to zero leaves the results the same.
    flushing = torch.set_flush_denormal(True)
    try:
        for start in range(0, len(units), options.units_per_batch):
            out += _visualize_batch(model, units[start:start + options.units_per_batch],
                                    options, natural, readout)
            log.info("visualised %d of %d units", len(out), len(units))
    finally:
        if flushing:
            torch.set_flush_denormal(False)
    return out


def _visualize_batch(model, units, options, natural, readout=None) -> list[UnitVisualizations]:
    device = model.device
    groups = _groups(options)
    per_unit = groups[-1].rows.stop
    padded = options.size + 2 * fourier.scaled_pixels(options.padding, options.size)
    crop = options.size if (_is_vit(model.module) or model.label.startswith("open_clip")) else None
    params = [fourier.init_spectra(per_unit, padded, torch.Generator().manual_seed(
        _unit_seed(options.seed, unit))).to(device).requires_grad_(True) for unit in units]
    optimizer = torch.optim.Adam(params, lr=options.lr)
    scale = []  # alpha is in units of the natural activation range
    for unit in units:
        high, low = _natural_extremes(natural, unit)
        scale.append(high - low if np.isfinite(high - low) and high - low > 1e-8 else 1.0)
    rng = np.random.default_rng(options.seed)  # transforms: the same draws in every batch
    smoothing = 1 - 20 / max(options.stop_window, 20)  # IMI: 0.99 over a 2,000-step window
    norms, history = [[] for _ in units], [[] for _ in units]
    steps = [0] * len(units)
    active = list(range(len(units)))
    layers = sorted({u.layer for u in units})
    taps = LayerTaps(model.module, layers, before_activation=True)
    measure = LayerTaps(model.module, layers, before_activation=False)
    try:
        for step in range(options.steps):
            optimizer.zero_grad(set_to_none=True)  # units left out keep None: Adam skips them
            theta = fourier.random_transform(rng, padded, options.jitter, options.scales,
                                             options.angles)
            images = fourier.spectra_to_images(torch.cat([params[k] for k in active]))
            x = _model_input(model, fourier.apply_transform(images, theta), crop)
            maps = taps.run(model.module, x, {units[k].layer for k in active})
            loss, objectives = 0.0, []
            for row, k in enumerate(active):
                unit = units[k]
                unit_maps = maps[unit.layer][row * per_unit:(row + 1) * per_unit]
                objective, diverse = _unit_objective(unit_maps, unit.channel,
                                                     taps.bounds[unit.layer], groups, readout)
                loss = loss - objective.sum() / scale[k] + diverse
                objectives.append(objective.detach().mean())
            loss.backward()
            optimizer.step()
            # one transfer per step for all units (a GPU waits once, not once per unit)
            grad_norms = torch.stack([params[k].grad.flatten(1).norm(dim=1).max() for k in active])
            for k, value, norm in zip(list(active), torch.stack(objectives).tolist(),
                                      grad_norms.tolist()):
                steps[k] = step + 1
                history[k].append(value)
                norms[k].append(smoothing * (norms[k][-1] if norms[k] else norm)
                                + (1 - smoothing) * norm)
                if _flattened(norms[k], options):
                    active.remove(k)  # converged: it leaves the batch
            if not active:
                break
        with torch.no_grad():
            return [_finish(model, unit, params[k], groups, options, natural, measure,
                            steps[k], history[k], readout) for k, unit in enumerate(units)]
    finally:
        taps.close()
        measure.close()


def _activation(maps, channel, readout):
    """(m, C, S) maps -> (m,) the unit's activation: the channel's spatial mean, or the
    readout's feature reduced as it declares."""
    if readout is None or (readout.kind, readout.reduction) == ("channel", "mean"):
        return maps[:, channel].mean(1)
    return readout.activations(maps, [channel])[:, 0]


def _unit_objective(unit_maps, channel, bounds, groups, readout=None):
    """Per image the signed objective (the unit's activation, maximised for max images and
    minimised for min images), and alpha x the mean Gram similarity of each diverse group."""
    objective, diverse = [], unit_maps.new_zeros(())
    for group in groups:
        maps = unit_maps[group.rows]
        activation = _activation(clip_for_side(maps, bounds, group.sign), channel, readout)
        objective.append(group.sign * activation)
        if group.alpha > 0:
            similarity = mean_pairwise(gram_cosines(clip_both(maps, bounds)))
            diverse = diverse + group.alpha * similarity.sum()
    return torch.cat(objective), diverse


def _flattened(smoothed: list[float], options: VisualizationOptions) -> bool:
    """IMI's early stop: after `min_steps`, the smoothed gradient norm of the first half of the
    last window is at most `stop_ratio` times that of the second half."""
    window = options.stop_window
    if len(smoothed) < max(window, options.min_steps):
        return False
    first = np.mean(smoothed[-window:-window // 2])
    second = np.mean(smoothed[-window // 2:])
    return bool(first <= options.stop_ratio * second)


def _finish(model, unit, spectra, groups, options, natural, measure, steps, history,
            readout=None) -> UnitVisualizations:
    """Crop away the padding, quantise as written, measure the images as written (no
    transforms), and keep per side the largest alpha whose weakest image beats the pool."""
    pad = (spectra.shape[2] - options.size) // 2
    images = fourier.spectra_to_images(spectra)[..., pad:pad + options.size, pad:pad + options.size]
    images = (images * 255).round().to(torch.uint8)
    maps = measure.run(model.module, _model_input(model, images, None), {unit.layer})[unit.layer]
    activation = _activation(maps, unit.channel, readout).cpu().numpy()
    extremes = dict(zip(SIDES, _natural_extremes(natural, unit)))
    sides = {}
    for side, sign in SIDES.items():
        nondiverse, *diverse = [g for g in groups if g.side == side]
        rows = nondiverse.indices
        strongest = rows[np.argmax(sign * activation[rows])]
        alpha, kept = _choose(diverse, sign * activation, sign * extremes[side], options.fallback)
        kept = rows if kept is None else np.append(kept, strongest)
        kept = kept[np.argsort(sign * activation[kept], kind="stable")]  # weakest first
        sides[side] = SideVisualizations(
            images[kept].permute(0, 2, 3, 1).cpu().numpy(), activation[kept], alpha,
            diversity(maps[torch.as_tensor(kept, device=maps.device)]), extremes[side])
    return UnitVisualizations(unit, sides, steps, history)


def _choose(diverse: list[_Group], signed: np.ndarray, target: float, fallback: bool):
    """(alpha, rows) of the diverse group kept: the largest alpha whose weakest image beats the
    (signed) natural target, any without a target; with none, IMI's fallback (None: the
    non-diverse images) or, without one, the least diverse group. (0, None) without diversity."""
    ranked = sorted(diverse, key=lambda g: g.alpha, reverse=True)
    for group in ranked:
        if np.isnan(target) or signed[group.indices].min() > target:
            return group.alpha, group.indices
    if not ranked or fallback:
        return 0.0, None
    return ranked[-1].alpha, ranked[-1].indices
