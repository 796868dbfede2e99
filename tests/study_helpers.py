"""A tiny stimulus store and study for the browser-study tests (test_study*.py)."""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path
from urllib.parse import unquote

from PIL import Image

from interpscore.data.exclusion import ExclusionCriteria
from interpscore.data.layouts import QUERY_INDEX, batch_dir, image_name

# model/layer/channel: the first three are studied, the last one is left for the practice block
UNITS = ["toy/layer1/0", "toy/layer1/1", "toy/block.2/3", "toy/block.2/7"]
BATCHES = 2
# The checks of a scripted participant who takes seconds, not the paper's minutes, and answers
# a handful of trials (the rows it presses are checked trial by trial instead).
QUICK = ExclusionCriteria(min_total_time_s=0, min_instruction_time_s=0.3, min_presses_per_row=0)


def make_store(root: Path, units=UNITS, batches: int = BATCHES) -> Path:
    """`<model>/<layer>/channel_<c>/natural_images/batch_<b>/{min,max}_<i>.png`, each image a
    small square of its own colour."""
    for unit in units:
        model, layer, channel = unit.split("/")
        for b in range(batches):
            folder = root / batch_dir(model, layer, channel, b)
            folder.mkdir(parents=True)
            for side in ("min", "max"):
                for i in range(QUERY_INDEX + 1):
                    name = image_name(side, i)
                    colour = zlib.crc32(f"{folder}/{name}".encode()).to_bytes(4, "big")[:3]
                    Image.new("RGB", (16, 16), tuple(colour)).save(folder / name)
    return root


def fnv1a(text: str) -> int:
    """The page's hash of a participant id (which task a returning id gets), written again."""
    h = 0x811C9DC5
    for c in text:
        h = ((h ^ ord(c)) * 0x01000193) & 0xFFFFFFFF
    return h


def fake_session(study: dict, task: int = 1, participant: str = "p1", session_id: str = "ab" * 16,
                 simulated: bool = False) -> dict:
    """A session in the shape the page sends, answering every trial of a task (buttons 0, 2, 4,
    0, ...; every other trial with the queries switched), after 20 s of instructions."""
    trials = [{"trial_type": "html-button-response", "trial_index": 0, "time_elapsed": 20000,
               "rt": 20000, "response": 0, "phase": "instructions"}]
    for i, shown in enumerate(study["tasks"][task - 1]["trials"], start=1):
        button, switched = (2 * i - 2) % 6, i % 2 == 0
        choice = "a" if (button < 3) != switched else "b"  # the upper query is min unless switched
        trials.append({"trial_type": "imi-2afc", "trial_index": i, "phase": "main",
                       "time_elapsed": 20000 + 3000 * i, "rt": 2500, "button_pressed": button,
                       "switched_queries": switched, "confidence": button % 3 + 1,
                       "choice": choice, "correct": choice == "b", "is_demo": False,
                       **{k: shown[k] for k in ("min_query", "max_query", "min_references",
                                                "max_references", "catch_trial", "model",
                                                "layer", "channel", "batch", "mode",
                                                "query_path")}})
    return {"format": "interpscore-session/1", "study_id": study["study_id"],
            "session_id": session_id, "participant_id": participant, "id_source": "PROLIFIC_PID",
            "task_id": f"task_{task}", "simulated": simulated, "completed": True,
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:05:00Z",
            "trials": trials}


def answer_trial(page, study_trials, label, correct, confidence):
    """Answer the trial showing LABEL ('practice 1 of 2', '3 of 4'): the max query (correct) or
    the min query, at a confidence; return what was pressed and the trial shown."""
    page.locator(".imi-progress", has_text=f"({label})").wait_for()
    upper = unquote(page.get_attribute("#imi-query-upper", "src"))
    trial = next(t for t in study_trials if upper in (t["min_query"], t["max_query"]))
    upper_is_max = upper == trial["max_query"]
    row = 0 if (correct == upper_is_max) else 3  # buttons 0-2 answer the upper query
    button = row + confidence - 1
    page.click(f'[data-button="{button}"]')
    page.click("#imi-continue")
    return dict(button=button, choice="b" if correct else "a", trial=trial)


def answer_as_a_person(page, url: str, study: dict, participant: str, task: int = 1,
                       p_correct: float = 0.8, seconds: float = 140, seed: int = 0) -> list[dict]:
    """A whole task answered in the page as a careful person would, slowly enough to pass IMI's
    exclusions with their defaults: 16 s on the instructions, the practice answered right,
    catch trials right, main trials right with probability `p_correct`, the session lasting
    `seconds` (> 135) in all. Returns the main answers (as `answer_trial`)."""
    rng = random.Random(seed)
    start = time.monotonic()
    page.goto(f"{url}?PROLIFIC_PID={participant}&task={task}")
    page.get_by_role("button", name="I agree").click()
    time.sleep(16)
    from interpscore.study.build import INSTRUCTION_PAGES

    for _ in INSTRUCTION_PAGES:
        page.click("#jspsych-instructions-next")
    demo = study["demo"]
    for i in range(len(demo)):
        answer_trial(page, demo, f"practice {i + 1} of {len(demo)}", True, 3)
    page.get_by_role("button", name="Start").click()
    trials = study["tasks"][task - 1]["trials"]
    pause = max(0.0, (seconds - (time.monotonic() - start)) / len(trials))
    given = []
    for i in range(len(trials)):
        time.sleep(pause)
        correct = rng.random() < p_correct or trials[i]["catch_trial"]
        given.append(answer_trial(page, trials, f"{i + 1} of {len(trials)}", correct,
                                  rng.choice([1, 2, 3])))
    page.wait_for_selector('body[data-study-state="sent"]')
    return given
