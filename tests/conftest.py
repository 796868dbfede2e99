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
