"""Simulated observers: hypotheses about how people do the IMI task, never one of them taken as
the truth. An observer *family* is a feature space (what a participant sees of an image) and a
decision rule (how the references and a query become evidence); a participant draws its own
mixture of families, cue weights, noise, lapse and side bias.

Feature spaces (none is ever offered as a predictor backbone):
- `lowlevel`: colour means and spreads, a 3x3 layout of mean colours, oriented gradient energy;
- `spectral`: radial x angular Fourier power bands and a hue-saturation histogram;
- `texture`: channel means and spreads of two early stages of EfficientNet-Lite2 (Gram-matrix
  diagonals: texture statistics);
- `semantic`: EfficientNet-Lite2 class log-posteriors;
- `prelogits`: EfficientNet-Lite2 pre-logit features.
Each space is standardised per dimension and reduced by PCA where it is wide, and scaled so that
a typical distance between two images is 1.

Decision rules (a similarity s(q, E) of a query to a reference set; the evidence for the max
query is [s(q+,E+) - s(q+,E-)] - [s(q-,E+) - s(q-,E-)], as in MIS):
- `mean`: the mean similarity to the references (MIS's rule);
- `nearest`: the similarity to the most similar reference (nearest exemplar);
- `prototype`: the similarity to the set's mean (prototype theory);
- `topk`: the mean of the k most similar references (attention to a few);
- `gcm`: summed exponential similarity, Nosofsky's generalized context model of exemplar-based
  categorisation, with its sensitivity c;
- `single_cue`: one feature dimension alone, the one that best separates the two reference sets
  in this trial ("take the best", Gigerenzer & Goldstein 1996): a heuristic that ignores all
  other cues. A participant's cue weights change which cue looks best to it.
Similarity is minus the Euclidean distance.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from ..stimuli.networks import OBSERVER_NETWORKS
from .families import FAMILIES, FEATURE_SPACES, HELDOUT_FAMILIES, RULES, TRAINING_FAMILIES, Family  # noqa: F401

OBSERVER_NETWORK = OBSERVER_NETWORKS[0]  # the observers' network: never a predictor backbone
TOPK = 3
GCM_SENSITIVITY = 3.0
TYPICAL_LAPSE = 0.03
EVIDENCE_FLOOR = -0.35  # in units of the family's noise: units far below chance are rare


# --- feature spaces ------------------------------------------------------------------------------

def lowlevel_features(images: np.ndarray) -> np.ndarray:
    """Colour, layout and orientation statistics of uint8 images (N, S, S, 3)."""
    x = images.astype(np.float32) / 255.0
    n, s = x.shape[:2]
    grid = x[:, : s - s % 3, : s - s % 3].reshape(n, 3, (s - s % 3) // 3, 3, (s - s % 3) // 3, 3)
    layout = grid.mean(axis=(2, 4)).reshape(n, -1)  # 3x3 grid of mean colours
    grey = x.mean(axis=3)
    gy, gx = np.gradient(grey, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.minimum((angle / np.pi * 8).astype(int), 7)
    orientation = np.stack([(magnitude * (bins == b)).mean(axis=(1, 2)) for b in range(8)], 1)
    saturation = (x.max(axis=3) - x.min(axis=3)).mean(axis=(1, 2))[:, None]
    return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), layout, orientation,
                           magnitude.mean(axis=(1, 2))[:, None], saturation], axis=1)


def spectral_features(images: np.ndarray) -> np.ndarray:
    """Log Fourier power in 4 radial x 4 angular bands of the grey image, plus a 4x3
    hue-saturation histogram: a view of images that no layout or network feature shares."""
    x = images.astype(np.float32) / 255.0
    n, s = x.shape[:2]
    grey = x.mean(axis=3)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True)),
                                   axes=(1, 2))) ** 2
    fy, fx = np.meshgrid(np.arange(s) - s // 2, np.arange(s) - s // 2, indexing="ij")
    radius = np.hypot(fx, fy) / (s / 2)
    angle = np.mod(np.arctan2(fy, fx), np.pi)
    r_bin = np.digitize(radius, [0.05, 0.15, 0.35, 0.7]) - 1  # -1: the DC term, 3: the highest
    a_bin = np.minimum((angle / np.pi * 4).astype(int), 3)
    bands = [np.log1p(power[:, (r_bin == r) & (a_bin == a)].mean(axis=1))
             for r in range(3) for a in range(4)]
    bands.append(np.log1p(power[:, r_bin == 3].mean(axis=1)))
    peak, low = x.max(axis=3), x.min(axis=3)
    saturation = (peak - low) / (peak + 1e-6)
    hue = _hue(x, peak, low)
    hist = [((np.minimum((hue * 4).astype(int), 3) == h)
             & (np.minimum((saturation * 3).astype(int), 2) == c)).mean(axis=(1, 2))
            for h in range(4) for c in range(3)]
    return np.stack(bands + hist, axis=1)


def _hue(x, peak, low):
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    span = peak - low + 1e-6
    hue = np.where(peak == r, (g - b) / span, np.where(peak == g, 2 + (b - r) / span,
                                                        4 + (r - g) / span))
    return np.mod(hue / 6.0, 1.0)


def network_features(pool, indices: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """`texture`, `semantic` and `prelogits` of the observers' network, in one pass."""
    import torch

    from ..stimuli.networks import load_model, normalise

    model = load_model(OBSERVER_NETWORK)
    out = {"texture": [], "semantic": [], "prelogits": []}
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            batch = torch.stack([pool[int(i)] for i in indices[start:start + batch_size]])
            x = normalise(batch, model.mean, model.std, model.device)
            final, maps = model.module.forward_intermediates(x, indices=[1, 2])
            out["texture"].append(torch.cat([torch.cat([m.mean((2, 3)), m.std((2, 3))], 1)
                                             for m in maps], 1).cpu().numpy())
            pre = model.module.forward_head(final, pre_logits=True)
            out["prelogits"].append(pre.cpu().numpy())
            out["semantic"].append(model.module.classifier(pre).log_softmax(-1).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _standardise(block: np.ndarray, max_dims: int = 32) -> np.ndarray:
    """z-scores, PCA to at most `max_dims`, scaled so the mean distance of two images is 1."""
    from sklearn.decomposition import PCA

    z = (block - block.mean(0)) / (block.std(0) + 1e-8)
    if z.shape[1] > max_dims:
        z = PCA(min(max_dims, len(z) - 1), random_state=0).fit_transform(z)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(z), (2, min(2000, len(z) * 4)))
    typical = np.linalg.norm(z[a] - z[b], axis=1).mean()
    return (z / (typical + 1e-8)).astype(np.float32)


def feature_spaces(parts: list[tuple]) -> list[dict[str, np.ndarray]]:
    """Every feature space for images of several pools, `parts` = [(pool, indices), ...],
    standardised jointly so that all pools are seen on one scale. Returns one
    {space: (len(indices), D)} per part."""
    raw = []
    for pool, indices in parts:
        images = np.stack([np.asarray(pool.pil(int(i))) for i in indices])
        raw.append({"lowlevel": lowlevel_features(images), "spectral": spectral_features(images),
                    **network_features(pool, indices)})
    sizes = np.cumsum([0] + [len(indices) for _, indices in parts])
    out = [{} for _ in parts]
    for name in raw[0]:
        joint = _standardise(np.concatenate([r[name] for r in raw]))
        for k in range(len(parts)):
            out[k][name] = joint[sizes[k]:sizes[k + 1]]
    return out


def family_features(spaces: dict[str, np.ndarray], family: Family) -> np.ndarray:
    """A family's view: its spaces side by side, each weighted equally."""
    blocks = [spaces[name] for name in family.features]
    return np.concatenate(blocks, axis=1) / np.sqrt(len(blocks))


# --- decision rules -------------------------------------------------------------------------------

def set_similarity(rule: str, q: np.ndarray, refs: np.ndarray, cue=None) -> np.ndarray:
    """s(q, E) for T tasks at once: q (T, D), refs (T, R, D) -> (T,)."""
    if rule == "single_cue":
        return -np.abs(q[:, cue] - refs[:, :, cue].mean(1))
    if rule == "prototype":
        return -np.linalg.norm(q - refs.mean(1), axis=-1)
    sims = -np.linalg.norm(refs - q[:, None, :], axis=-1)  # (T, R)
    if rule == "mean":
        return sims.mean(1)
    if rule == "nearest":
        return sims.max(1)
    if rule == "topk":
        return np.sort(sims, axis=1)[:, -TOPK:].mean(1)
    if rule == "gcm":
        c = GCM_SENSITIVITY
        top = sims.max(1, keepdims=True)  # log-mean-exp, stably
        return (top[:, 0] + np.log(np.exp(c * (sims - top)).mean(1)) / c)
    raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")


def best_cue(refs_max: np.ndarray, refs_min: np.ndarray) -> np.ndarray:
    """Per task, the dimension that best separates the two reference sets (difference of the
    means over the pooled spread): the cue a take-the-best participant uses."""
    spread = refs_max.std(1) + refs_min.std(1) + 1e-6
    return np.argmax(np.abs(refs_max.mean(1) - refs_min.mean(1)) / spread, axis=1)


def evidence(rule: str, features: np.ndarray, q_max, q_min, refs_max, refs_min,
             weights=None) -> np.ndarray:
    """MIS-shaped evidence for the max query of each task under a rule. `features` (N, D) is
    indexed by the task arrays; `weights` (D,) are a participant's cue weights."""
    f = features if weights is None else features * weights
    qp, qm, ep, em = f[q_max], f[q_min], f[refs_max], f[refs_min]
    cue = None
    if rule == "single_cue":  # one cue per task: keep that dimension alone, then compare on it
        best = best_cue(ep, em)
        rows = np.arange(len(best))
        qp, qm = qp[rows, best][:, None], qm[rows, best][:, None]
        ep, em = ep[rows, :, best][:, :, None], em[rows, :, best][:, :, None]
        cue = 0

    def s(q, e):
        return set_similarity(rule, q, e, cue)

    return (s(qp, ep) - s(qp, em)) - (s(qm, ep) - s(qm, em))


def p_correct(evidence, sigma, lapse=TYPICAL_LAPSE, bias=0.0):
    z = np.maximum(evidence / sigma, EVIDENCE_FLOOR) + bias / sigma
    return lapse / 2 + (1 - lapse) * ndtr(z)


def calibrate_sigma(evidence: np.ndarray, target: float) -> float:
    """Noise level at which a typical participant's mean accuracy is `target` (bisection)."""
    low, high = 1e-6 * np.abs(evidence).max() + 1e-12, 100 * np.abs(evidence).max() + 1e-12
    for _ in range(100):
        mid = np.sqrt(low * high)
        if p_correct(evidence, mid).mean() > target:
            low = mid
        else:
            high = mid
    return float(np.sqrt(low * high))
