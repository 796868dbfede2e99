"""Each head trained and tested on one observer family at a time (in-family), beside MIS,
stage-weighted MIS and model identity: how much of a family's within-group ceiling a head
reaches when its training answers come from that family alone. Needs the default simulated
release built (`python train.py` once); each run reuses its cached embeddings.

    python benchmarks/heads_by_family.py [--heads pooled,twoafc] [--out benchmarks/results/heads_by_family.json]

Simulated data: the numbers say how a head does on the simulator's families, not on people.
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
sys.path.insert(0, str(ROOT / "src"))


def run(head: str, dataset: Path, work: Path, cache: str) -> dict:
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", f"heads/{head}",
                    "--data.data_dir", str(dataset), "--data.cache_dir", cache,
                    "--checkpoints_root", str(work), "--run_name", head],
                   check=True, cwd=ROOT, capture_output=True)
    newest = max(work.iterdir(), key=lambda p: p.stat().st_mtime)
    return json.loads((newest / "metrics.json").read_text())


def main():
    from interpscore.resources import DEFAULT_CACHE, DEFAULT_DATA_ROOT
    from interpscore.simulate.config import SimulationConfig
    from interpscore.simulate.release import simulated_dataset_dir

    parser = argparse.ArgumentParser()
    parser.add_argument("--heads", default="pooled", help="comma-separated head configs")
    parser.add_argument("--families", help="comma-separated (default: every family)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE)
    parser.add_argument("--out")
    args = parser.parse_args()
    config = SimulationConfig()
    families = (args.families.split(",") if args.families
                else config.training_families + config.heldout_families)
    work = Path(tempfile.mkdtemp(prefix="interpscore-heads-by-family-"))
    rows = []
    for family in families:
        dataset = simulated_dataset_dir(None, args.data_root, f"family-{family}")
        if not (dataset / "dataset_dict.json").is_file():
            sys.exit(f"error: {dataset}: not built; run `python train.py` once first")
        for head in args.heads.split(","):
            start = time.perf_counter()
            metrics = run(head, dataset, work, args.cache_dir)
            grouped = metrics["grouped"]
            rows.append({"family": family, "head": head,
                         "training": family in config.training_families,
                         "seconds": round(time.perf_counter() - start, 1),
                         "ceiling_within": grouped["ceiling"]["within"],
                         "n_units": grouped["n_units"],
                         "predictors": grouped["predictors"],
                         "learned": metrics.get("learned")})
    emit({"benchmark": "heads_by_family", "simulation_key": config.key(),
          "note": "simulated data: agreement with the simulator's observer families, not people",
          "rows": rows}, args.out)


if __name__ == "__main__":
    main()
