"""Several networks read together: a mixture's embedding is its members' side by side, each
member keeps its own cache, and a trained head says how much each network counts."""

import numpy as np
import pytest
import torch
import yaml

from interpscore.errors import InputError
from interpscore.metric.backbones import (DREAMSIM_ENSEMBLE, DREAMSIM_ENSEMBLE_RANDOM,
                                          EmbeddingCache, create_backbone)
from interpscore.resources import config_file

MIXTURE = "efficientnet_lite0@random+timm:test_resnet@random"


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=g) for _ in range(n)]


def test_a_mixture_is_its_members_side_by_side(tmp_path):
    mixture = create_backbone(MIXTURE, image_size=64)
    lite0, resnet = mixture.members
    images = _images()
    both = mixture.embed(images)
    alone = [lite0.embed(images), resnet.embed(images)]
    assert torch.allclose(both.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert mixture.stage_dims == lite0.stage_dims + resnet.stage_dims
    assert mixture.stage_owners == ((lite0.name,) * len(lite0.stage_dims)
                                    + (resnet.name,) * len(resnet.stage_dims))
    # Cosine similarity of a mixture is the mean of its members' similarities.
    cos = (both @ both.T).numpy()
    mean = ((alone[0] @ alone[0].T + alone[1] @ alone[1].T) / 2).numpy()
    assert np.allclose(cos, mean, atol=1e-5)


def test_a_mixture_reuses_what_its_members_already_embedded(tmp_path):
    images = _images()
    lite0 = create_backbone("efficientnet_lite0@random", image_size=64)
    EmbeddingCache(tmp_path, lite0).embed_images(images, progress=False)
    mixture = create_backbone(MIXTURE, image_size=64)

    def refuse(_images):
        raise AssertionError("a cached image was embedded again")

    mixture.members[0].embed = refuse  # Lite0's rows are in its own cache already
    cached = EmbeddingCache(tmp_path, mixture).embed_images(images, progress=False)
    expected = torch.cat([lite0.embed(images), mixture.members[1].embed(images)], 1) / 2 ** 0.5
    assert np.allclose(cached, expected.numpy(), atol=1e-6)
    assert len(list((tmp_path / "embeddings").iterdir())) == 2  # one folder per network


@pytest.mark.parametrize("name", ["efficientnet_lite0+efficientnet_lite0", "efficientnet_lite0+",
                                  "efficientnet_lite0+efficientnet_lite2"])
def test_a_bad_mixture_is_refused(name):
    with pytest.raises(InputError, match="distinct|not offered"):
        create_backbone(name, image_size=64)


@pytest.mark.slow
def test_the_dreamsim_ensemble_is_wired_and_embeds_with_random_weights():
    """The MIS paper's feature space (CLIP ViT-B/16, OpenCLIP ViT-B/32, DINO ViT-B/16): the
    packaged config names it; the same networks untrained build and embed offline."""
    config = yaml.safe_load(config_file("backbones/dreamsim_ensemble").read_text())["data"]
    assert config["backbone"] == DREAMSIM_ENSEMBLE and config["image_size"] == 224
    pretrained = [name.rsplit(":", 1)[0] if name.startswith("open_clip:") else name
                  for name in DREAMSIM_ENSEMBLE.split("+")]
    untrained = [name.removesuffix(":random").removesuffix("@random")
                 for name in DREAMSIM_ENSEMBLE_RANDOM.split("+")]
    assert untrained == pretrained  # the same three networks, without their weights
    ensemble = create_backbone(DREAMSIM_ENSEMBLE_RANDOM, image_size=224)
    assert [m.name for m in ensemble.members] == DREAMSIM_ENSEMBLE_RANDOM.split("+")
    embedded = ensemble.embed(_images(2))
    assert embedded.shape == (2, ensemble.dim) and torch.isfinite(embedded).all()
    assert torch.allclose(embedded.norm(dim=1), torch.ones(2), atol=1e-5)
    assert sorted(set(ensemble.stage_owners)) == sorted(DREAMSIM_ENSEMBLE_RANDOM.split("+"))


def test_an_open_clip_member_keeps_its_own_input_size():
    """A ViT's positional embeddings fix its input: in a mixture at 64 px it still sees 224."""
    mixture = create_backbone("efficientnet_lite0@random+open_clip:ViT-B-32:random",
                              image_size=64)
    assert [m.image_size for m in mixture.members] == [64, 224]
    assert torch.isfinite(mixture.embed(_images(2))).all()


def test_network_weights_count_each_network_once_whatever_its_stage_count():
    """At MIS (equal stage weights) a 1-stage and a 5-stage network count the same; a network
    whose stages weigh twice as much counts twice as much."""
    from interpscore.evaluation.harness import describe_head

    class Equal:
        def __init__(self, weights):
            self.weights = weights

        def describe(self):
            return {"stage_weights": list(np.asarray(self.weights) / np.sum(self.weights))}

    owners = ("clip",) + ("dino",) * 5
    assert describe_head(Equal([1] * 6), owners)["network_weights"] == pytest.approx(
        {"clip": 0.5, "dino": 0.5})
    assert describe_head(Equal([2] + [1] * 5), owners)["network_weights"] == pytest.approx(
        {"clip": 2 / 3, "dino": 1 / 3})
    assert "network_weights" not in describe_head(Equal([1] * 6), ("lite0",) * 6)
