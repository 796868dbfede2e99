"""Zoo scan cost: for each configuration (model, pool images, units), in a fresh process, the
time of one raw forward pass over the pool (same batches, workers and precision, no hooks), of
the scan's activation pass over all requested units, and of scoring them (exemplar selection,
embedding the exemplar images, the head), with units per second and peak memory; the goal is an
activation pass of at most 1.3x the raw pass. With --torchrun, the wall time of a whole
`interpscore zoo` scan of several models under torchrun with 1 and with N processes. Prints JSON.

    python benchmarks/zoo_scan.py [--checkpoint CKPT|mis] [--out benchmarks/results/zoo_scan.json]
    python benchmarks/zoo_scan.py --gpu --out benchmarks/results/zoo_scan_gpu.json  # one GPU

A pool larger than --unique-images repeats its images (cost does not depend on their content).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter

from common import emit

CPU_CONFIGS = [  # model, pool images, units, image size
    ("resnet18@random", 1000, "4/layer", 64),
    ("resnet18@random", 2000, "4/layer", 64),
    ("resnet18@random", 2000, "all", 64),
    ("resnet50@random", 2000, "20/layer", 64),
]
GPU_CONFIGS = [
    ("resnet50@random", 10000, "all", 224),
    ("resnet50@random", 50000, "all", 224),
]


def pool_of(n_images: int, unique: int, size: int, cache: str):
    """The offline default pool, its `unique` images repeated up to `n_images`."""
    import numpy as np

    from interpscore.stimuli.pools import ArrayPool, default_pool

    base = default_pool(min(n_images, unique), size, seed=0, cache_dir=os.path.join(cache, "pools"))
    take = np.arange(n_images) % len(base)
    return ArrayPool(f"default-x{n_images}", base.images[take], base.sources[take],
                     base.source_names)


def one(args):
    """Child process: raw pass, activation pass and scoring of one configuration."""
    import torch
    from torch.utils.data import DataLoader

    import interpscore
    from interpscore.stimuli.activations import _PoolItems

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pool = pool_of(args.pool, args.unique_images, args.image_size, args.cache)
    scorer = interpscore.load(args.checkpoint, cache_dir=args.cache)
    options = dict(image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
                   progress=False)
    start = time.perf_counter()
    layers = "auto" if args.layers == "auto" else args.layers.split(",")
    job = scorer.job(args.model, layers=layers, units=args.units, images=pool, **options)
    build = time.perf_counter() - start

    def raw_pass():
        loader = DataLoader(_PoolItems(pool, range(len(pool))), batch_size=args.batch_size,
                            num_workers=args.workers, collate_fn=list,
                            pin_memory=device == "cuda")
        with torch.no_grad(), torch.autocast(device, dtype=torch.float16,
                                             enabled=device == "cuda"):
            for batch in loader:
                job.model(torch.stack([image for _, image, _ in batch]).to(device))
        if device == "cuda":
            torch.cuda.synchronize()

    raw_pass()  # warm-up: kernels, allocator, page cache
    start = time.perf_counter()
    raw_pass()
    raw = time.perf_counter() - start
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    rankings = job.rankings()["rankings"]
    if device == "cuda":
        torch.cuda.synchronize()
    activations = time.perf_counter() - start
    start = time.perf_counter()
    frame = scorer.score_job(job, rankings)
    scoring = time.perf_counter() - start
    start = time.perf_counter()
    scorer.score_job(job, rankings)  # again, with every exemplar image's embedding cached
    scoring_cached = time.perf_counter() - start
    print(json.dumps({
        "units": len(job.units), "units_scored": int((frame["status"] == "ok").sum()),
        "not_scored": dict(Counter(status.split(":")[0] for status in frame["status"]
                                   if status != "ok")),  # why not (too sparse, constant)
        "build_seconds": build, "raw_pass_seconds": raw, "activation_pass_seconds": activations,
        "scoring_seconds": scoring, "scoring_cached_seconds": scoring_cached,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}))


def torchrun_scan(args, processes: int, models: list[str], cache: str) -> float:
    out = tempfile.mkdtemp(prefix="zoo-bench-")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(processes), "-m", "interpscore.cli", "zoo",
               "--checkpoint", args.checkpoint, "--models", *models, "--units", "20/layer",
               "--image-size", str(args.image_size_torchrun), "--pool-size", "3000",
               "--workers", str(args.workers), "--batch-size", str(args.batch_size),
               "--cache-dir", cache, "--out", os.path.join(out, "scan")]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True,
                   env=dict(os.environ, OMP_NUM_THREADS=str(max(1, os.cpu_count() // processes))))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="mis")
    parser.add_argument("--out")
    parser.add_argument("--gpu", action="store_true", help="the GPU configurations")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--pool", type=int)
    parser.add_argument("--units")
    parser.add_argument("--layers", default="auto", help="auto (the layers of interest) or L1,L2")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--unique-images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--cache")
    parser.add_argument("--torchrun", type=int, default=0,
                        help="also time a torchrun scan of 2 models with 1 and this many processes")
    parser.add_argument("--image-size-torchrun", type=int, default=64)
    args = parser.parse_args()
    if args.child:
        return one(args)
    cache = args.cache or tempfile.mkdtemp(prefix="interpscore-bench-")
    runs = []
    for model, pool, units, size in (GPU_CONFIGS if args.gpu else CPU_CONFIGS):
        command = [sys.executable, __file__, "--child", "--checkpoint", args.checkpoint,
                   "--model", model, "--pool", str(pool), "--units", units,
                   "--image-size", str(size), "--unique-images", str(args.unique_images),
                   "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                   "--cache", cache]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        scan = result["activation_pass_seconds"] + result["scoring_cached_seconds"]
        runs.append({"model": model, "pool_images": pool, "units_requested": units,
                     "image_size": size, **{k: round(v, 2) if isinstance(v, float) else v
                                            for k, v in result.items()},
                     "activation_pass_over_raw_pass": round(
                         result["activation_pass_seconds"] / result["raw_pass_seconds"], 2),
                     "units_per_second": round(result["units_scored"] / scan, 1),
                     "units_per_second_cold_cache": round(result["units_scored"] / (
                         result["activation_pass_seconds"] + result["scoring_seconds"]), 1)})
        print(json.dumps(runs[-1]), file=sys.stderr)
    scaling = None
    if args.torchrun:
        models = ["resnet18@random", "resnet34@random"]
        scaling = {"models": models, "units": "20/layer",
                   "seconds": {str(n): round(torchrun_scan(args, n, models, cache), 1)
                               for n in sorted({1, args.torchrun})}}
    emit({"benchmark": "zoo_scan", "checkpoint": args.checkpoint, "batch_size": args.batch_size,
          "workers": args.workers, "unique_images": args.unique_images, "runs": runs,
          "torchrun_scaling": scaling,
          "goal": "activation pass <= 1.3x one raw forward pass over the pool; on one H100, all "
                  "units of ResNet-50 over 50,000 images in <= 300 s"}, args.out)


if __name__ == "__main__":
    main()
