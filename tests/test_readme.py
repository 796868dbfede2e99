"""The README's quick starts, run as written in a folder of their own: a score with MIS, a
metric trained on the quick config, its evaluation (minutes: slow)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT


def first_block(readme: str, heading: str) -> list[str]:
    """The command lines of the first bash block under `heading` (comments dropped)."""
    section = readme.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_quick_start_block_is_the_three_steps():
    commands = first_block((ROOT / "README.md").read_text(), "## Quick starts")
    assert [c.split()[:2] for c in commands if not c.startswith("CKPT=")] == [
        [".venv/bin/interpscore", "score"], [".venv/bin/python", "train.py"],
        [".venv/bin/interpscore", "evaluate"]]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_readme_quick_starts_run_offline_as_written(tmp_path):
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # this environment stands in for the install
    shutil.copy(ROOT / "train.py", tmp_path)
    script = "\n".join(first_block((ROOT / "README.md").read_text(), "## Quick starts"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
    done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=2300)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = pd.read_parquet(tmp_path / "runs/scores_mis/scores.parquet")
    scored = scores[scores["status"] == "ok"]  # a dead unit says why it has no score
    assert len(scores) == 20 and len(scored) >= 10 and scored["score"].between(0, 1).all()
    assert scores.loc[scores["status"] != "ok", "score"].isna().all()
    assert len(list(tmp_path.glob("checkpoints/quick-*/best.ckpt"))) == 1
    # The evaluation of the checkpoint repeats the headline that training printed at its end.
    (trained,) = [line for line in done.stdout.splitlines() if line.startswith("trained ")][:1]
    within = trained.split()[1]
    report = (tmp_path / "runs/report/report.md").read_text()
    assert f"| trained | {within} [" in report and "| mis | " in report
