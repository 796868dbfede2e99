"""docs/features.md's walk-through, run as written in a folder of its own (at smaller sizes: an SAE
of 64 latents on 300 pool images, the debug run's checkpoint as the metric to update), with a
scripted participant answering the study in Debian's chromium slowly enough for IMI's
exclusions; each step's output is checked (slow: 10-20 minutes on 2 CPU cores)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import ROOT
from test_readme import first_block

# The walk-through at test sizes: each replacement must apply (the doc and the test move
# together).
SMALLER = {"--latents 256": "--latents 64 --pool-size 300 --epochs 3",
           "--n-batches 2": "--n-batches 2 --pool-size 300"}


def steps() -> tuple[list[str], str, str, list[str]]:
    """The block's lines: (before the server, the server, the browser, after the browser)."""
    lines = first_block((ROOT / "docs" / "features.md").read_text(), "# Features:")
    for old, new in SMALLER.items():
        assert sum(old in line for line in lines) == 1, old
        lines = [line.replace(old, new) for line in lines]
    serve = next(i for i, line in enumerate(lines) if " study serve " in line)
    assert lines[serve].endswith(" &") and lines[serve + 1].startswith("chromium ")
    assert lines[serve + 2].startswith("kill %1")
    return lines[:serve], lines[serve][:-2], lines[serve + 1], lines[serve + 3:]


def test_the_walk_through_is_the_six_steps():
    before, serve, browser, after = steps()
    commands = [line.split()[:3] for line in before + [serve] + after
                if not line.startswith(("CKPT=", "chromium"))]
    assert [c[1] if c[0].endswith("python") else " ".join(c[1:3]) for c in commands] == [
        "sae fit", "score --checkpoint", "study build", "study serve", "prepare --responses",
        "train.py", "evaluate --checkpoint"]
    assert browser.split()[1].strip('"').startswith("http://127.0.0.1:8000/?PROLIFIC_PID=")


def _bash(lines, cwd, env):
    done = subprocess.run(["bash", "-ec", "\n".join(lines)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_features_walk_through_runs_offline_as_written(debug_run, browser_page, tmp_path):
    from study_helpers import answer_as_a_person

    _base, run, _metrics, _args = debug_run
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # this environment stands in for the install
    shutil.copy(ROOT / "train.py", tmp_path)
    shutil.copytree(run, tmp_path / "checkpoints" / run.name)  # step 0: the metric to update
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
    before, serve, browser, after = steps()

    # 1-2: the SAE, 50 of its latents scored, their exemplars
    out = _bash([line for line in before if not line.startswith("chromium")], tmp_path, env)
    sae = tmp_path / "runs" / "lite0.sae.pt"
    record = torch.load(sae, weights_only=True)
    assert (record["model"], record["layer"], record["latents"]) == (
        "efficientnet_lite0", "blocks.4.0", 64)
    assert 0 < record["r2"] <= 1 and f"reconstruction R^2 {record['r2']:.3f}" in out
    sha = hashlib.sha256(sae.read_bytes()).hexdigest()
    scores = pd.read_parquet(tmp_path / "runs" / "sae_scores" / "scores.parquet")
    assert len(scores) == 50 and set(scores["readout"]) == {"sae"}
    assert set(scores["readout_sha256"]) == {sha} and scores["channel"].between(0, 63).all()
    ok = scores[scores["status"] == "ok"]
    assert len(ok) >= 20
    layer = f"blocks.4.0+sae-{sha[:8]}"
    store = tmp_path / "runs" / "sae_scores" / "stimuli" / "efficientnet_lite0" / layer
    assert sorted(int(p.name.split("_")[1]) for p in store.iterdir()) == sorted(ok["channel"])
    for channel in ok["channel"]:
        for batch in (0, 1):
            assert (store / f"channel_{channel}" / "natural_images" / f"batch_{batch}" /
                    "max_9.png").is_file()
    page_text = (tmp_path / "runs" / "sae_scores" / "exemplars.html").read_text()
    best = ok.sort_values("score", ascending=False)["channel"].tolist()
    shown = [int(c) for c in re.findall(rf"<h3>efficientnet_lite0/{re.escape(layer)}/(\d+):",
                                        page_text)]
    assert sorted(shown) == sorted(best) and shown[0] == best[0]
    study = json.loads((tmp_path / "runs" / "sae_study" / "study.json").read_text())
    widest = (ok["score_high"] - ok["score_low"]).sort_values(ascending=False)
    assert len(study["units"]) == 20 and len(study["tasks"]) == 1
    assert {int(u.split("/")[-1]) for u in study["units"]} <= set(ok["channel"])
    assert (ok.set_index("channel").loc[[int(u.split("/")[-1]) for u in study["units"]]]
            .eval("score_high - score_low").min() >= widest.iloc[19])  # the 20 widest

    # 3: the study served and answered in chromium by a scripted person
    server = subprocess.Popen(["bash", "-c", f"exec {serve} --port 0"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"at (http://\S+) ", server.stdout.readline()).group(1)
        participant = re.search(r"PROLIFIC_PID=(\w+)", browser).group(1)
        page, errors = browser_page
        answers = answer_as_a_person(page, url, study, participant)
        assert errors == [] and len(answers) == 45
    finally:
        server.terminate()
        server.wait(timeout=30)
    (session,) = (tmp_path / "runs" / "sae_answers").iterdir()
    assert session.name.startswith(f"{participant}_task_1_")

    # 4-6: prepare, update the metric, evaluate it
    assignments = [line for line in before if line.startswith("CKPT=")]
    out = _bash(assignments + after, tmp_path, env)
    assert re.search(r"\| valid \| 1 \| 40 \|", out)  # one session, its 40 main trials
    assert "source: human; 40 valid trials, 20 units -> runs/sae_prepared" in out
    (updated,) = tmp_path.glob("checkpoints/sae_updated-*/best.ckpt")
    assert f"checkpoint: {updated.relative_to(tmp_path)}" in out
    assert f"from checkpoints/{run.name}/best.ckpt: " in out
    table = out[out.index("predictor       spearman"):]
    # the trained row (not the "trained - MIS" line): a number, or "-" where none is defined
    trained = re.search(r"^trained +(-|-?\d\.\d+) ", table, re.M)
    assert trained and re.search(r"^mis +", table, re.M), table
    if trained.group(1) == "-":  # 2 answers a unit: the 3 test units may measure the same
        assert "note: all 3 test units have the same measured HIS" in table, table
    else:
        assert -1 <= float(trained.group(1)) <= 1
    assert "report -> runs/sae_report/report.md" in out
    assert (tmp_path / "runs" / "sae_report" / "report.md").is_file()
