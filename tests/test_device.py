"""benchmarks/device.py, the one command for a lent GPU, runs end to end on the CPU at tiny
settings (`--smoke`) and records every check with its settings and a status."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

CHECKS = {"pytest_gpu", "zoo_activation_pass", "score_throughput", "visualize_imi",
          "train_default"}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_smoke_run_records_every_check_with_settings_and_status(tmp_path):
    out = tmp_path / "device.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "benchmarks/device.py", "--smoke", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=380)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["checks"]) == CHECKS
    assert result["device"]["device"] == "cpu" and result["versions"]["torch"]
    assert "stand in for" in result["images"]
    for name, check in result["checks"].items():
        assert check["settings"], name
        assert check["status"] in {"ok", "failed", "timeout", "skipped"}, name
    checks = result["checks"]
    # On a CPU the GPU tests are skipped, not failed; the tiny runs all finish.
    assert checks["pytest_gpu"]["status"] == "ok"
    assert checks["pytest_gpu"]["figures"]["failures"] == 0
    zoo = checks["zoo_activation_pass"]
    assert zoo["status"] == "ok", zoo.get("error")
    assert zoo["settings"]["model"] == "resnet18@random" and zoo["figures"]["units"] == 2
    assert zoo["figures"]["activation_pass_over_raw_pass"] > 0
    channels = checks["score_throughput"]["figures"]["channels"]
    assert channels["units_scored"] == 2 and channels["channels_per_second"] > 0
    assert "SAE latents" in checks["score_throughput"]["note"]
    vis = checks["visualize_imi"]
    assert vis["status"] == "ok", vis.get("error")
    assert vis["figures"]["units"] == 2 and vis["figures"]["options"]["size"] == 32
    assert 0 <= vis["figures"]["max_beats_natural"] <= 1
    # The debug run fits the smoke budget on idle cores; on busy ones it may meet the budget,
    # which the script records and survives (the point of its global budget).
    train = checks["train_default"]
    assert train["settings"]["args"] == ["--config", "debug"]
    assert train["status"] in {"ok", "timeout"}, train
    if train["status"] == "ok":
        assert "best.ckpt" in train["figures"]["summary_tail"]
    assert result["seconds"] < 180
