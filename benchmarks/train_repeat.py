"""Does `python train.py` print the README's results block in differently configured
environments? Trains the default metric once per environment of `repeatability.py` (other thread
counts, other CPU dispatch of oneDNN, ATen, OpenBLAS and numpy), each with a new embedding cache
and checkpoint folder, on an existing default release (its own repeatability is
`repeatability.py --full`'s), and compares each summary with `train_default.json`'s `printed`
(the README's block) line by line.

    python benchmarks/train_repeat.py [--data-root data] [--out benchmarks/results/train_repeat.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit
from repeatability import ENVIRONMENTS
from train_default import summary

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks/results/train_default.json"


def train(work: Path, data_root: str, extra: dict) -> tuple[list[str], float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data.data_root", data_root,
                           "--data.cache_dir", str(work / "cache"),
                           "--checkpoints_root", str(work / "ckpt")],
                          env={**os.environ, **extra}, cwd=ROOT, check=True,
                          capture_output=True, text=True)
    return summary(done.stdout), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="data", help="where the default release is")
    parser.add_argument("--environments", nargs="+", default=list(ENVIRONMENTS),
                        choices=list(ENVIRONMENTS))
    parser.add_argument("--out")
    args = parser.parse_args()
    recorded = json.loads(RECORDED.read_text())["printed"]
    result = {"benchmark": "train_repeat", "against": str(RECORDED.relative_to(ROOT)),
              "environments": {name: ENVIRONMENTS[name] for name in args.environments},
              "runs": {}}
    for name in args.environments:
        with tempfile.TemporaryDirectory() as work:
            printed, seconds = train(Path(work), args.data_root, ENVIRONMENTS[name])
        differ = [{"recorded": a, "printed": b} for a, b in zip(recorded, printed) if a != b]
        result["runs"][name] = {"identical": printed == recorded, "seconds": round(seconds, 1),
                                "lines_that_differ": differ}
        print(f"{name}: {seconds:.0f} s, identical: {printed == recorded}", file=sys.stderr)
    result["identical"] = all(run["identical"] for run in result["runs"].values())
    emit(result, args.out)


if __name__ == "__main__":
    main()
