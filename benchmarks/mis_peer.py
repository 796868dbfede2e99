"""MIS of one activation matrix over one set of image embeddings, by interpscore
(`interpscore.load("mis").score_activations`) and by MIS's reference implementation
(klindtlab/MachInterp, MIT: `query_explanation_generation` + `calc_MIS_set` of its `mis.py`,
run from a checkout you give with --machinterp; none of its code is copied here).

The matrices are synthetic over the default pool's embeddings (`synthetic_units`: random
directions of the embedding space plus noise at random signal-to-noise ratios): what is
compared is the cost of the MIS computation and how two task samplers agree, not any network.
Both sides use the same embeddings (interpscore's embedding cache of the pool, filled before
the clocks start), the same K = n_refs references and N = n_batches tasks per unit, references
drawn from the top/bottom (n_refs + 1) x n_batches images (the peer's `quantile`), and the same
alpha (interpscore's MIS head's) with cosine similarity. Both run on the CPU. The peer takes
units in chunks of --peer-chunk (its tensors hold every task's embeddings: 10k units at once
would need tens of GB). Without --machinterp only interpscore's side runs and the peer is
recorded as not run.

    python benchmarks/mis_peer.py --machinterp PATH [--sizes 1000 10000]
        [--out benchmarks/results/mis_peer.json]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from common import emit


def synthetic_units(embeddings, n_units: int, seed: int):
    """[images, units]: each unit a random direction of the embedding space plus Gaussian
    noise, at a signal-to-noise ratio drawn log-uniformly in [0.03, 30], so that units range
    from uninterpretable to clear and the two MIS values have something to agree on."""
    rng = np.random.default_rng(seed)
    signal = embeddings @ rng.standard_normal((embeddings.shape[1], n_units))
    signal /= signal.std(0, keepdims=True)
    snr = np.exp(rng.uniform(np.log(0.03), np.log(30), n_units))
    noise = rng.standard_normal(signal.shape)
    return (snr * signal + noise).astype(np.float32)


def peer_mis(machinterp: Path, matrix, embeddings, k: int, n: int, quantile: float,
             alpha: float, chunk: int, seed: int):
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(machinterp))
    import mis  # MachInterp's mis.py (it imports its metric.py)

    def cosine(e1, e2):  # the similarity its DreamSim metric uses, on given embeddings
        if e1.dim() == 1:
            e1 = e1.unsqueeze(0)
        if e2.dim() == 1:
            e2 = e2.unsqueeze(0)
        return F.cosine_similarity(e1[:, None], e2[None], dim=-1)

    images = torch.from_numpy(embeddings)
    out = []
    for start in range(0, matrix.shape[1], chunk):
        acts = torch.from_numpy(np.ascontiguousarray(matrix[:, start:start + chunk].T))
        queries, explanations = mis.query_explanation_generation(
            seed=seed, I_set=images, activations=acts, K=k, N=n, quantile=quantile,
            device="cpu", activations_sort_id=torch.argsort(acts, dim=1))
        out.append(mis.calc_MIS_set(queries, explanations, cosine, alpha=alpha))
    return torch.cat(out).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--machinterp", help="a checkout of klindtlab/MachInterp")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--n-refs", type=int, default=9)
    parser.add_argument("--n-batches", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--peer-chunk", type=int, default=500)
    parser.add_argument("--cache", default=".cache/interpscore")
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch
    from scipy.stats import spearmanr

    import interpscore
    from interpscore.stimuli.pools import open_pool

    machinterp = Path(args.machinterp) if args.machinterp else None
    if machinterp is not None and not (machinterp / "mis.py").is_file():
        parser.error(f"--machinterp {machinterp}: no mis.py there; give a MachInterp checkout")
    scorer = interpscore.load("mis", cache_dir=args.cache)
    options = dict(image_size=args.image_size, n_refs=args.n_refs, n_batches=args.n_batches,
                   progress=False)
    pool_size = scorer._options({}).pool_size
    pool = open_pool("default", size=args.image_size, n_images=pool_size, seed=0,
                     cache_dir=Path(args.cache) / "pools")
    start = time.perf_counter()
    embeddings = scorer.cache.embed_images([pool[i] for i in range(len(pool))], progress=False)
    embed_seconds = time.perf_counter() - start
    alpha = float(scorer.metric.head.alpha)
    quantile = (args.n_refs + 1) * args.n_batches / len(pool)
    rows = []
    for size in args.sizes:
        matrix = synthetic_units(embeddings, size, seed=size)
        start = time.perf_counter()
        ours = scorer.score_activations(matrix, units="all", **options)
        seconds = time.perf_counter() - start
        row = dict(units=size, interpscore_seconds=seconds, interpscore_units_per_s=size / seconds,
                   interpscore_scored=int((ours["status"] == "ok").sum()))
        if machinterp is not None:
            torch.set_num_threads(torch.get_num_threads())
            start = time.perf_counter()
            theirs = peer_mis(machinterp, matrix, embeddings, args.n_refs, args.n_batches,
                              quantile, alpha, args.peer_chunk, seed=size)
            seconds = time.perf_counter() - start
            row.update(peer_seconds=seconds, peer_units_per_s=size / seconds,
                       speedup=row["interpscore_units_per_s"] / (size / seconds),
                       spearman_over_units=float(spearmanr(ours["score"], theirs).statistic),
                       mean_mis_interpscore=float(ours["score"].mean()),
                       mean_mis_peer=float(theirs.mean()))
        rows.append(row)
        print(row, flush=True)
    result = dict(
        matrices="synthetic: a random embedding direction plus noise per unit, SNR log-uniform "
                 "in [0.03, 30], seeded by the unit count (see synthetic_units)",
        pool="default", pool_size=len(pool), image_size=args.image_size,
        embedding_dim=int(embeddings.shape[1]),
        embedding_norm_mean=float(np.linalg.norm(embeddings, axis=1).mean()),
        embed_seconds_once=embed_seconds, k=args.n_refs, n_tasks=args.n_batches,
        peer_quantile=quantile, alpha=alpha, device="cpu", cpu_threads=torch.get_num_threads(),
        peer="klindtlab/MachInterp mis.py (calc_MIS_set)" if machinterp else "not run "
             "(no --machinterp checkout given)", peer_chunk=args.peer_chunk, rows=rows)
    emit(result, args.out)


if __name__ == "__main__":
    main()
