"""Feature visualisation on a toy network at 32 px and a few steps. Expected activations are
computed here with plain forward passes of the toy network, never with the code under test."""

from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from interpscore.data.layouts import ImageIndex, resolve_trial
from interpscore.errors import InputError
from interpscore.stimuli.networks import LoadedModel
from interpscore.stimuli.objectives import gram_cosines
from interpscore.stimuli.pools import default_pool
from interpscore.stimuli.selection import build_exemplars
from interpscore.stimuli.store import write_store
from interpscore.stimuli.units import Unit
from interpscore.stimuli.visual_store import (plot_visualizations, visualization_table,
                                              write_visualizations)
from interpscore.stimuli.visualize import VisualizationOptions, natural_rankings, visualize_units

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
# a large learning rate: a few steps must go a long way from grey
TINY = VisualizationOptions(size=32, steps=20, min_steps=20, stop_window=4, n_images=3, lr=0.3,
                            alphas=(0.5,), units_per_batch=4, device="cpu")


class NormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d in small: a norm layer with its ReLU6 inside, applied in place."""

    def __init__(self, channels):
        super().__init__(channels)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x):
        return self.act(super().forward(x))


def toy_model() -> LoadedModel:
    """Units with known best images: `edges` 0 / 1 are the rectified vertical / horizontal edges
    of brightness (max: stripes), `inverted` minus those (min: stripes), `bn` 0 the edges again
    behind a built-in ReLU6 with a bias of -6 (silent at the start), `mix` random mixtures."""
    colour = nn.Conv2d(3, 3, 1, bias=False)  # opponent colours and brightness
    colour.weight.data = torch.tensor([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5],
                                       [1 / 3, 1 / 3, 1 / 3]])[:, :, None, None]
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    edges = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    edges.weight.data.zero_()
    edges.weight.data[0, 2], edges.weight.data[1, 2] = sobel, sobel.T
    inverted = nn.Conv2d(2, 2, 1, bias=False)
    inverted.weight.data = -torch.eye(2)[:, :, None, None]
    norm = NormAct(2)
    norm.weight.data[:] = -1.0  # the edges again, less 6
    norm.bias.data[:] = torch.tensor([-6.0, 0.0])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mix = nn.Conv2d(2, 4, 3, padding=1)
        mix.weight.data *= 4  # activations of order 1
    module = nn.Sequential(OrderedDict(colour=colour, edges=nn.Sequential(edges, nn.ReLU()),
                                       inverted=inverted, bn=norm, mix=mix))
    return LoadedModel(module.eval().requires_grad_(False), "toy", MEAN, STD, 32)


def layer_means(model: LoadedModel, images_uint8: np.ndarray, layer: str) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, C) spatial means of a layer, by a plain forward pass."""
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    out = {}
    handle = dict(model.module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, o: out.setdefault("maps", o.detach().clone()))
    with torch.no_grad():
        model.module(x)
    handle.remove()
    return out["maps"].mean((2, 3)).numpy()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tensors this small spend their time in thread hand-offs on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy():
    return toy_model()


@pytest.fixture(scope="module")
def pool():
    return default_pool(n_images=120, size=32, seed=0)


def test_objective_rises_over_steps(toy):
    units = [Unit("edges", 0), Unit("mix", 2)]
    for vis in visualize_units(toy, units, TINY):
        history = np.array(vis.history)
        assert len(history) == vis.steps == 20
        assert history[-4:].mean() > history[:4].mean() + 1.0, (vis.unit, history)


def test_weakest_visualisation_beats_the_best_natural_exemplar(toy, pool):
    maximal, minimal = [Unit("edges", 0), Unit("edges", 1)], [Unit("inverted", 0), Unit("inverted", 1)]
    units = maximal + minimal
    natural = natural_rankings(toy, pool, units, keep=3)
    pool_images = np.stack([pool[i].permute(1, 2, 0).numpy() for i in range(len(pool))])
    visualizations = visualize_units(toy, units, TINY, natural)
    for vis in visualizations:
        side = "max" if vis.unit in maximal else "min"
        pool_acts = layer_means(toy, pool_images, vis.unit.layer)[:, vis.unit.channel]
        images = vis.sides[side].images
        assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
        own = layer_means(toy, images, vis.unit.layer)[:, vis.unit.channel]
        if side == "max":
            assert own.min() > pool_acts.max(), (vis.unit, own, pool_acts.max())
        else:
            assert own.max() < pool_acts.min(), (vis.unit, own, pool_acts.min())
        assert vis.beats_natural(side)
        # what is recorded is what the written images do, weakest first
        np.testing.assert_allclose(vis.sides[side].activations, own, rtol=1e-4, atol=1e-5)
        assert np.all(np.diff(vis.sides["max"].activations) >= 0)
        assert np.all(np.diff(vis.sides["min"].activations) <= 0)
        extreme = pool_acts.max() if side == "max" else pool_acts.min()
        assert vis.sides[side].natural == pytest.approx(extreme, rel=1e-4)
    table = visualization_table("toy", visualizations)
    assert table["max_beats_natural"].tolist()[:2] == [True, True]
    assert table["min_beats_natural"].tolist()[2:] == [True, True]
    assert table["unit_id"].tolist() == ["toy/edges/0", "toy/edges/1", "toy/inverted/0",
                                         "toy/inverted/1"]


def test_a_unit_silent_behind_a_built_in_relu6_still_rises(toy):
    # bn:0 has a bias of -6: the start images give 0 after its ReLU6, where a ReLU6 has no
    # gradient; read before the activation, the max images still climb out of silence
    options = replace(TINY, steps=30, min_steps=30, alphas=())
    (start,) = visualize_units(toy, [Unit("bn", 0)], replace(options, steps=1, min_steps=1))
    assert np.all(layer_means(toy, start.sides["max"].images, "bn")[:, 0] == 0.0)
    (vis,) = visualize_units(toy, [Unit("bn", 0)], options)
    assert layer_means(toy, vis.sides["max"].images, "bn")[:, 0].min() > 0.1


def test_same_seed_repeats_bit_for_bit_and_another_seed_differs(toy):
    units = [Unit("edges", 0), Unit("mix", 2)]
    short = replace(TINY, steps=6, min_steps=6)
    first = visualize_units(toy, units, short)
    again = visualize_units(toy, units, short)
    other = visualize_units(toy, units, replace(short, seed=7))
    for a, b, c in zip(first, again, other):
        for side in ("max", "min"):
            assert np.array_equal(a.sides[side].images, b.sides[side].images)
            assert not np.array_equal(a.sides[side].images, c.sides[side].images)
    # a unit's images start from the same noise alone or with batch-mates
    alone = visualize_units(toy, units[1:], short)[0]
    assert np.abs(alone.sides["max"].images.astype(int)
                  - first[1].sides["max"].images.astype(int)).max() <= 1


def test_written_layout_round_trips_through_the_prepare_resolver(toy, pool, tmp_path):
    unit = Unit("mix", 2)
    exemplars, _ = build_exemplars(toy, pool, [unit], n_refs=9, n_batches=2, progress=False)
    write_store(tmp_path / "store", "toy", exemplars, pool)
    options = replace(TINY, n_images=9, steps=2, min_steps=2)
    visualizations = visualize_units(toy, [unit], options)
    table_path = write_visualizations(tmp_path / "store", "toy", visualizations)
    row = dict(model="toy", model_label="toy", layer="mix", channel=2, batch=1, mode="optimized")
    found = resolve_trial(ImageIndex(tmp_path / "store"), row)
    assert found.query_max == "toy/mix/channel_2/natural_images/batch_1/max_9.png"
    assert found.refs_max == [f"toy/mix/channel_2/optimized_images/max_{i}.png" for i in range(9)]
    for side in ("max", "min"):
        paths = found.refs_max if side == "max" else found.refs_min
        read = np.stack([np.array(Image.open(tmp_path / "store" / p)) for p in paths])
        assert np.array_equal(read, visualizations[0].sides[side].images)
    assert table_path == tmp_path / "store" / "toy" / "visualizations.csv"
    with pytest.raises(InputError, match="--overwrite"):
        write_visualizations(tmp_path / "store", "toy", visualizations)
    write_visualizations(tmp_path / "store", "toy", visualizations, overwrite=True)


def test_figure_is_written(toy, pool, tmp_path):
    units = [Unit("mix", 2)]
    natural = natural_rankings(toy, pool, units, keep=9)
    visualizations = visualize_units(toy, units, replace(TINY, n_images=9, steps=1, min_steps=1))
    path = plot_visualizations(tmp_path / "fig.png", visualizations, pool, natural)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "--steps 0: "), (dict(min_steps=-1), "--min-steps -1: "),
    (dict(size=8), "--size 8: "), (dict(n_images=1), "--n-images 1: "),
    (dict(alphas=(0.5, -1.0)), "--alphas "), (dict(lr=0.0), "--lr 0.0: "),
    (dict(stop_window=1), "--stop-window 1: "), (dict(device="tpu"), "--device tpu: "),
    (dict(jitter=(16,)), "--jitter "), (dict(units_per_batch=0), "--units-per-batch 0: "),
])
def test_bad_options_raise_before_any_work(change, message):
    class Untouchable(nn.Module):
        def forward(self, x):
            raise AssertionError("the model ran before the options were checked")

    model = LoadedModel(nn.Sequential(OrderedDict(conv=Untouchable())), "x", MEAN, STD, 32)
    with pytest.raises(InputError, match=f"^{message}"):
        visualize_units(model, [Unit("conv", 0)], replace(TINY, **change))


def test_unknown_layer_and_missing_natural_exemplars_raise(toy, pool):
    with pytest.raises(InputError, match="--layers nope"):
        visualize_units(toy, [Unit("nope", 0)], TINY)
    natural = natural_rankings(toy, pool, [Unit("edges", 1)], keep=1)
    with pytest.raises(InputError, match="natural exemplars missing"):
        visualize_units(toy, [Unit("edges", 1), Unit("mix", 0)], TINY, natural)


@pytest.mark.parametrize("channels, positions", [(3, 10), (12, 4)])
def test_gram_cosines_match_explicit_gram_matrices(channels, positions):
    maps = torch.randn(5, channels, positions, generator=torch.Generator().manual_seed(1))
    grams = [m @ m.T for m in maps.double()]
    expected = np.array([[float((a * b).sum() / (a.norm() * b.norm())) for b in grams]
                         for a in grams])
    np.testing.assert_allclose(gram_cosines(maps).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_on_the_gpu_the_weakest_visualisation_still_beats_the_pool(toy, pool):
    """The GPU path (where a device is lent): the same units, optimised on CUDA."""
    unit = Unit("edges", 0)
    natural = natural_rankings(toy, pool, [unit], keep=3)
    (vis,) = visualize_units(toy, [unit], replace(TINY, device="cuda"), natural)
    pool_images = np.stack([pool[i].permute(1, 2, 0).numpy() for i in range(len(pool))])
    toy.module.to("cpu")
    own = layer_means(toy, vis.sides["max"].images, "edges")[:, 0]
    assert own.min() > layer_means(toy, pool_images, "edges")[:, 0].max()
