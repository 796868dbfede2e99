"""Build a browser study of chosen units: a folder that runs the IMI 2-AFC task with jsPsych 8
from any static host, offline (every script is vendored, nothing is fetched from elsewhere):

    OUT/index.html, experiment.js, plugin-imi-2afc.js, study.css, vendor/   (the page)
    OUT/study.json   (settings, texts, the practice trials, and the tasks: fixed trial lists)
    OUT/images/<model>/<layer>/channel_<c>/natural_images/batch_<b>/{min,max}_<i>.png

Images keep the stimulus store's layout (and are hard-linked where possible), so the paths the
page records resolve against OUT, or the store itself, through `data.layouts`. Units and tasks
are planned by `stimuli.export.plan_experiment`, as for the exported IMI experiment layout.
Practice trials come from units of the store outside the study where there are enough, and
show the most extreme reference as the query (as catch trials do): they teach the buttons, and
whoever understood the task gets them right.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_folder, check_output_folder
from ..correlation import MIN_GROUP
from ..data.layouts import QUERY_INDEX, image_name, parse_batch_dir
from ..errors import InputError
from ..options import NON_NEGATIVE_INT, POSITIVE_INT, option
from ..protocol import IMI
from ..resources import package_file
from ..data.dataset import SplitOptions
from ..data.split_size import test_units, too_few_test_units
from ..stimuli.export import PlannedTrial, choose_units, plan_experiment
from ..stimuli.store import link_or_copy

log = logging.getLogger(__name__)  # the size warnings; the CLI shows them

STUDY_FORMAT = "interpscore-study/1"
PAGE_FILES = ("index.html", "experiment.js", "plugin-imi-2afc.js", "study.css")
IMAGES = "images"  # the folder of OUT that holds the images
LOCAL_SAVE = ("never", "on_failure", "always")

CONSENT_HTML = (
    "<h2>Welcome</h2><p>In this study you look at groups of images and say which of two images "
    "belongs with a group. It takes about 15 minutes.</p><p>We record your answers, how long "
    "they take, and the participant id in your link. Nothing else about you is recorded. You "
    "may stop at any time by closing this page.</p><p>Do you agree to take part?</p>")
INSTRUCTION_PAGES = [
    "<p>On the left and on the right you see two groups of example images: the <b>left "
    "examples</b> and the <b>right examples</b>.</p>",
    "<p>In the centre you see two more images. One of them belongs to the left examples, the "
    "other to the right examples.</p><p>Your question is always: <b>which image in the centre "
    "matches the right examples better?</b></p>",
    "<p>Below the upper centre image is a row of buttons 1 2 3; above the lower centre image is "
    "another. If the <b>upper</b> image matches the right examples better, press a button of "
    "the <b>upper</b> row; if the <b>lower</b> one does, press one of the <b>lower</b> row.</p>",
    "<p>The number says how sure you are: 1 = unsure, 3 = sure. If you are not sure, go with "
    "your best guess.</p><p>The first image of each group (top left) is the most typical one; "
    "when in doubt, look at it most.</p>",
    "<p>After each answer you see whether it was right. Every trial is new: what was right in "
    "one trial says nothing about the next.</p><p>A few practice trials come first; they are "
    "repeated until every answer is right.</p>",
]


def _check_settings(demo_trials, max_demo_attempts, enable_buttons_after_ms, post_url,
                    local_save, completion_url) -> None:
    """The page's settings (`plan_experiment` checks the plan's)."""
    for flag, value, least in (("--demo-trials", demo_trials, 0),
                               ("--max-demo-attempts", max_demo_attempts, 1),
                               ("--enable-buttons-after", enable_buttons_after_ms, 0)):
        if not isinstance(value, int) or value < least:
            raise InputError(f"{flag} {value}: must be a whole number, at least {least}")
    if local_save not in LOCAL_SAVE:
        raise InputError(f"--local-save {local_save}: unknown; valid: {', '.join(LOCAL_SAVE)}")
    if not post_url and local_save != "always":
        raise InputError("--post-url: none given, so the answers would be sent nowhere; give a "
                         "URL, or --local-save always (participants then send you the file)")
    for flag, url in (("--post-url", post_url), ("--completion-url", completion_url)):
        if url and any(c in url for c in "\"'<> "):
            raise InputError(f"{flag} {url}: quotes, spaces and angle brackets are not allowed "
                             "in it; percent-encode them")
    if completion_url and not completion_url.startswith(("https://", "http://")):
        raise InputError(f"--completion-url {completion_url}: must start with https:// or "
                         "http:// (the page links to it at the end)")


def _batch_images(folder: Path, catch: bool) -> dict[str, object]:
    """The images of one trial from a batch folder of the store: the most extreme reference
    (`_0`) first in each grid, as in IMI; a catch trial's queries are those references."""
    refs = {side: [folder / image_name(side, i) for i in range(QUERY_INDEX)
                   if (folder / image_name(side, i)).is_file()] for side in ("min", "max")}
    if not refs["min"] or len(refs["min"]) != len(refs["max"]) or \
            not (folder / image_name("min", QUERY_INDEX)).is_file():
        raise InputError(f"--stimuli: {folder} is incomplete: it needs min_9.png, max_9.png and "
                         "as many min_<i>.png as max_<i>.png references (i = 0..8)")
    queries = {side: folder / image_name(side, 0 if catch else QUERY_INDEX)
               for side in ("min", "max")}
    return {"min_query": queries["min"], "max_query": queries["max"],
            "min_references": refs["min"], "max_references": refs["max"]}


def _trial_entry(planned: PlannedTrial, stimuli: Path, rng: np.random.Generator,
                 images: dict[str, Path], mode: str) -> dict:
    """One trial of study.json; IMAGES collects the files it shows (study path -> store file)."""
    found = _batch_images(planned.batch, planned.catch or mode == "demo")

    def shown(path: Path) -> str:
        rel = f"{IMAGES}/{path.relative_to(stimuli).as_posix()}"
        images[rel] = path
        return rel

    entry = {}
    for key, value in found.items():
        if isinstance(value, list):  # keep the most extreme first, shuffle the rest
            value = value[:1] + [value[i] for i in 1 + rng.permutation(len(value) - 1)]
            entry[key] = [shown(p) for p in value]
        else:
            entry[key] = shown(value)
    batch_dir = planned.batch.relative_to(stimuli).as_posix()
    parts = parse_batch_dir(batch_dir)
    return {**entry, "catch_trial": planned.catch, "mode": mode, "model": parts["model"],
            "layer": parts["layer"], "channel": parts["channel"], "batch": parts["batch"],
            "query_path": batch_dir}


def _practice(available: dict[str, list[Path]], studied: list[str], n: int,
              rng: np.random.Generator) -> list[PlannedTrial]:
    """N practice trials, from units outside the study where the store has enough."""
    outside = [(u, b) for u in sorted(available) if u not in studied for b in available[u]]
    inside = [(u, b) for u in studied for b in available[u]]
    pool = outside if len(outside) >= n else outside + inside
    if len(pool) < n:
        raise InputError(f"--demo-trials {n}: the stimulus store has only {len(pool)} batches to "
                         "practise on; ask for fewer")
    return [PlannedTrial(*pool[i]) for i in sorted(rng.choice(len(pool), n, replace=False))]


def size_warnings(plan, scores, units, select, n: int, seed: int) -> list[str]:
    """What a new user would want to know before the study is built: fewer units than `-n`
    asked for, and a study too small for its answers to evaluate the updated metric (with the
    `-n` that is large enough, found by the same choice rule)."""
    found = []
    chosen, candidates = plan.units, len(units or plan.available)
    if select is not None and n > len(chosen):
        found.append(f"-n {n}: there are only {len(chosen)} candidate units (the store's, or "
                     f"--units), so the study asks about all {len(chosen)}; `score --units` "
                     "with more units gives more candidates")
    problem = too_few_test_units(test_units(chosen))
    if problem is None:
        return found
    hint = "score more candidate units (`score --units`) and build a larger study"
    if select is not None:
        table = pd.read_parquet(scores) if scores else None
        larger = (k for k in range(len(chosen) + 1, candidates + 1)
                  if too_few_test_units(test_units(choose_units(
                      sorted(plan.available), table, units, select, k, seed))) is None)
        k = next(larger, None)
        if k is not None:
            hint = f"-n {k} or more leaves {MIN_GROUP} test units"
    found.append(f"a study of {len(chosen)} units {problem} after `prepare`'s split "
                 f"(--test-fraction {SplitOptions.test_fraction:g}): `train.py --model.init_from` can update the metric "
                 f"with its answers but not measure it; {hint}")
    return found


@dataclass
class StudySettings:
    """What a study shows and how it sends its answers; each an option of `study build`."""

    trials_per_task: int = option(IMI.trials_per_task, "main trials per participant (one task)",
                                  POSITIVE_INT)
    catch_per_task: int = option(IMI.catch_per_task, "catch trials per task (a query that is "
                                 "also a reference)", NON_NEGATIVE_INT)
    demo_trials: int = option(IMI.demo_trials, "practice trials, repeated until all are right",
                              NON_NEGATIVE_INT)
    max_demo_attempts: int = option(IMI.max_demo_attempts, "attempts at the practice block "
                                    "before the study ends", POSITIVE_INT)
    enable_buttons_after_ms: int = option(1500, "milliseconds before a trial's buttons work",
                                          NON_NEGATIVE_INT, flag="--enable-buttons-after")
    feedback_main: bool = option(True, "no right/wrong feedback after main trials",
                                 flag="--no-feedback-main", negate=True)
    post_url: str | None = option("results", "where the page POSTs each finished session "
                                  "(relative to the page, or a full URL)")
    local_save: str = option("on_failure", "also save the session in the browser",
                             choices=LOCAL_SAVE)
    completion_url: str | None = option(None, "a link shown at the end (e.g. Prolific's "
                                        "completion URL)")
    title: str = option("Which image belongs?", "the page's title")


def check_study(out, overwrite: bool = False, scores=None, **settings) -> StudySettings:
    """What `build_study` checks before it reads the stimulus store, so a command that makes the
    store first (`study build --activations`) checks it before that work: the settings (the
    `StudySettings` fields), the output folder and the scores file."""
    try:
        settings = StudySettings(**settings)
    except TypeError as err:
        raise InputError(f"build_study: {err}") from None
    s = settings
    _check_settings(s.demo_trials, s.max_demo_attempts, s.enable_buttons_after_ms, s.post_url,
                    s.local_save, s.completion_url)
    check_output_folder(out, overwrite)
    if scores is not None and not Path(scores).is_file():
        raise InputError(f"--scores {scores}: no such file; give the scores.parquet of `score`")
    return settings


def build_study(stimuli, out, units=None, scores=None, select=None, n: int = 10, seed: int = 0,
                overwrite: bool = False, readout=None, **settings) -> Path:
    """Write a browser study of the units of the stimulus store STIMULI (all, the `units`
    given, or `n` picked by `select` from `scores`, see `data.selection`) into OUT, and return
    OUT. `settings` are `StudySettings` fields.

    Each task (what one participant does) holds up to `trials_per_task` main trials (one per
    batch of a unit) plus `catch_per_task` catch trials; the practice block has `demo_trials`
    and is tried at most `max_demo_attempts` times. The page POSTs the session to `post_url`
    (relative to the page, or a full URL; None: no upload) and saves it in the browser as well
    `always`, `on_failure` of the upload, or `never`. `readout` (`stimuli.readouts`, from
    `--features`) keeps the store's units of that readout only."""
    (trials_per_task, catch_per_task, demo_trials, max_demo_attempts, enable_buttons_after_ms,
     feedback_main, post_url, local_save, completion_url, title) = astuple(
        check_study(out, overwrite, scores, **settings))
    stimuli, out = Path(stimuli), Path(out)
    plan = plan_experiment(stimuli, out, scores, units, select, n, seed, trials_per_task,
                           catch_per_task, overwrite, readout)
    for warning in size_warnings(plan, scores, units, select, n, seed):
        log.warning("warning: %s", warning)
    rng = np.random.default_rng([seed, 1])  # not the plan's draws: the plan stays as exported
    images: dict[str, Path] = {}
    demo = [_trial_entry(t, stimuli, rng, images, "demo")
            for t in _practice(plan.available, plan.units, demo_trials, rng)]
    tasks = [{"task_id": f"task_{k}",
              "trials": [_trial_entry(t, stimuli, rng, images,
                                      "catch_trial" if t.catch else "natural") for t in task]}
             for k, task in enumerate(plan.tasks, start=1)]
    study = {
        "format": STUDY_FORMAT, "title": title,
        # IMI's task as this study runs it: the page's buttons and practice attempts read it
        "protocol": replace(IMI, trials_per_task=trials_per_task, catch_per_task=catch_per_task,
                            demo_trials=demo_trials,
                            max_demo_attempts=max_demo_attempts).to_json(),
        "settings": {"post_url": post_url or None, "local_save": local_save,
                     "enable_buttons_after_ms": enable_buttons_after_ms,
                     "feedback_main": bool(feedback_main), "completion_url": completion_url},
        "units": plan.units, "select": select, "seed": seed,
        "consent_html": CONSENT_HTML, "instruction_pages": INSTRUCTION_PAGES,
        "demo": demo, "tasks": tasks,
    }
    # The sessions name the study they came from: a digest of everything the page shows.
    text = json.dumps(study, sort_keys=True)
    study = {"study_id": hashlib.sha256(text.encode()).hexdigest()[:16], **study}
    assets = package_file("study", "assets")
    with atomic_folder(out, overwrite) as tmp:
        for name in PAGE_FILES:
            shutil.copyfile(assets / name, tmp / name)
        shutil.copytree(assets / "vendor", tmp / "vendor")
        for rel, source in sorted(images.items()):
            link_or_copy(source, tmp / rel)
        (tmp / "study.json").write_text(json.dumps(study, indent=1))
    return out
