"""The simulated observer: what a simulated participant sees of an image (colour, layout and
texture statistics plus the class posteriors of a network that is never offered as a predictor
backbone) and how evidence becomes a choice (a probit with noise, lapse and side bias)."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

OBSERVER_SEMANTIC_MODEL = "efficientnet_lite2"  # never registered as a predictor backbone


def low_level_features(images: np.ndarray) -> np.ndarray:
    """Colour, layout and texture statistics of uint8 images (N, S, S, 3)."""
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


def semantic_features(pool, indices: np.ndarray, n_components: int = 16,
                      progress: bool = False) -> np.ndarray:
    """EfficientNet-Lite2 class posteriors, reduced by PCA: the observer's semantic part."""
    import torch
    from sklearn.decomposition import PCA

    from ..stimuli.networks import load_model

    model = load_model(OBSERVER_SEMANTIC_MODEL)
    out = []
    with torch.no_grad():
        for start in range(0, len(indices), 64):
            batch = torch.stack([pool[int(i)] for i in indices[start:start + 64]])
            out.append(model(batch).log_softmax(-1).cpu().numpy())
    logp = np.concatenate(out)
    k = min(n_components, len(indices) - 1, logp.shape[1])
    return PCA(k, random_state=0).fit_transform(logp)


def observer_features(pool, indices: np.ndarray, semantic_weight: float) -> dict[int, np.ndarray]:
    """Standardised observer features of the given pool images, each block weighted equally."""
    low = low_level_features(np.stack([np.asarray(pool.pil(int(i))) for i in indices]))
    blocks = [low]
    if semantic_weight > 0:
        blocks.append(semantic_features(pool, indices))
    weights = [1.0, semantic_weight]
    parts = []
    for block, weight in zip(blocks, weights):
        z = (block - block.mean(0)) / (block.std(0) + 1e-8)
        parts.append(z * weight / np.sqrt(block.shape[1]))
    return dict(zip(map(int, indices), np.concatenate(parts, axis=1)))


def trial_evidence(features: dict, q_max: int, q_min: int, refs_max, refs_min) -> float:
    """MIS-shaped evidence in the observer's space: how much more the max query resembles the
    max references (relative to the min ones) than the min query does."""
    e_max = np.stack([features[i] for i in refs_max])
    e_min = np.stack([features[i] for i in refs_min])

    def similarity(q, refs):
        return -np.mean(np.sum((refs - features[q]) ** 2, axis=1))

    return ((similarity(q_max, e_max) - similarity(q_max, e_min))
            - (similarity(q_min, e_max) - similarity(q_min, e_min)))


TYPICAL_LAPSE = 0.03
EVIDENCE_FLOOR = -0.35  # in units of the typical noise: units far below chance are rare


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
