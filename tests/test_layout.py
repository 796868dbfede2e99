"""The package's walls and doors: import contracts that fail on a violation, package data found
outside the checkout, and a non-editable install that runs the pipeline from another folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_contracts_hold_on_the_package():
    done = _lint(ROOT / "src", ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module,line,contract", [
    ("metric/heads/pooled.py", "import lightning", "The scoring path never imports Lightning"),
    ("data/dataset.py", "import torch", "Data preparation imports no network code"),
    ("leaderboard/scoring.py", "from ..metric import backbones", "The leaderboard never trains"),
    ("evaluation/agreement.py", "import torch", "Statistics and reports import neither torch"),
    ("stimuli/pools.py", "from ..simulate import observers", "Stages import only the stages"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path, module, line, contract):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "interpscore", src / "interpscore",
                    ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "interpscore" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    done = _lint(src, tmp_path)
    assert done.returncode != 0
    broken = [l for l in done.stdout.splitlines() if l.endswith("BROKEN")]
    assert len(broken) >= 1 and any(l.startswith(contract) for l in broken), done.stdout[-3000:]


def test_the_shipped_imi_depth_table_is_what_the_architectures_give():
    from interpscore.resources import package_file
    from interpscore.stimuli.networks import imi_layer_depth_table

    shipped = json.loads(package_file("data", "imi_layer_depths.json").read_text())
    assert shipped == imi_layer_depth_table()
    assert shipped["resnet50"]["layer1.0.conv1"] < shipped["resnet50"]["layer4.2.conv3"]


def test_packaged_configs_by_name():
    from interpscore.errors import InputError
    from interpscore.resources import config_file, list_configs

    assert {"default", "debug", "heads/setreg", "backbones/efficientnet_lite0"} <= set(list_configs())
    assert config_file("heads/setreg").resolve() == config_file("configs/heads/setreg.yaml").resolve()
    with pytest.raises(InputError, match="packaged: .*heads/twoafc"):
        config_file("heads/nope")


@pytest.mark.slow
def test_a_non_editable_install_runs_from_another_folder(debug_run, tmp_path):
    """Build a wheel, install it (without deps: this environment has them) into a folder of
    its own, and run train, evaluate, score and leaderboard validate from an unrelated folder."""
    base, _, _, _ = debug_run
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("interpscore-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(site))

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "interpscore.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    where = subprocess.run([sys.executable, "-c", "import interpscore; print(interpscore.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True).stdout
    assert where.startswith(str(site))
    cache = ["--data.data_root", str(base / "data"), "--data.cache_dir", str(base / "cache")]
    run("train", "--config", "debug", *cache, "--trainer.max_epochs", "1")
    (ckpt,) = (work / "checkpoints").glob("debug-*/best.ckpt")
    run("evaluate", "--checkpoint", str(ckpt), "--cache-dir", str(base / "cache"), "--n-boot",
        "100", "--out", "report")
    assert (work / "report" / "report.html").is_file()
    run("score", "--checkpoint", str(ckpt), "--model", "test_resnet@random", "--units", "2",
        "--pool-size", "300", "--image-size", "64", "--n-refs", "4", "--n-batches", "3",
        "--cache-dir", str(base / "cache"), "--out", "scores")
    assert (work / "scores" / "scores.parquet").is_file()
    assert "all entries valid" in run("leaderboard", "validate", "--root", str(ROOT / "leaderboard"))
