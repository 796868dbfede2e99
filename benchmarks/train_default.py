"""`python train.py` end to end: from nothing (simulation, preparation, embeddings, training,
evaluation) and again with everything cached. Uses fresh data/cache folders. Prints JSON with
the times, the held-out benchmark's headline, and the simulated release's calibration table
(tests/test_calibration.py, a slow test, builds the release itself and holds its table to the
ranges the simulator promises).

    python benchmarks/train_default.py [--out benchmarks/results/train_default.json]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import emit

ROOT = Path(__file__).resolve().parents[1]


def run(work: Path) -> tuple[float, dict, str]:
    """Seconds, metrics.json and what `python train.py` printed (its summary)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data.data_root",
                           str(work / "data"), "--data.cache_dir", str(work / "cache"),
                           "--checkpoints_root", str(work / "ckpt")], check=True, cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    newest = max((work / "ckpt").iterdir(), key=lambda p: p.stat().st_mtime)
    return seconds, json.loads((newest / "metrics.json").read_text()), done.stdout


def summary(printed: str) -> list[str]:
    """The summary `python train.py` prints: from its verdict line to what the head
    learned (the progress lines around it name files and runs)."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("verdict:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("learned:"))
    return lines[start:end + 1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--work", help="an empty folder to keep the data, cache and checkpoints "
                        "(default: a new temporary folder)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="interpscore-train-bench-"))
    if work.exists() and any(work.iterdir()):
        sys.exit(f"error: --work {work}: not empty; the fresh run must start from nothing")
    fresh, metrics, printed = run(work)
    cached, _, printed_again = run(work)
    (release,) = (work / "data").glob("simulated-*/release")
    calibration = pd.read_csv(release / "calibration.csv")
    headline = metrics["benchmark"]["headline"]
    result = {"benchmark": "train_default", "fresh_seconds": round(fresh, 1),
              "cached_seconds": round(cached, 1), "targets_seconds": {"fresh": 900, "cached": 180},
              "simulation_key": json.loads((release / "simulation.json").read_text())["key"],
              "headline": {"datasets": headline["datasets"], "ceiling": headline["ceiling"],
                           "predictors": headline["predictors"]},
              "in_distribution": {"grouped": metrics["grouped"], "ceiling": metrics["ceiling"]},
              "calibration": calibration.to_dict(orient="records"),
              # the summary as printed (the README shows it), and whether a rerun prints it again
              "printed": summary(printed),
              "rerun_prints_the_same": summary(printed) == summary(printed_again)}
    emit(result, args.out)


if __name__ == "__main__":
    main()
