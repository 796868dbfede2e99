"""Features, not only channels: directions, SAE latents and precomputed activation matrices are
scored like channels, and a readout scores exactly as the matrix it produces."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from interpscore.cli import main
from interpscore.errors import InputError
from interpscore.metric.scorer import load

MODEL, LAYER, WIDTH = "resnet18@random", "layer2.0", 128  # resnet18's layer2 has 128 channels
SMALL = dict(images="default", pool_size=300, image_size=64, n_refs=4, n_batches=3,
             progress=False)
CLI_SMALL = ["--pool-size", "300", "--image-size", "64", "--n-refs", "4", "--n-batches", "3"]
SCORES = ["score", "score_low", "score_high", "n_tasks", "status"]
EXEMPLARS = ["exemplars_max", "exemplars_min", "queries"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def scorer(cache):
    return load("mis", cache_dir=cache)


@pytest.fixture(scope="module")
def directions():
    return torch.randn(WIDTH, 5, generator=torch.Generator().manual_seed(1)).numpy()


def layer_outputs(pool) -> np.ndarray:
    """The layer's output (N, C, H, W) over the pool, hooked here, batch by batch."""
    from interpscore.stimuli.networks import load_model

    model = load_model(MODEL, image_size=64)
    module = dict(model.module.named_modules())[LAYER]
    outputs = []
    handle = module.register_forward_hook(lambda m, i, out: outputs.append(out.numpy()))
    with torch.no_grad():
        for start in range(0, len(pool), 64):
            model(torch.stack([pool[i] for i in range(start, min(start + 64, len(pool)))]))
    handle.remove()
    return np.concatenate(outputs)


def test_a_direction_scores_as_the_matrix_of_its_projections(scorer, directions, cache,
                                                             tmp_path):
    from interpscore.stimuli.pools import open_pool

    pool = open_pool("default", size=64, n_images=300, seed=0, cache_dir=cache / "pools")
    maps = layer_outputs(pool).astype(np.float64)
    # The feature's activation: the projection of each position's channel vector on the
    # column, averaged over the positions (IMI's spatial mean).
    projected = np.einsum("nchw,ck->nk", maps, directions) / (maps.shape[2] * maps.shape[3])
    table = pd.DataFrame(projected, columns=[f"{LAYER}:{j}" for j in range(5)])
    table.insert(0, "image", np.arange(len(pool)))
    table.to_parquet(tmp_path / "acts.parquet")

    read = scorer.score_features(MODEL, torch.from_numpy(directions), layer=LAYER, **SMALL)
    given = scorer.score_activations(tmp_path / "acts.parquet", **SMALL)
    assert (read["status"] == "ok").sum() >= 4 and list(read["channel"]) == list(range(5))
    assert list(given["layer"]) == [LAYER] * 5 and list(given["channel"]) == list(range(5))
    pd.testing.assert_frame_equal(read[SCORES], given[SCORES], atol=1e-6)
    pd.testing.assert_frame_equal(read[EXEMPLARS], given[EXEMPLARS])
    # the references are the extremes of the hand-computed projections
    ok = read[read["status"] == "ok"].index[0]
    top = {i for batch in json.loads(read.loc[ok, "exemplars_max"]) for i in batch}
    assert int(np.argmax(projected[:, ok])) in top
    assert int(np.argmin(projected[:, ok])) in {
        i for batch in json.loads(read.loc[ok, "exemplars_min"]) for i in batch}
    assert set(read["readout"]) == {"direction"} and set(read["reduction"]) == {"mean"}
    assert set(given["readout"]) == {"activations"}
    assert given["readout_sha256"].iloc[0] == hashlib.sha256(
        (tmp_path / "acts.parquet").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sae_file(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("sae") / "layer2.sae.pt"
    code = main(["sae", "fit", "--model", MODEL, "--layer", LAYER, "--latents", "24",
                 "--top-k", "4", "--pool-size", "200", "--image-size", "64", "--epochs", "2",
                 "--cache-dir", str(cache), "--out", str(out)])
    assert code == 0
    return out


def test_b_an_sae_fit_records_its_quality_and_its_latents_score(sae_file, scorer):
    data = torch.load(sae_file, weights_only=True)
    assert (data["model"], data["layer"], data["channels"], data["latents"], data["top_k"]) == (
        MODEL, LAYER, WIDTH, 24, 4)
    assert np.isfinite(data["r2"]) and data["r2"] <= 1 and 0 <= data["dead_fraction"] <= 1
    assert data["training"]["epochs"] == 2 and data["library"]["overcomplete"] == "0.3.0"
    assert not list(sae_file.parent.glob(".*.tmp"))  # written whole, nothing left beside it
    rows = scorer.score_features(MODEL, sae_file, units=6, **SMALL)
    assert len(rows) == 6 and set(rows["readout"]) == {"sae"} and (rows["layer_width"] == 24).all()
    assert rows["readout_sha256"].iloc[0] == hashlib.sha256(sae_file.read_bytes()).hexdigest()
    assert (rows["status"] == "ok").any() and rows["channel"].between(0, 23).all()


def test_b2_an_sae_file_normalises_its_inputs_and_old_files_still_read(sae_file, tmp_path):
    from interpscore.stimuli.readouts import load_sae
    from interpscore.stimuli.sae import overcomplete_sae

    data = torch.load(sae_file, weights_only=True)
    assert data["version"] == 2 and data["input_mean"].shape == (WIDTH,)
    assert float(data["input_scale"]) > 0
    inner = overcomplete_sae().TopKSAE(WIDTH, 24, top_k=4, device="cpu")
    inner.load_state_dict(data["state_dict"])
    inner.eval()
    x = torch.randn(7, WIDTH, generator=torch.Generator().manual_seed(2)) * 3 + 1
    # a readout gives the file raw channel vectors; it encodes them normalised
    codes = load_sae(sae_file).encoder.encode(x)[1]
    expected = inner.encode((x - data["input_mean"]) / data["input_scale"])[1]
    torch.testing.assert_close(codes, expected)
    assert (codes != 0).sum(1).le(4).all() and codes.abs().sum() > 0
    # a file of version 1 (before the normalisation) reads as it did: its weights on raw vectors
    old = {k: v for k, v in data.items() if k not in ("input_mean", "input_scale")}
    torch.save({**old, "version": 1}, tmp_path / "v1.sae.pt")
    torch.testing.assert_close(load_sae(tmp_path / "v1.sae.pt").encoder.encode(x)[1],
                               inner.encode(x)[1])
    torch.save({**data, "version": 3}, tmp_path / "v3.sae.pt")
    with pytest.raises(InputError, match=rf"^--features {tmp_path / 'v3.sae.pt'}: an SAE file "
                       "of version 3, written by a newer interpscore"):
        load_sae(tmp_path / "v3.sae.pt")


def _bad(args, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["score", "--checkpoint", "mis", "--cache-dir", str(tmp_path / "cache"),
                 *CLI_SMALL, "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and not out.exists()
    return err


def test_c_bad_feature_inputs_exit_2_naming_the_file_or_option(sae_file, tmp_path, capsys):
    wrong = tmp_path / "wrong_width.npy"
    np.save(wrong, np.ones((WIDTH + 1, 3), np.float32))
    err = _bad(["--model", MODEL, "--features", str(wrong), "--layers", LAYER], tmp_path, capsys)
    assert err.startswith(f"error: --features {wrong}:") and f"has {WIDTH}" in err

    err = _bad(["--model", "resnet34@random", "--features", str(sae_file)], tmp_path, capsys)
    assert err.startswith(f"error: --features {sae_file}:") and MODEL in err
    err = _bad(["--model", MODEL, "--features", str(sae_file), "--layers", "layer3.0"],
               tmp_path, capsys)
    assert err.startswith("error: --layers layer3.0:") and LAYER in err

    short = tmp_path / "short.npy"
    np.save(short, np.ones((299, 2), np.float32))  # the pool holds 300 images
    err = _bad(["--activations", str(short)], tmp_path, capsys)
    assert err.startswith(f"error: --activations {short}:") and "299 rows" in err

    nan = tmp_path / "nan.npy"
    values = np.ones((300, 2), np.float32)
    values[7, 1] = np.nan
    np.save(nan, values)
    err = _bad(["--activations", str(nan)], tmp_path, capsys)
    assert err.startswith(f"error: --activations {nan}:") and "NaN" in err

    err = _bad(["--model", MODEL, "--features", str(sae_file), "--reduction", "median"],
               tmp_path, capsys)
    assert err.startswith("error: --reduction median:")
    err = _bad(["--model", MODEL, "--layers", LAYER, "--reduction", "cls"], tmp_path, capsys)
    assert err.startswith("error: --reduction cls:")  # a CNN's map has no tokens


class _Codes:
    """An encoder written here: codes = relu(x W), as overcomplete returns them (a tuple with
    the pre-codes) or as SAELens does (the codes alone)."""

    def __init__(self, weights, as_tuple):
        self.weights, self.as_tuple = torch.as_tensor(weights), as_tuple

    def encode(self, x):
        pre = x @ self.weights.to(x.dtype)
        return (pre, pre.relu()) if self.as_tuple else pre.relu()


def test_d_any_object_with_encode_is_a_readout(scorer, directions):
    as_tuple = scorer.score_features(MODEL, _Codes(directions, True), layer=LAYER, **SMALL)
    as_tensor = scorer.score_features(MODEL, _Codes(directions, False), layer=LAYER, **SMALL)
    assert len(as_tuple) == 5 and (as_tuple["status"] == "ok").sum() >= 3
    assert set(as_tuple["readout"]) == {"sae"}
    pd.testing.assert_frame_equal(as_tuple[SCORES + EXEMPLARS], as_tensor[SCORES + EXEMPLARS])


def test_one_rule_names_the_readout_of_the_options(tmp_path):
    """features / layers / reduction -> readout, the same for score, zoo, visualize, study build
    and export-experiment (`readouts.readout_from_options`)."""
    from interpscore.stimuli.readouts import layer_names, readout_from_options

    assert layer_names("auto") == "auto" and layer_names("a, b.1") == ["a", "b.1"]
    assert readout_from_options(None, "layer2") is None  # channels, IMI's mean
    channels = readout_from_options(None, "layer2", "max")
    assert (channels.kind, channels.layer, channels.reduction) == ("channel", None, "max")
    matrix = tmp_path / "dirs.npy"
    np.save(matrix, np.ones((8, 2), np.float32))
    with pytest.raises(InputError, match=r"^--layers a,b: --features reads one layer"):
        readout_from_options(str(matrix), "a,b")
    with pytest.raises(InputError, match="needs its layer"):
        readout_from_options(str(matrix), "auto")
    with pytest.raises(InputError, match="reduction"):
        readout_from_options(None, "auto", "median")
