"""The one grammar of a model spec (`stimuli.model_spec`), with its parts written out by hand."""

import pytest

from interpscore.errors import InputError
from interpscore.simulate.config import is_pretrained
from interpscore.stimuli.model_spec import ModelSpec, parse_model_spec


@pytest.mark.parametrize("text, expected", [
    ("efficientnet_lite0", ModelSpec("timm", "efficientnet_lite0", "pretrained")),
    ("resnet18@random", ModelSpec("timm", "resnet18", "random")),
    ("resnet18@/w/resnet18.pth", ModelSpec("timm", "resnet18", "/w/resnet18.pth")),
    ("timm:vit_base_patch16_224.dino", ModelSpec("timm", "vit_base_patch16_224.dino",
                                                  "pretrained", prefixed=True)),
    ("timm:vit_base_patch16_224.dino@random", ModelSpec("timm", "vit_base_patch16_224.dino",
                                                         "random", prefixed=True)),
    ("open_clip:RN50:openai", ModelSpec("open_clip", "RN50", "openai", prefixed=True)),
    ("open_clip:RN50:random", ModelSpec("open_clip", "RN50", "random", prefixed=True)),
    ("open_clip:ViT-B-32:/w/clip.bin", ModelSpec("open_clip", "ViT-B-32", "/w/clip.bin",
                                                  prefixed=True)),
])
def test_specs_parse_into_library_name_and_weights(text, expected):
    assert parse_model_spec(text) == expected


@pytest.mark.parametrize("text, pretrained", [
    ("efficientnet_lite0", True), ("resnet18@random", False), ("resnet18@/w/r.pth", True),
    ("open_clip:RN50:openai", True),
    ("open_clip:RN50:random", False),  # untrained although it has no `@`
])
def test_is_pretrained_reads_the_weights(text, pretrained):
    assert is_pretrained(text) is pretrained


@pytest.mark.parametrize("text, unprefixed", [
    ("timm:convnext_atto", "convnext_atto"), ("timm:convnext_atto@random", "convnext_atto@random"),
    ("efficientnet_lite1@random", "efficientnet_lite1@random"),
    ("open_clip:RN50:openai", "open_clip:RN50:openai"),
])
def test_the_spec_load_model_takes(text, unprefixed):
    assert parse_model_spec(text).unprefixed == unprefixed


@pytest.mark.parametrize("text", ["open_clip:RN50", "open_clip::openai", "open_clip:RN50:"])
def test_malformed_open_clip_specs_are_refused_with_the_option(text):
    with pytest.raises(InputError, match=f"^--models {text}: open_clip models are written"):
        parse_model_spec(text, "--models")


def test_every_door_uses_the_grammar():
    """check_model_spec, create_backbone and load_model refuse a malformed spec alike, before
    building anything."""
    from interpscore.metric.backbones import create_backbone
    from interpscore.stimuli import user_input
    from interpscore.stimuli.networks import check_model_spec, load_model

    for call in (check_model_spec, create_backbone, load_model, user_input.check_model_spec,
                 user_input.load_model):
        with pytest.raises(InputError, match="open_clip models are written open_clip:NAME:TAG"):
            call("open_clip:RN50")
    with pytest.raises(InputError, match="unknown backbone 'resnet18'"):
        create_backbone("resnet18")  # a hub backbone is asked for as timm:resnet18
    with pytest.raises(InputError, match="not offered"):
        create_backbone("timm:efficientnet_lite2@random")
