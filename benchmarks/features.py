"""Features beside channels on one EfficientNet-Lite0 layer: the layer's channels, the latents of
an SAE fitted by `interpscore sae fit` (its defaults, on a smaller pool), and random directions,
N units each, scored by training-free MIS over the default pool. Reports the mean predicted HIS
per readout with a 95 % interval over units (bootstrap resampling units), and the cost of
scoring N latents against N channels (wall time of the whole `score` call with the embedding
cache warm, so the activation pass and the readout are what differ; target <= 1.3x).

    python benchmarks/features.py [--units 64] [--out benchmarks/results/features.json]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import emit

MODEL, LAYER = "efficientnet_lite0", "blocks.4.0"  # 112 channels


def summary(frame, n_boot: int, seed: int) -> dict:
    from interpscore.correlation import percentile_interval

    scores = frame.loc[frame["status"] == "ok", "score"].to_numpy()
    rng = np.random.default_rng(seed)
    draws = scores[rng.integers(0, len(scores), (n_boot, len(scores)))].mean(1)
    return dict(units=int(len(frame)), scored=int(len(scores)),
                mean_his=float(scores.mean()), ci95=percentile_interval(draws),
                sd=float(scores.std(ddof=1)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--latents", type=int, default=256)
    parser.add_argument("--sae-pool-size", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--cache", default=".cache/interpscore")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch

    import interpscore

    work = Path(tempfile.mkdtemp(prefix="features-bench-"))
    sae = work / "lite0.sae.pt"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "interpscore.cli", "sae", "fit", "--model", MODEL,
                    "--layer", LAYER, "--latents", str(args.latents), "--pool-size",
                    str(args.sae_pool_size), "--image-size", str(args.image_size),
                    "--cache-dir", args.cache, "--out", str(sae)], check=True)
    fit_seconds = time.perf_counter() - start
    record = torch.load(sae, weights_only=True)

    scorer = interpscore.load("mis", cache_dir=args.cache)
    options = dict(image_size=args.image_size, progress=False)
    directions = torch.randn(112, args.units, generator=torch.Generator().manual_seed(0))
    runs = {
        "channels": lambda: scorer.score_units(MODEL, layers=[LAYER], units=args.units,
                                               **options),
        "sae_latents": lambda: scorer.score_features(MODEL, sae, units=args.units, **options),
        "random_directions": lambda: scorer.score_features(MODEL, directions, layer=LAYER,
                                                           units="all", **options),
    }
    frames, first = {}, {}
    for name, run in runs.items():  # the first call also fills the embedding cache
        start = time.perf_counter()
        frames[name] = run()
        first[name] = time.perf_counter() - start
    timed = {}
    for name in ("channels", "sae_latents"):  # again, cache warm: the cost of the readout
        start = time.perf_counter()
        run_frame = runs[name]()
        timed[name] = time.perf_counter() - start
        assert run_frame["score"].equals(frames[name]["score"])  # the same scores again
    result = dict(
        model=MODEL, layer=LAYER, units_per_readout=args.units, pool="default",
        pool_size=int(scorer._options({}).pool_size), image_size=args.image_size,
        metric="mis (training-free)",
        sae=dict(latents=args.latents, top_k=record["top_k"], r2=record["r2"],
                 dead_fraction=record["dead_fraction"], pool_images=args.sae_pool_size,
                 fit_seconds=round(fit_seconds, 1)),
        predicted_his={name: summary(frame, args.n_boot, 0) for name, frame in frames.items()},
        seconds_first_call=first, seconds_warm_cache=timed,
        cost_ratio_latents_over_channels=timed["sae_latents"] / timed["channels"],
        target_ratio=1.3, cpu_threads=torch.get_num_threads())
    emit(result, args.out)


if __name__ == "__main__":
    main()
