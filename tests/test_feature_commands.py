"""Features through every command that takes units: `score --save-stimuli` writes a store whose
feature units are named by their readout, `export-experiment` and `study build` pick them
(`--features`), `zoo` scans them, `visualize` optimises them; bad feature files are refused
before any work. Small: resnet18@random at 32-64 px, a few units, a pool of 200-300."""

import hashlib
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from interpscore.cli import main
from interpscore.data.layouts import parse_batch_dir

MODEL, LABEL, LAYER, WIDTH = "resnet18@random", "resnet18-random", "layer2.0", 128
SMALL = ["--pool-size", "300", "--image-size", "64", "--n-refs", "4", "--n-batches", "3"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def directions(tmp_path_factory):
    path = tmp_path_factory.mktemp("dirs") / "dirs.npy"
    np.save(path, np.random.default_rng(3).normal(size=(WIDTH, 4)).astype(np.float32))
    return path


def tag(path) -> str:
    """The layer folder of a direction file's features, written out by hand."""
    return f"{LAYER}+direction-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"


def run(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err.strip().splitlines()[-1:] or [""]


@pytest.fixture(scope="module")
def store(tmp_path_factory, cache, directions):
    """One store holding two channels of LAYER and the four directions' features of LAYER."""
    root = tmp_path_factory.mktemp("scores")
    common = ["score", "--checkpoint", "mis", "--model", MODEL, "--cache-dir", str(cache),
              *SMALL, "--save-stimuli"]
    assert main(common + ["--layers", LAYER, "--units", f"{LAYER}:0,{LAYER}:1",
                          "--out", str(root / "channels")]) == 0
    assert main(common + ["--features", str(directions), "--layers", LAYER, "--units", "all",
                          "--out", str(root / "features")]) == 0
    merged = root / "store"
    for run_dir in ("channels", "features"):
        shutil.copytree(root / run_dir / "stimuli", merged, dirs_exist_ok=True)
    return root


def test_a_features_store_names_each_unit_by_its_readout(store, directions):
    folders = sorted({p.parent.parent.relative_to(store / "store").as_posix()
                      for p in (store / "store").glob("*/*/channel_*/natural_images/batch_0")})
    assert folders == sorted([f"{LABEL}/{LAYER}/channel_0", f"{LABEL}/{LAYER}/channel_1"] + [
        f"{LABEL}/{tag(directions)}/channel_{j}" for j in range(4)])
    batch = f"{LABEL}/{tag(directions)}/channel_2/natural_images/batch_1"
    assert (store / "store" / batch / "max_9.png").is_file()
    # the naming rule every reader of the store uses reads it back like a channel's
    assert parse_batch_dir(batch) == dict(model=LABEL, layer=tag(directions), channel=2, batch=1)
    # exemplars.html: each scored feature, best-scored first, its references files of the store
    page = (store / "features" / "exemplars.html").read_text()
    scores = pd.read_parquet(store / "features" / "scores.parquet")
    ok = scores[scores["status"] == "ok"].sort_values(["score", "channel"],
                                                      ascending=[False, True])
    shown = re.findall(rf"<h3>{LABEL}/{re.escape(tag(directions))}/(\d+):", page)
    assert [int(c) for c in shown] == ok["channel"].tolist() and len(shown) >= 3
    images = re.findall(r"src='([^']+)'", page)
    assert len(images) == 2 * 4 * len(ok)  # 4 references a side (SMALL)
    assert all((store / "features" / image).is_file() for image in images)


def test_b_export_and_study_build_take_the_features_of_a_file(store, directions, tmp_path,
                                                              capsys):
    features = ["--features", str(directions), "--layers", LAYER]
    ids = [f"{LABEL}/{tag(directions)}/{j}" for j in range(4)]
    code, _ = run(["export-experiment", "--stimuli", str(store / "store"), *features,
                   "--out", str(tmp_path / "exp")], capsys)
    assert code == 0
    assert json.loads((tmp_path / "exp" / "units.json").read_text())["units"] == ids
    # without --features, every unit of the store: channels and features apart
    assert main(["export-experiment", "--stimuli", str(store / "store"),
                 "--out", str(tmp_path / "all")]) == 0
    assert len(json.loads((tmp_path / "all" / "units.json").read_text())["units"]) == 6
    # --select reads the features' scores and finds their folders
    code, _ = run(["study", "build", "--stimuli", str(store / "store"), *features,
                   "--scores", str(store / "features" / "scores.parquet"), "--select", "random",
                   "-n", "2", "--demo-trials", "2", "--out", str(tmp_path / "study")], capsys)
    assert code == 0
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert len(study["units"]) == 2 and set(study["units"]) <= set(ids)
    shown = {t["layer"] for task in study["tasks"] for t in task["trials"]}
    assert shown == {tag(directions)}


def test_c_zoo_scans_a_layer_s_features(directions, cache, tmp_path, capsys):
    code, _ = run(["zoo", "--checkpoint", "mis", "--models", MODEL, "--features",
                   str(directions), "--layers", LAYER, "--units", "3/layer", "--pool-shards",
                   "1", "--cache-dir", str(cache), *SMALL, "--out", str(tmp_path / "zoo")],
                  capsys)
    assert code == 0
    rows = pd.read_parquet(tmp_path / "zoo" / "scores.parquet")
    assert len(rows) == 3 and set(rows["readout"]) == {"direction"}
    assert set(rows["layer"]) == {LAYER} and rows["channel"].between(0, 3).all()
    assert (rows["layer_width"] == 4).all()
    record = json.loads((tmp_path / "zoo" / "zoo.json").read_text())["request"]
    assert record["readout"]["readout_sha256"] == hashlib.sha256(
        directions.read_bytes()).hexdigest()


def test_d_visualize_optimises_a_direction(directions, tmp_path, capsys):
    code, _ = run(["visualize", "--model", MODEL, "--features", str(directions), "--layers",
                   LAYER, "--units", f"{LAYER}:1", "--size", "32", "--steps", "12",
                   "--min-steps", "12", "--n-images", "3", "--pool-size", "200",
                   "--out", str(tmp_path / "vis")], capsys)
    assert code == 0
    folder = tmp_path / "vis" / LABEL / tag(directions) / "channel_1" / "optimized_images"
    assert sorted(p.name for p in folder.iterdir()) == [f"{s}_{i}.png" for s in ("max", "min")
                                                         for i in range(3)]
    # the images as written, through the network here: the direction's projection, averaged
    # over positions, is higher on every max image than on every min image
    from PIL import Image

    from interpscore.stimuli.networks import load_model, normalise

    model = load_model(MODEL, image_size=32)
    out = {}
    handle = dict(model.module.named_modules())[LAYER].register_forward_hook(
        lambda m, i, o: out.__setitem__("maps", o))
    column = torch.from_numpy(np.load(directions)[:, 1])
    acts = {}
    for side in ("max", "min"):
        images = torch.stack([torch.from_numpy(np.array(Image.open(folder / f"{side}_{i}.png")))
                              .permute(2, 0, 1).float() / 255 for i in range(3)])
        with torch.no_grad():
            model.module(normalise(images, model.mean, model.std, "cpu"))
        acts[side] = torch.einsum("bchw,c->b", out["maps"], column) / out["maps"][0, 0].numel()
    handle.remove()
    assert acts["max"].min() > acts["min"].max()


def _sae_of(path, model, layer, channels):
    """An SAE file as `sae fit` writes it, unfitted (its weights do not matter here)."""
    from interpscore.stimuli.sae import overcomplete_sae, sae_record, write_sae

    sae = overcomplete_sae().TopKSAE(channels, 8, top_k=2, device="cpu")
    return write_sae(path, sae_record(sae, model, layer, 2, "mean", 0.0, 0.0, {}))


@pytest.mark.parametrize("command", ["zoo", "visualize", "study build", "export-experiment"])
def test_e_bad_feature_files_exit_2_naming_the_file_and_write_nothing(command, store, tmp_path,
                                                                     capsys, cache):
    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones(WIDTH, np.float32))
    unknown = tmp_path / "unknown.npy"  # a good matrix whose features the store lacks
    np.save(unknown, np.ones((WIDTH, 2), np.float32))
    sae = _sae_of(tmp_path / "other.sae.pt", "resnet34@random", LAYER, WIDTH)
    out = tmp_path / "out"
    base = {"zoo": ["zoo", "--checkpoint", "mis", "--models", MODEL, "--cache-dir", str(cache)],
            "visualize": ["visualize", "--model", MODEL],
            "study build": ["study", "build", "--stimuli", str(store / "store")],
            "export-experiment": ["export-experiment", "--stimuli", str(store / "store")]}[command]
    cases = [(["--features", str(flat), "--layers", LAYER], f"--features {flat}:", "2-D"),
             (["--features", str(tmp_path / "none.npy"), "--layers", LAYER],
              f"--features {tmp_path / 'none.npy'}:", "no such file"),
             (["--features", str(unknown)], "--features:", "--layers")]
    if command in ("study build", "export-experiment"):
        cases.append((["--features", str(unknown), "--layers", LAYER], f"--features {unknown}:",
                      "holds no units"))
    if command == "zoo":
        cases.append((["--features", str(sae)], f"--features {sae}:", "resnet34"))
    for extra, starts, says in cases:
        code, err = run(base + extra + ["--out", str(out)], capsys)
        assert code == 2 and err[0].startswith(f"error: {starts}") and says in err[0], err
        assert not out.exists()


def test_f_vit_residual_stream_is_scored(tmp_path, cache, capsys):
    from interpscore.stimuli.networks import layers_of_interest, load_model
    from interpscore.stimuli.scoring_layers import scoring_layers

    model = load_model("vit_tiny_patch16_224@random", image_size=64)
    blocks = [f"blocks.{i}" for i in range(12)]  # vit_tiny has 12 blocks
    layers = scoring_layers(model.module)
    assert set(blocks) <= set(layers) and not set(blocks) & set(layers_of_interest(model.module))
    assert layers.index("blocks.0") < layers.index("blocks.1.norm1")  # in network order
    code, _ = run(["score", "--checkpoint", "mis", "--model", "vit_tiny_patch16_224@random",
                   "--layers", "blocks.5", "--units", "blocks.5:3,blocks.5:7", "--reduction",
                   "cls", "--pool-size", "200", "--image-size", "64", "--n-refs", "4",
                   "--n-batches", "3", "--cache-dir", str(cache), "--out", str(tmp_path / "vit")],
                  capsys)
    assert code == 0
    rows = pd.read_parquet(tmp_path / "vit" / "scores.parquet")
    assert list(rows["layer"]) == ["blocks.5"] * 2 and (rows["layer_width"] == 192).all()
    assert set(rows["reduction"]) == {"cls"} and (rows["status"] == "ok").all()
