import os
import sys
from pathlib import Path

import pytest

# Tests never touch the network: hub clients fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, str(Path(__file__).parent))

# A subset of the real IMI stimuli, shipped with the tests (see fixtures/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "imi_task_tree"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def imi_fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory):
    """One tiny training run (configs/debug.yaml) shared by the tests that need a checkpoint:
    (base folder, run folder, metrics, the arguments used)."""
    from interpscore.train.cli import main

    base = tmp_path_factory.mktemp("train")
    args = ["--config", "debug", "--data.data_root", str(base / "data"),
            "--data.cache_dir", str(base / "cache"), "--checkpoints_root", str(base / "ckpt")]
    metrics = main(args)
    (run,) = (base / "ckpt").iterdir()
    return base, run, metrics, args
