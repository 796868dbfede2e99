"""The zoo scan: a killed scan finishes, on rerun, with the same table as an uninterrupted one;
two processes under torchrun give the one-process table; a broken model is recorded and the
scan goes on; the report's page works in a real browser."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import ROOT
from interpscore.cli import main

MODELS = ["test_resnet@random", "test_efficientnet@random"]
SMALL = ["--units", "3/layer", "--image-size", "64", "--pool-size", "600", "--n-refs", "4",
         "--n-batches", "3", "--pool-shards", "4"]


@pytest.fixture(scope="module")
def zoo_args(debug_run):
    base, run, _, _ = debug_run
    return ["zoo", "--checkpoint", str(run / "best.ckpt"), "--cache-dir", str(base / "cache")] + SMALL


@pytest.fixture(scope="module")
def reference(zoo_args, tmp_path_factory):
    """An uninterrupted one-process scan of the two models and a broken one."""
    out = tmp_path_factory.mktemp("zoo") / "reference"
    weights = out.parent / "broken.pth"
    weights.write_text("not weights")
    assert main(zoo_args + ["--models", *MODELS, f"resnet18@{weights}", "--out", str(out)]) == 0
    return out, weights


def _table(out):
    return pd.read_parquet(out / "scores.parquet")


def test_units_of_every_layer_and_a_broken_model_recorded(reference):
    out, weights = reference
    table = _table(out)
    assert list(dict.fromkeys(table["spec"])) == [*MODELS, f"resnet18@{weights}"]
    broken = table[table["spec"] == f"resnet18@{weights}"]
    assert len(broken) == 1 and broken["status"].iloc[0].startswith("failed: ")
    ok = table[table["status"] == "ok"]
    assert ok["score"].between(0, 1).all() and (ok["score_low"] <= ok["score"]).all()
    per_layer = ok.groupby(["model", "layer"]).size()
    assert per_layer.max() <= 3 and (ok["layer_width"] >= 3).all()
    assert ok["layer_depth"].between(0, 1).all() and (ok["params"] > 0).all()
    summary = pd.read_csv(out / "summary_by_model.csv")
    assert set(summary["status"]) == {"ok", broken["status"].iloc[0]}
    assert {"report.md", "report.html", "per_model.png", "depth.png", "width.png"} <= \
        {p.name for p in out.iterdir()}
    assert not (out / "work").exists()


@pytest.mark.slow
def test_a_killed_scan_resumes_to_the_same_table(zoo_args, reference, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "interpscore.cli"] + zoo_args + [
        "--models", *MODELS, f"resnet18@{reference[1]}", "--out", str(out)]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not list(out.glob("work/*/shards/*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-model: some pool shards done, others not
    process.wait()
    assert not (out / "scores.parquet").exists(), "the scan finished before it was killed"
    assert main(zoo_args + ["--models", *MODELS, f"resnet18@{reference[1]}", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(_table(out), _table(reference[0]))


@pytest.mark.slow
def test_two_processes_under_torchrun_equal_one(zoo_args, reference, tmp_path):
    out = tmp_path / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "interpscore.cli"] + zoo_args + ["--models", *MODELS, f"resnet18@{reference[1]}",
                                                "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(_table(out), _table(reference[0]))


def test_an_out_folder_of_another_scan_is_refused(zoo_args, reference, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    assert main(zoo_args + ["--pool-shards", "2", "--models", *MODELS, "--out", str(out)]) == 2
    assert "holds a scan of another request" in capsys.readouterr().err


def test_report_page_in_a_real_browser(reference, browser_page):
    page, errors = browser_page
    page.goto((reference[0] / "report.html").as_uri())
    assert page.locator("img").count() >= 3
    widths = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth)")
    assert all(w and w > 100 for w in widths), widths  # every figure decodes
    assert page.locator("table tr").count() >= 4  # a header and the three models
    assert "not measurements" in page.inner_text("body")
    assert errors == []


def test_summary_pairs_pretrained_and_random_versions_of_one_architecture():
    from interpscore.zoo.report import model_summary, pairs_of

    rows = [dict(model=m, spec=s, status="ok", score=v, params=10)
            for m, s, scores in (("resnet18", "resnet18", [0.6, 0.8]),
                                 ("resnet18-random", "resnet18@random", [0.9, 0.7]),
                                 ("vit-random", "vit_tiny_patch16_224@random", [0.5]))
            for v in scores]
    rows.append(dict(model="broken", spec="resnet50@/x.pth", status="failed: OSError: x"))
    summary = model_summary(pd.DataFrame(rows), pd.DataFrame({"model": ["resnet18"], "top1": [69.8]}))
    assert summary.set_index("model").loc["resnet18-random", "mean_score"] == pytest.approx(0.8)
    assert summary.set_index("model").loc["broken", "status"] == "failed: OSError: x"
    assert summary.set_index("model")["top1"].dropna().to_dict() == {"resnet18": 69.8}
    pairs = pairs_of(summary)
    assert list(pairs.index) == ["resnet18"]
    assert pairs.loc["resnet18"].tolist() == pytest.approx([0.7, 0.8])
