"""The IMI task's rules live in `interpscore.protocol`; every stage reads them from there."""

from __future__ import annotations

import dataclasses
import json

import pytest

from interpscore.protocol import EMBEDDED, IMI


def test_the_buttons_mean_what_the_page_shows():
    # the page: an upper row labelled 1 2 3 (buttons 0-2), a lower row labelled 1 2 3 (3-5)
    expected = {0: ("upper", 1), 1: ("upper", 2), 2: ("upper", 3),
                3: ("lower", 1), 4: ("lower", 2), 5: ("lower", 3)}
    assert {b: (IMI.row(b), IMI.confidence(b)) for b in range(IMI.n_buttons)} == expected
    assert all(IMI.button(row, c) == b for b, (row, c) in expected.items())
    # the upper query is the min query ('a') unless the queries were switched
    assert [IMI.choice(b, False) for b in range(6)] == ["a", "a", "a", "b", "b", "b"]
    assert [IMI.choice(b, True) for b in range(6)] == ["b", "b", "b", "a", "a", "a"]
    assert IMI.to_json()["buttons"] == [{"row": r, "confidence": c} for r, c in expected.values()]


def test_imi_numbers_and_the_embedded_departure():
    # IMI (Zimmermann et al. 2023): 9 x 20 references, 224 px crops of 256 px, 40 + 5 catch
    # trials and 5 practice trials per task, at most 3 practice attempts
    assert (IMI.n_refs, IMI.n_batches, IMI.image_size, IMI.resized(224)) == (9, 20, 224, 256)
    assert (IMI.trials_per_task, IMI.catch_per_task, IMI.demo_trials,
            IMI.max_demo_attempts) == (40, 5, 5, 3)
    assert IMI.difficulties == ("easy", "hard85", "hard95", "hard99")
    departed = {f.name for f in dataclasses.fields(IMI)
                if getattr(IMI, f.name) != getattr(EMBEDDED, f.name)}
    assert departed == {"image_size", "pool_size", "n_batches", "trials_per_task",
                        "catch_per_task", "demo_trials"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        IMI.n_refs = 8


def test_the_stages_default_to_the_protocol():
    from interpscore.data.exclusion import ExclusionCriteria
    from interpscore.simulate.config import SimulationConfig
    from interpscore.stimuli.options import ScoringOptions
    from interpscore.study.build import StudySettings

    study = StudySettings()
    assert (study.trials_per_task, study.catch_per_task, study.demo_trials,
            study.max_demo_attempts) == (40, 5, 5, 3)
    assert ExclusionCriteria().max_demo_attempts == 3
    assert (ScoringOptions().n_refs, ScoringOptions().n_batches) == (9, 20)
    assert ScoringOptions().image_size is None  # the metric's own size unless told otherwise
    assert SimulationConfig().protocol == EMBEDDED
    assert SimulationConfig(trials_per_task=30).protocol.trials_per_task == 30


def test_a_study_carries_its_protocol_to_the_page(tmp_path):
    from study_helpers import make_store

    from interpscore.study.build import build_study

    store = make_store(tmp_path / "store")
    out = build_study(store, tmp_path / "study", trials_per_task=3, catch_per_task=1,
                      demo_trials=1, max_demo_attempts=2, local_save="always", post_url=None)
    protocol = json.loads((out / "study.json").read_text())["protocol"]
    assert (protocol["trials_per_task"], protocol["catch_per_task"], protocol["demo_trials"],
            protocol["max_demo_attempts"]) == (3, 1, 1, 2)
    assert protocol["buttons"][2] == {"row": "upper", "confidence": 3}
