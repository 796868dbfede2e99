"""How stimuli are made: the options of scoring and of the `stimuli` command (IMI's protocol by
default: 9 references x 20 batches, easy queries) and of feature visualisations, declared once.
Light: no torch, so the CLI builds its flags from them without importing the network stack."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import InputError
from ..options import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, SEED, numbers, option
from ..protocol import DIFFICULTIES, EMBEDDED, IMI


EXPLANATIONS = ("natural", "synthetic")  # synthetic = IMI's "optimized": feature visualisations


@dataclass
class ScoringOptions:
    difficulty: str = option("easy", "how far below the references the queries sit",
                             choices=DIFFICULTIES)
    n_refs: int = option(IMI.n_refs, "references per side", POSITIVE_INT)
    n_batches: int = option(IMI.n_batches, "tasks (batches of references) per unit", POSITIVE_INT)
    image_size: int | None = option(
        None, "pixels (none given: the size the metric was trained at)", POSITIVE_INT)
    pool_size: int = option(EMBEDDED.pool_size, "size of the default pool", POSITIVE_INT)
    max_refs_per_source: int | None = option(
        None, "at most this many references from one source photo (default: any)", POSITIVE_INT)
    seed: int = option(0, "seed of unit sampling and batches", SEED)
    batch_size: int = option(64, "images per forward pass", POSITIVE_INT)
    workers: int = option(0, "DataLoader processes decoding images (a GPU wants several)",
                          NON_NEGATIVE_INT)
    explanations: str = option(
        "natural", "what references explain a unit: natural, synthetic (feature visualisations, "
        "IMI's optimized condition; hundreds of passes a unit), or natural,synthetic")
    progress: bool = option(True, "")  # progress bars (not an option: the CLI always shows them)

    @classmethod
    def from_kwargs(cls, options: dict) -> "ScoringOptions":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise InputError(f"unknown scoring option(s) {unknown}; valid: {', '.join(sorted(names))}")
        made = cls(**options)
        kinds = [k.strip() for k in str(made.explanations).split(",") if k.strip()]
        if not kinds or set(kinds) - set(EXPLANATIONS):
            raise InputError(f"--explanations {made.explanations}: give natural, synthetic or "
                             "natural,synthetic")
        return made

    @property
    def explanation_kinds(self) -> list[str]:
        return [k for k in EXPLANATIONS if k in self.explanations.split(",")]


@dataclass(frozen=True)
class VisualizationOptions:
    """Every setting of a visualisation run. Defaults are what 2 CPU cores afford at 64 px;
    `IMI_OPTIONS` holds IMI's own values (the GPU setting). Pixel lengths (`padding`, `jitter`)
    are given at 224 px and scaled to `size`."""

    size: int = option(64, "px of the written images (IMI: 224); match the pool's size",
                       POSITIVE_INT)
    padding: int = option(16, "px on each side, optimised, then cropped away (IMI: 16)",
                          NON_NEGATIVE_INT)
    steps: int = option(128, "optimisation steps at most (IMI: 20000)", POSITIVE_INT)
    # A CPU budget lies far below IMI's, and stopping after 64 of 128 steps cost a third of
    # Lite0's units their win over the pool: by default nothing stops early.
    min_steps: int = option(128, "never stop before (IMI: 2500)", NON_NEGATIVE_INT)
    stop_window: int = option(32, "steps the early stop compares (IMI: 2000)", POSITIVE_INT)
    stop_ratio: float = option(1.1, "stop once the window's first / second half of gradient "
                               "norms is at most this (IMI: 1.1)", NON_NEGATIVE)
    lr: float = option(0.05, "Adam's learning rate (IMI: 0.05)", NON_NEGATIVE)
    jitter: tuple[int, int] = option((16, 8), "")  # px before / after scale and rotation (IMI's)
    scales: tuple[float, ...] = option((1.0, 0.975, 1.025, 0.95, 1.05), "")  # IMI's
    angles: tuple[float, ...] = option(tuple(range(-5, 6)), "")  # degrees, IMI's
    n_images: int = option(9, "images per direction: n - 1 diverse + 1 not (IMI: 9)",
                           POSITIVE_INT)
    alphas: tuple[float, ...] = option((0.5,), "diversity weights tried, e.g. 0.1,0.3,1 "
                                       "(IMI searched 1..1e6)", numbers)
    fallback: bool = option(False, "also optimise n non-diverse images, kept when no alpha "
                            "beats the natural extreme")
    seed: int = option(42, "seed of the noise the images start from (IMI: 42)", SEED)
    units_per_batch: int = option(8, "units optimised together", POSITIVE_INT)
    device: str = option("auto", "auto (where the model is: the GPU where there is one), cpu, "
                         "or cuda[:N] (the model is moved there)")

    def images_per_unit(self) -> int:
        nondiverse = self.n_images if self.fallback or not self.alphas else 1
        return 2 * (nondiverse + (self.n_images - 1) * len(self.alphas))


# IMI's values; its alpha search (exponential from 1, then 7 binary steps, in raw activation
# units) is not reproduced: `alphas` is a grid tried in one batch.
IMI_OPTIONS = VisualizationOptions(size=224, steps=20_000, min_steps=2_500, stop_window=2_000,
                                   alphas=(0.1, 0.3, 1.0, 3.0), fallback=True,
                                   units_per_batch=16)


@dataclass
class SAEFitOptions:
    """`interpscore sae fit`: small defaults, so a Lite0 layer on the default pool fits in
    about a minute on 2 CPU cores."""

    top_k: int = option(8, "latents active per position (TopK)", POSITIVE_INT)
    images: str = option("default", "image folder, saved HF dataset, or 'default' (the offline "
                         "pool)")
    pool_size: int = option(EMBEDDED.pool_size, "size of the default pool", POSITIVE_INT)
    image_size: int = option(EMBEDDED.image_size, "pixels of the images", POSITIVE_INT)
    positions_per_image: int = option(16, "positions (tokens) drawn from each image's map",
                                      POSITIVE_INT)
    epochs: int = option(10, "passes over the collected vectors", POSITIVE_INT)
    batch_size: int = option(512, "vectors per optimisation step", POSITIVE_INT)
    lr: float = option(5e-3, "Adam's learning rate (on the normalised vectors), decayed "
                       "linearly to 0", NON_NEGATIVE)
    reduction: str = option("mean", "the reduction over positions recorded as the default of "
                            "the file's features (mean as IMI, max, cls)",
                            choices=("mean", "max", "cls"))
    seed: int = option(0, "seed of the positions drawn and of the SAE's training", SEED)
