"""Scoring speed and memory: units scored per second and peak memory for growing pools and unit
counts, and all units of a layer in one pass vs one unit at a time. Each configuration runs in a
fresh process (peak RSS is per process). Prints JSON.

    python benchmarks/score_scaling.py [--checkpoint CKPT] [--out benchmarks/results/score_scaling.json]
"""

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from common import emit


def one(args):
    """Child process: score once, report seconds and peak RSS."""
    import interpscore

    scorer = interpscore.load(args.checkpoint, cache_dir=args.cache)
    units = [f"layer3.0.conv1:{c}" for c in range(args.units)]
    start = time.perf_counter()
    if args.one_by_one:
        for unit in units:
            scorer.score_units(args.model, layers=["layer3.0.conv1"], units=[unit],
                               pool_size=args.pool, image_size=64, n_refs=9, n_batches=5,
                               progress=False)
    else:
        scorer.score_units(args.model, layers=["layer3.0.conv1"], units=units,
                           pool_size=args.pool, image_size=64, n_refs=9, n_batches=5,
                           progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb":
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint")
    parser.add_argument("--out")
    parser.add_argument("--model", default="resnet18@random")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--pool", type=int)
    parser.add_argument("--units", type=int)
    parser.add_argument("--one-by-one", action="store_true")
    parser.add_argument("--cache")
    args = parser.parse_args()
    if args.child:
        return one(args)
    if args.checkpoint is None:
        found = sorted(glob.glob("checkpoints/*/best.ckpt"), key=os.path.getmtime)
        if not found:
            sys.exit("no checkpoint: run `python train.py` first or pass --checkpoint")
        args.checkpoint = found[-1]
    cache = tempfile.mkdtemp(prefix="interpscore-bench-")
    runs = []
    configs = [(pool, units, False) for pool in (1000, 2000, 4000) for units in (4, 32)]
    configs += [(2000, 8, True), (2000, 8, False)]
    for pool, units, one_by_one in configs:
        command = [sys.executable, __file__, "--child", "--checkpoint", args.checkpoint,
                   "--model", args.model, "--pool", str(pool), "--units", str(units),
                   "--cache", cache] + (["--one-by-one"] if one_by_one else [])
        result = json.loads(subprocess.run(command, capture_output=True, text=True,
                                           check=True).stdout.strip().splitlines()[-1])
        runs.append({"pool_images": pool, "units": units, "one_by_one": one_by_one,
                     "seconds": round(result["seconds"], 2),
                     "units_per_second": round(units / result["seconds"], 3),
                     "peak_rss_mb": round(result["peak_rss_mb"], 1)})
        print(json.dumps(runs[-1]), file=sys.stderr)
    emit({"benchmark": "score_scaling", "model": args.model, "checkpoint": args.checkpoint,
          "image_size": 64, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
