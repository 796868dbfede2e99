"""Interrupted passes resume what they say they kept: the activation pass and the embeddings
are saved by chunk, a rerun computes only the chunks not yet done and gives the bytes of an
uninterrupted run, other settings never reuse a chunk, and Ctrl-C names what was kept."""

import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import interpscore.resume as resume
import interpscore.stimuli.activations as activations
from conftest import ROOT
from interpscore.cli import main
from interpscore.metric.scorer import load

MODEL = "test_resnet@random"
UNITS = ["layer1.0.conv1:3", "layer2.0.conv2:5", "layer3.0:1"]
# 120 images in batches of 15: 8 batches, so 8 activation chunks of one batch each
COLLECT = activations.collect_rankings
REQUEST = dict(images="default", pool_size=120, image_size=48, n_refs=4, n_batches=3,
               batch_size=15, progress=False)


class Calls:
    """Counts calls of a wrapped function; the call after `stop_after` raises KeyboardInterrupt
    (Ctrl-C arriving mid-chunk)."""

    def __init__(self, function, stop_after=None):
        self.function, self.stop_after, self.n = function, stop_after, 0

    def __call__(self, *args, **kwargs):
        if self.stop_after is not None and self.n >= self.stop_after:
            raise KeyboardInterrupt
        self.n += 1
        return self.function(*args, **kwargs)


def _count_passes(monkeypatch, stop_after=None) -> Calls:
    calls = Calls(COLLECT, stop_after)
    monkeypatch.setattr(activations, "collect_rankings", calls)
    return calls


def _count_embeddings(monkeypatch, scorer, stop_after=None) -> Calls:
    backbone = scorer.cache.backbone
    calls = Calls(type(backbone).embed.__get__(backbone), stop_after)
    monkeypatch.setattr(backbone, "embed", calls)
    return calls


def _kept(what):
    return [(k.done, k.total) for k in resume.kept() if k.what == what]


def test_an_interrupted_score_recomputes_only_missing_chunks_and_equals_an_uninterrupted_run(
        tmp_path, monkeypatch):
    whole = load("mis", cache_dir=tmp_path / "other").score_units(MODEL, units=UNITS, **REQUEST)
    shutil.copytree(tmp_path / "other" / "pools", tmp_path / "cache" / "pools")  # not at stake
    scorer = load("mis", cache_dir=tmp_path / "cache")
    resume.forget()

    passes = _count_passes(monkeypatch, stop_after=3)  # Ctrl-C in the 4th activation chunk
    with pytest.raises(KeyboardInterrupt):
        scorer.score_units(MODEL, units=UNITS, **REQUEST)
    assert passes.n == 3 and _kept("activation chunks") == [(3, 8)]
    (folder,) = (tmp_path / "cache" / "activations").iterdir()
    assert len(list(folder.glob("images-*.pt"))) == 3

    passes = _count_passes(monkeypatch)
    embeds = _count_embeddings(monkeypatch, scorer, stop_after=2)  # then in the 3rd embedding chunk
    with pytest.raises(KeyboardInterrupt):
        scorer.score_units(MODEL, units=UNITS, **REQUEST)
    assert passes.n == 5, "the 3 chunks done before were computed again"
    assert _kept("activation chunks") == [(8, 8)]
    (embedded,) = _kept("embedding chunks")
    assert embedded[0] == 2 and embedded[1] > 2 and embeds.n == 2

    passes = _count_passes(monkeypatch)
    embeds = _count_embeddings(monkeypatch, scorer)
    resumed = scorer.score_units(MODEL, units=UNITS, **REQUEST)
    assert passes.n == 0 and embeds.n == embedded[1] - 2  # one batch a chunk here
    pd.testing.assert_frame_equal(resumed, whole)  # scores, exemplars, statistics: every byte
    # a finished run leaves no chunk behind: the activation chunks go, the embeddings are merged
    assert not list((tmp_path / "cache" / "activations").iterdir())
    assert not list((tmp_path / "cache" / "embeddings").glob("*/chunk-*.pt"))
    assert {k.what for k in resume.kept()} == {"embedding chunks"}  # merged, so still kept


@pytest.mark.parametrize("changed", [dict(image_size=40), dict(units=["layer1.0.conv1:4"]),
                                     dict(batch_size=12), dict(weights=True)])
def test_other_settings_never_reuse_a_chunk(tmp_path, monkeypatch, changed):
    from interpscore.stimuli.networks import load_model

    scorer = load("mis", cache_dir=tmp_path / "cache")
    model = load_model(MODEL, image_size=REQUEST["image_size"])

    def job(changed):
        request = {**REQUEST, "units": UNITS, **changed}
        return scorer.job(model, images=request.pop("images"), units=request.pop("units"),
                          **request)

    _count_passes(monkeypatch, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        job({}).merged()
    if changed.pop("weights", False):  # the same network, its weights moved a little
        next(model.module.parameters()).data.view(-1)[0] += 1e-3
    passes = _count_passes(monkeypatch)
    other = job(changed)
    other.merged()
    assert passes.n == len(resume.chunk_bounds(len(other.pool), other.options.batch_size))
    assert len(list((tmp_path / "cache" / "activations").glob("*/images-*.pt"))) == 3 + passes.n


def test_chunks_are_whole_batches_and_cover_the_pool_once():
    assert resume.chunk_bounds(120, 15) == [(i * 15, i * 15 + 15) for i in range(8)]
    assert resume.chunk_bounds(3000, 64) == [(0, 320), (320, 704), (704, 1088), (1088, 1472),
                                             (1472, 1856), (1856, 2240), (2240, 2624),
                                             (2624, 3000)]
    assert resume.chunk_bounds(10, 64) == [(0, 10)] and resume.chunk_bounds(0, 64) == []


# `interpscore score` in a process of its own, each activation chunk slowed to half a second so
# that Ctrl-C reliably lands mid-pass
SLOW_SCORE = """import sys, time
import interpscore.stimuli.activations as activations
collect = activations.collect_rankings
def slowly(*args, **kwargs):
    time.sleep(0.5)
    return collect(*args, **kwargs)
activations.collect_rankings = slowly
from interpscore.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_during_a_real_score_names_what_it_kept(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = ["score", "--checkpoint", "mis", "--model", MODEL, "--units", ",".join(UNITS),
            "--pool-size", "120", "--image-size", "48", "--batch-size", "15", "--n-refs", "4",
            "--n-batches", "3", "--cache-dir", str(cache), "--out", str(out)]
    # Ctrl-C's default handling, even where this test runs in the background (SIGINT ignored)
    process = subprocess.Popen([sys.executable, "-c", SLOW_SCORE, *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while len(list(cache.glob("activations/*/images-*.pt"))) < 2 and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-2000:]
    chunks = list(cache.glob("activations/*/images-*.pt"))
    assert 2 <= len(chunks) < 8, "the pass finished before Ctrl-C"
    line = err.strip().splitlines()[-1]
    assert re.search(rf"kept {len(chunks)} of 8 activation chunks in {re.escape(str(cache))}",
                     line), line
    assert "rerun of the same command computes only the rest" in line and "Traceback" not in err
    assert not out.exists()
