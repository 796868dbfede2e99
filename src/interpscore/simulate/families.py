"""The observer families: each a feature space (what a participant sees) and a decision rule
(how references and a query become evidence). Names only, so configs can list them without
loading the observers' network; `observers` implements them."""

from __future__ import annotations

from dataclasses import dataclass

FEATURE_SPACES = ("lowlevel", "spectral", "texture", "semantic", "prelogits")
RULES = ("mean", "nearest", "prototype", "topk", "gcm", "single_cue")


@dataclass(frozen=True)
class Family:
    """A participant model: what it sees and how it decides."""

    name: str
    features: tuple[str, ...]
    rule: str


# Families whose answers form the default training data (a per-participant mixture of them) ...
TRAINING_FAMILIES = (
    Family("lowlevel-mean", ("lowlevel",), "mean"),
    Family("semantic-mean", ("semantic",), "mean"),
    Family("texture-prototype", ("texture",), "prototype"),
    Family("lowlevel+semantic-topk", ("lowlevel", "semantic"), "topk"),
)
# ... and families that training never sees: other features, other rules.
HELDOUT_FAMILIES = (
    Family("spectral-nearest", ("spectral",), "nearest"),
    Family("prelogits-gcm", ("prelogits",), "gcm"),
    Family("semantic-nearest", ("semantic",), "nearest"),
    Family("lowlevel-single_cue", ("lowlevel",), "single_cue"),
)
FAMILIES = {f.name: f for f in TRAINING_FAMILIES + HELDOUT_FAMILIES}
