"""How long a newcomer waits: a fresh clone of this repository, the README's install, then the
README's quick starts exactly as written (its first bash block under "## Quick starts", each
command line timed): a score with training-free MIS, a trained metric, an evaluation. Offline
after the install; nothing is shared with this checkout's data, caches or checkpoints.

    python benchmarks/newcomer.py [--out benchmarks/results/newcomer.json]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import emit  # noqa: E402

TARGET_SECONDS = 20 * 60  # the house issue: fresh clone to score, metric, evaluation


def first_block(readme: str, heading: str) -> list[str]:
    """The command lines of the first bash block under `heading` (comments dropped)."""
    section = readme.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def newcomer_commands(readme: str) -> list[str]:
    """The set-up's install (its first command, up to the main job) and the quick starts."""
    install = first_block(readme, "## Set up")[0].split("&& .venv/bin/python train.py")[0]
    return [install.strip()] + first_block(readme, "## Quick starts")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(ROOT), help="what to clone (its committed main)")
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "interpscore"
        subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
        commands = newcomer_commands((clone / "README.md").read_text())
        # One shell runs every step, so the README's variables ($CKPT) carry from line to line.
        timed = "\n".join(f"start=$(date +%s%N); {line}\n"
                          f"echo $(( $(date +%s%N) - start )) >> .step_seconds"
                          for line in commands)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
        started = time.time()
        subprocess.run(["bash", "-ec", timed], cwd=clone, env=env, check=True,
                       stdout=sys.stderr)
        total = time.time() - started
        seconds = [round(int(n) / 1e9, 1) for n in (clone / ".step_seconds").read_text().split()]
    steps = [{"command": c, "seconds": s} for c, s in zip(commands, seconds)]
    emit({"benchmark": "newcomer", "steps": steps, "total_seconds": round(total, 1),
          "target_seconds": TARGET_SECONDS, "cores": os.cpu_count()}, args.out)


if __name__ == "__main__":
    main()
