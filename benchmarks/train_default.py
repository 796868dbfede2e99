"""`python train.py` end to end: from nothing (simulation, preparation, embeddings, training,
evaluation) and again with everything cached. Uses fresh data/cache folders. Prints JSON.

    python benchmarks/train_default.py [--out benchmarks/results/train_default.json]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

ROOT = Path(__file__).resolve().parents[1]


def run(work: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--data.data_root", str(work / "data"),
                    "--data.cache_dir", str(work / "cache"), "--checkpoints_root",
                    str(work / "ckpt")], check=True, cwd=ROOT, capture_output=True)
    seconds = time.perf_counter() - start
    newest = max((work / "ckpt").iterdir(), key=lambda p: p.stat().st_mtime)
    return seconds, json.loads((newest / "metrics.json").read_text())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="interpscore-train-bench-"))
    fresh, metrics = run(work)
    cached, _ = run(work)
    result = {"benchmark": "train_default", "fresh_seconds": round(fresh, 1),
              "cached_seconds": round(cached, 1), "targets_seconds": {"fresh": 900, "cached": 180},
              "test_spearman": metrics["test"]["spearman"],
              "mis_spearman": metrics["baselines"]["mis"]["spearman"],
              "fraction_of_ceiling": metrics["test"]["fraction_of_ceiling"],
              "ceiling": metrics["ceiling"]}
    emit(result, args.out)


if __name__ == "__main__":
    main()
