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


@pytest.fixture
def browser_page():
    """A page of Debian's chromium (headless, offline) and the list of its console errors; CI
    installs chromium (see .ci/run), elsewhere the test is skipped without it."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
        browser.close()


def pytest_collection_modifyitems(config, items):
    """GPU tests run where there is a CUDA device and are skipped, with the reason, elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none here (the device tool lends one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
