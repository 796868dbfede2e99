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
alpha (interpscore's MIS head's) with cosine similarity. Both run on the CPU in this one process
with the same torch threads. The peer takes units in chunks of --peer-chunk (its tensors hold
every task's embeddings: 10k units at once would need tens of GB).

Timing: both sides are imported and run once on a few units before any clock starts; then each
size is timed --repeats times, the two sides interleaved and their order alternated (ours, peer;
peer, ours; ...) so that other work on a shared machine loads both alike, and the median wall and
CPU (process) seconds of each side are kept. interpscore's seconds are its whole
`score_activations`: ranking, exemplar selection, bootstrap intervals and the score table; the
peer's are its argsort, task sampling and `calc_MIS_set`.

Agreement (on the first size): the Spearman over units of the two MIS values; the peer's
`calc_MIS_set` on interpscore's own tasks (read back from the score table's exemplar columns),
which separates the MIS rule from the task sampler; and the peer against itself with another
seed, the agreement its own sampling allows. Without --machinterp only interpscore's side runs.

    python benchmarks/mis_peer.py --machinterp PATH [--sizes 1000 10000] [--repeats 3]
        [--out benchmarks/results/mis_peer.json]
    python benchmarks/mis_peer.py --table benchmarks/results/mis_peer.json
"""

import argparse
import json
import os
import statistics
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


def cosine(e1, e2):
    """The similarity MachInterp's DreamSim metric uses, on given embeddings."""
    import torch.nn.functional as F

    if e1.dim() == 1:
        e1 = e1.unsqueeze(0)
    if e2.dim() == 1:
        e2 = e2.unsqueeze(0)
    return F.cosine_similarity(e1[:, None], e2[None], dim=-1)


def peer_mis(mis, matrix, embeddings, k: int, n: int, quantile: float, alpha: float,
             chunk: int, seed: int):
    """MachInterp's MIS of every column of `matrix`, its own tasks sampled with `seed`."""
    import torch

    images = torch.from_numpy(embeddings)
    out = []
    for start in range(0, matrix.shape[1], chunk):
        acts = torch.from_numpy(np.ascontiguousarray(matrix[:, start:start + chunk].T))
        queries, explanations = mis.query_explanation_generation(
            seed=seed, I_set=images, activations=acts, K=k, N=n, quantile=quantile,
            device="cpu", activations_sort_id=torch.argsort(acts, dim=1))
        out.append(mis.calc_MIS_set(queries, explanations, cosine, alpha=alpha))
    return torch.cat(out).numpy()


def peer_on_our_tasks(mis, frame, embeddings, alpha: float, chunk: int):
    """MachInterp's `calc_MIS_set` on interpscore's tasks: per task the max and min query and
    the two reference batches, read from the score table (pool indices in the default pool)."""
    import torch

    images = torch.from_numpy(embeddings)
    out = []
    for start in range(0, len(frame), chunk):
        part = frame.iloc[start:start + chunk]
        queries = torch.tensor([json.loads(q) for q in part["queries"]])  # (U, N, 2)
        refs = [torch.tensor([json.loads(r) for r in part[f"exemplars_{side}"]])  # (U, N, K)
                for side in ("max", "min")]
        out.append(mis.calc_MIS_set((images[queries[..., 0]], images[queries[..., 1]]),
                                    (images[refs[0]], images[refs[1]]), cosine, alpha=alpha))
    return torch.cat(out).numpy()


def clocked(run):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def table(result: dict) -> str:
    lines = ["| units | interpscore units/s (wall) | MachInterp units/s (wall) | ratio | "
             "interpscore units/s (CPU) | MachInterp units/s (CPU) | Spearman |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['units']:,} | {row['interpscore_units_per_s']:.1f} | "
                     f"{row.get('peer_units_per_s', float('nan')):.1f} | "
                     f"{row.get('speedup', float('nan')):.2f} | "
                     f"{row['interpscore_units_per_cpu_s']:.1f} | "
                     f"{row.get('peer_units_per_cpu_s', float('nan')):.1f} | "
                     f"{row.get('spearman_over_units', float('nan')):.3f} |")
    agreement = result.get("agreement")
    if agreement:
        lines.append("")
        lines.append(f"Agreement at {agreement['units']:,} units (Spearman over units): "
                     f"interpscore vs MachInterp {agreement['ours_vs_peer']:.3f}; MachInterp's "
                     f"`calc_MIS_set` on interpscore's tasks vs interpscore "
                     f"{agreement['peer_on_our_tasks_vs_ours']:.6f} (max |difference| "
                     f"{agreement['peer_on_our_tasks_max_abs_difference']:.1e}); MachInterp vs "
                     f"itself with another seed {agreement['peer_vs_peer_other_seed']:.3f}.")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--machinterp", help="a checkout of klindtlab/MachInterp")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-refs", type=int, default=9)
    parser.add_argument("--n-batches", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--peer-chunk", type=int, default=500)
    parser.add_argument("--cache", default=".cache/interpscore")
    parser.add_argument("--out")
    parser.add_argument("--table", help="print the table of a recorded result and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return

    import torch
    from scipy.stats import spearmanr

    import interpscore
    from interpscore.stimuli.pools import open_pool

    machinterp = Path(args.machinterp) if args.machinterp else None
    if machinterp is not None and not (machinterp / "mis.py").is_file():
        parser.error(f"--machinterp {machinterp}: no mis.py there; give a MachInterp checkout")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be at least 1")
    mis = None
    if machinterp is not None:
        sys.path.insert(0, str(machinterp))
        import mis  # MachInterp's mis.py (it imports its metric.py): imported before any clock
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

    def ours(matrix):
        return scorer.score_activations(matrix, units="all", **options)

    def peer(matrix, seed):
        return peer_mis(mis, matrix, embeddings, args.n_refs, args.n_batches, quantile, alpha,
                        args.peer_chunk, seed)

    warm = synthetic_units(embeddings, 20, seed=0)  # imports and first calls, off the clock
    ours(warm)
    if mis is not None:
        peer(warm, 0)
    load_before = os.getloadavg()
    rows, agreement = [], None
    for size in args.sizes:
        matrix = synthetic_units(embeddings, size, seed=size)
        timed = {"interpscore": [], "peer": []}
        results = {}
        for repeat in range(args.repeats):
            sides = ["interpscore", "peer"] if mis is not None else ["interpscore"]
            for side in sides if repeat % 2 == 0 else sides[::-1]:
                result, wall, cpu = clocked((lambda: ours(matrix)) if side == "interpscore"
                                            else (lambda: peer(matrix, size)))
                timed[side].append((wall, cpu))
                score = np.asarray(result["score"] if side == "interpscore" else result)
                if side in results:  # every repeat computes the same numbers
                    assert np.array_equal(score, results[side][1], equal_nan=True), side
                results[side] = (result, score)
        frame, ours_mis = results["interpscore"]
        wall = statistics.median(w for w, _ in timed["interpscore"])
        cpu = statistics.median(c for _, c in timed["interpscore"])
        row = dict(units=size, interpscore_seconds=wall, interpscore_units_per_s=size / wall,
                   interpscore_cpu_seconds=cpu, interpscore_units_per_cpu_s=size / cpu,
                   interpscore_seconds_each=[w for w, _ in timed["interpscore"]],
                   interpscore_scored=int((frame["status"] == "ok").sum()))
        if mis is not None:
            theirs = results["peer"][1]
            peer_wall = statistics.median(w for w, _ in timed["peer"])
            peer_cpu = statistics.median(c for _, c in timed["peer"])
            row.update(peer_seconds=peer_wall, peer_units_per_s=size / peer_wall,
                       peer_cpu_seconds=peer_cpu, peer_units_per_cpu_s=size / peer_cpu,
                       peer_seconds_each=[w for w, _ in timed["peer"]],
                       speedup=peer_wall / wall, speedup_cpu=peer_cpu / cpu,
                       spearman_over_units=float(spearmanr(ours_mis, theirs).statistic),
                       mean_mis_interpscore=float(ours_mis.mean()),
                       mean_mis_peer=float(theirs.mean()))
            if agreement is None:
                ok = (frame["status"] == "ok").to_numpy()
                on_ours = peer_on_our_tasks(mis, frame[ok], embeddings, alpha, args.peer_chunk)
                gap = np.abs(on_ours - ours_mis[ok]).max()
                other = peer(matrix, size + 1)
                agreement = dict(
                    units=size, ours_vs_peer=row["spearman_over_units"],
                    peer_on_our_tasks_vs_ours=float(spearmanr(on_ours, ours_mis[ok]).statistic),
                    peer_on_our_tasks_max_abs_difference=float(gap),
                    peer_vs_peer_other_seed=float(spearmanr(theirs, other).statistic),
                    ours_vs_peer_other_seed=float(spearmanr(ours_mis, other).statistic))
        rows.append(row)
        print(row, flush=True)
    result = dict(
        matrices="synthetic: a random embedding direction plus noise per unit, SNR log-uniform "
                 "in [0.03, 30], seeded by the unit count (see synthetic_units)",
        pool="default", pool_size=len(pool), image_size=args.image_size,
        embedding_dim=int(embeddings.shape[1]),
        embedding_norm_mean=float(np.linalg.norm(embeddings, axis=1).mean()),
        embed_seconds_once=embed_seconds, k=args.n_refs, n_tasks=args.n_batches,
        peer_quantile=quantile, alpha=alpha, device="cpu", torch_threads=torch.get_num_threads(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"), processes=1,
        timing=f"median of {args.repeats} runs per side, the sides interleaved in alternating "
              "order after an untimed warm-up; wall and CPU (process) seconds; the machine's "
              "cores are shared with other work (load averages below), so wall seconds vary "
              "with it and CPU seconds less",
        load_average_before=load_before, load_average_after=os.getloadavg(),
        peer="klindtlab/MachInterp mis.py (calc_MIS_set)" if mis else "not run "
             "(no --machinterp checkout given)", peer_chunk=args.peer_chunk, rows=rows,
        agreement=agreement)
    emit(result, args.out)
    print(table(result))


if __name__ == "__main__":
    main()
