"""`interpscore track --features` over saved checkpoints: the numbers `Monitor(features=...)`
gives at those weights, and features that do not fit the architecture refused before any work.
A tiny timm network at 32 px, a probe pool of 200 images: seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_monitor import ARCH, PROBE, PROBE_ARGS, tiny_net

from interpscore.cli import main


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("monitor-features-cache")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The network at steps 0, 3 and 6 of SGD, saved as `track` reads it: a plain state dict
    first, then Lightning-style ones (`model.` keys, global_step)."""
    folder, net = tmp_path_factory.mktemp("checkpoints"), tiny_net()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 4, (48,), generator=g)
    optimizer, paths = torch.optim.SGD(net.parameters(), lr=0.5), []
    for step in (0, 3, 6):
        for _ in range(3 if step else 0):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
        state = {k: v.clone() for k, v in net.state_dict().items()}
        path = folder / f"step{step}.pt"
        torch.save(state if step == 0 else {"state_dict": {f"model.{k}": v for k, v in
                                                           state.items()}, "global_step": step},
                   path)
        paths.append(path)
    return paths


FEATURE_LAYER, FEATURE_WIDTH = "layer2", 48  # test_resnet's layer2: BasicBlock(32 -> 48)
FEATURE_ARGS = [*PROBE_ARGS[2:], "--units", "all"]


def saved_state(path):
    """The network's state dict and step of a checkpoint `saved` wrote."""
    data = torch.load(path, weights_only=True)
    if "state_dict" in data:
        return ({k.removeprefix("model."): v for k, v in data["state_dict"].items()},
                data["global_step"])
    return data, 0


def sae_file(path, model=f"{ARCH}@random", layer=FEATURE_LAYER, latents=6):
    """A small SAE file of `interpscore sae fit`'s format (fitted for a few steps on random
    vectors: the test is about which layer and width it reads, not what it learned)."""
    from interpscore.stimuli.sae import fit_sae, sae_record, write_sae

    vectors = torch.randn(256, FEATURE_WIDTH, generator=torch.Generator().manual_seed(4))
    sae = fit_sae(vectors, latents, 2, epochs=1, batch_size=128, lr=1e-3, seed=0,
                  progress=False)
    return write_sae(path, sae_record(sae, model, layer, 2, "mean", 0.0, 0.0, {}))


def test_track_features_gives_the_monitors_numbers_at_those_weights(saved, cache,
                                                                     tmp_path, capsys):
    """`track --features` (a direction file with --layers, as `score --features` takes it) over
    three saved checkpoints equals `Monitor(features=...)` checking those weights."""
    from interpscore.monitor import Monitor

    paths = saved
    directions = tmp_path / "directions.pt"
    torch.save(torch.randn(FEATURE_WIDTH, 5, generator=torch.Generator().manual_seed(3)),
               directions)
    out = tmp_path / "track"
    argv = ["track", "--model", ARCH, *map(str, paths), "--features", str(directions),
            "--layers", FEATURE_LAYER, *FEATURE_ARGS, "--cache-dir", str(cache), "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    tracked = pd.read_parquet(out / "interpretability.parquet")
    monitor = Monitor(cache_dir=cache, layers=[FEATURE_LAYER], features=str(directions),
                      **{**PROBE, "units": "all"})
    live = []
    for path in paths:
        net = tiny_net()
        state, step = saved_state(path)
        net.load_state_dict(state)
        live.append(monitor.check(net, step))
    live = pd.concat(live)
    assert sorted(tracked["step"].unique()) == [0, 3, 6]
    assert (tracked["readout"] == "direction").all() and (tracked["layer"] == FEATURE_LAYER).all()
    merged = live.merge(tracked, on=["step", "layer", "unit"], suffixes=("_live", "_tracked"))
    assert len(merged) == 3 * 5 and sorted(merged["unit"].unique()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(merged["score_tracked"], merged["score_live"], atol=1e-6)
    assert not np.allclose(merged.loc[merged["step"] == 0, "score_live"],
                           merged.loc[merged["step"] == 6, "score_live"])  # the weights moved
    # a rerun with other features is another request: refused, nothing rescored
    torch.save(torch.ones(FEATURE_WIDTH, 5), directions)
    assert main(argv) == 2
    assert "holds a track of another request" in capsys.readouterr().err


def test_track_features_of_an_sae_file_reads_its_layer(saved, cache, tmp_path, capsys):
    """An SAE file fitted on the same architecture (at other weights) names its own layer."""
    paths = saved
    sae = sae_file(tmp_path / "layer2.sae.pt", model=f"{ARCH}@{paths[-1]}")
    out = tmp_path / "track"
    assert main(["track", "--model", ARCH, *map(str, paths[:2]), "--features", str(sae),
                 *FEATURE_ARGS, "--cache-dir", str(cache), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    tracked = pd.read_parquet(out / "interpretability.parquet")
    assert (tracked["readout"] == "sae").all() and (tracked["layer"] == FEATURE_LAYER).all()
    assert sorted(tracked.groupby("step")["unit"].apply(sorted).iloc[0]) == list(range(6))


@pytest.mark.parametrize("case", ["other architecture", "other layer", "other width",
                                  "missing layer", "too many units"])
def test_track_refuses_features_that_do_not_fit_before_any_work(saved, cache, tmp_path, capsys,
                                                                 case):
    paths = saved
    matrix = tmp_path / "m.pt"
    torch.save(torch.randn(FEATURE_WIDTH, 3), matrix)
    given, expected = {
        "other architecture": (["--features", str(sae_file(tmp_path / "r18.sae.pt",
                                                           model="resnet18@random"))],
                               "an SAE of resnet18@random, not of a test_resnet"),
        "other layer": (["--features", str(sae_file(tmp_path / "mine.sae.pt")), "--layers",
                         "layer3"], "is an SAE of layer layer2"),
        "other width": (["--features", str(matrix), "--layers", "layer3"],
                        f"reads {FEATURE_WIDTH} channels, but layer layer3"),
        "missing layer": (["--features", str(matrix), "--layers", "layer9"],
                          "reads layer layer9, which the model does not have"),
        "too many units": (["--features", str(matrix), "--layers", FEATURE_LAYER,
                            "--units", "4"], "--units 4: the layers hold only 3 units"),
    }[case]
    out = tmp_path / "track"
    code = main(["track", "--model", ARCH, *map(str, paths), *PROBE_ARGS, *given,
                 "--cache-dir", str(cache), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and expected in err, err
    assert not out.exists()
