"""How stimuli are made for scoring and for the `stimuli` command: the options, declared once
(as in IMI: 9 references x 20 batches, easy queries). Light: no torch, so the CLI can build its
flags from it without importing the network stack."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..protocol import DIFFICULTIES, EMBEDDED, IMI
from ..errors import InputError
from ..options import NON_NEGATIVE_INT, POSITIVE_INT, SEED, option


EXPLANATIONS = ("natural", "synthetic")  # synthetic = IMI's "optimized": feature visualisations


@dataclass
class ScoringOptions:
    difficulty: str = option("easy", "how far below the references the queries sit",
                             choices=DIFFICULTIES)
    n_refs: int = option(IMI.n_refs, "references per side", POSITIVE_INT)
    n_batches: int = option(IMI.n_batches, "tasks (batches of references) per unit", POSITIVE_INT)
    image_size: int | None = option(
        None, "pixels (default: the size the metric was trained at)", POSITIVE_INT)
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
