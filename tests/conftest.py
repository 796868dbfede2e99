import os
import sys
from pathlib import Path

import pytest

# Tests never touch the network: hub clients fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "imi_task_tree"


@pytest.fixture(scope="session")
def imi_fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"real IMI fixtures not found at {FIXTURES} (../shared beside the checkout)")
    return FIXTURES


@pytest.fixture(scope="session")
def debug_run(tmp_path_factory):
    """One tiny training run (configs/debug.yaml) shared by the tests that need a checkpoint:
    (base folder, run folder, metrics, the arguments used)."""
    from interpscore.train import CONFIG_DIR, main

    base = tmp_path_factory.mktemp("train")
    args = ["--config", str(CONFIG_DIR / "debug.yaml"), "--data.data_root", str(base / "data"),
            "--data.cache_dir", str(base / "cache"), "--checkpoints_root", str(base / "ckpt")]
    metrics = main(args)
    (run,) = (base / "ckpt").iterdir()
    return base, run, metrics, args
