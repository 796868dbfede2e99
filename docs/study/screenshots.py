"""The screenshots in docs/study.md: a trial with its feedback at 390, 1024 and 1280 px wide, in
headless chromium (Debian's; playwright drives it). The images are the tests' tiny store (one
colour a picture). Run from the repository root: `python docs/study/screenshots.py`."""

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from study_helpers import UNITS, make_store  # noqa: E402

from interpscore.study import StudyServer, build_study  # noqa: E402
from interpscore.study.build import INSTRUCTION_PAGES  # noqa: E402

SIZES = {"phone-390": (390, 844), "netbook-1024": (1024, 600), "desktop-1280": (1280, 800)}


def reach_feedback(page, url: str) -> None:
    """Consent, instructions, then one practice answer: the trial with its feedback."""
    page.goto(url + "?PROLIFIC_PID=shot&task=1")
    page.get_by_role("button", name="I agree").click()
    for _ in INSTRUCTION_PAGES:
        page.click("#jspsych-instructions-next")
    page.click('[data-button="2"]')
    page.locator("#imi-continue").wait_for()


def main(out=Path(__file__).parent):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = build_study(make_store(tmp / "store"), tmp / "study", units=UNITS[:3],
                            demo_trials=2, enable_buttons_after_ms=0)
        server = StudyServer(study, tmp / "results", port=0).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                            args=["--no-sandbox", "--disable-gpu"])
                for name, (width, height) in SIZES.items():
                    page = browser.new_page(viewport={"width": width, "height": height})
                    reach_feedback(page, server.url)
                    page.screenshot(path=str(out / f"trial-{name}.png"), full_page=True)
                    page.close()
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
