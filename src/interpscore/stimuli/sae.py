"""`interpscore sae fit`: a TopK sparse autoencoder (overcomplete's `TopKSAE`) on one layer's
per-position channel vectors over an image pool, collected once, and the file it is kept in
(a dict for `torch.load(weights_only=True)`: the weights and what they were fitted on). Only
overcomplete's SAE classes are used; its hub wrappers (`models.py`) never are.

The SAE sees the vectors centred by their mean over the fit pool and divided by one scale (their
root-mean-square deviation per channel): overcomplete's decoder has no bias, and one learning
rate then suits layers of any scale. The file keeps the mean and the scale, and `encode` applies
them, so a readout feeds it the layer's raw vectors. On three Lite0 layers this, with Adam at
5e-3 decayed linearly to 0, raised the R^2 by 0.03 at the cost of the old recipe (1e-3, raw
vectors), more than twice its epochs did (docs/scoring.md, Features).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from importlib.metadata import version
from pathlib import Path

import torch

from ..atomic import atomic_file
from ..errors import InputError
from .readouts import SAE_FORMAT

SAE_CLASS = "TopKSAE"
FILE_VERSION = 2  # 2: input_mean and input_scale; a version-1 file has neither (raw inputs)


def overcomplete_sae():
    """overcomplete's `sae` package without running `overcomplete/__init__.py`: 0.3.0's
    imports its visualisation module, which calls `matplotlib.cm.get_cmap` (gone since
    matplotlib 3.9) and its hub wrappers. A package shell stands in while `sae` loads."""
    if "overcomplete.sae" in sys.modules:
        return sys.modules["overcomplete.sae"]
    spec = importlib.util.find_spec("overcomplete")
    if spec is None:
        raise InputError("overcomplete is not installed: pip install 'overcomplete>=0.3,<0.4'")
    shell = "overcomplete" not in sys.modules
    if shell:
        package = types.ModuleType("overcomplete")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["overcomplete"] = package
    try:
        import overcomplete.sae as sae
    finally:
        if shell:  # a later `import overcomplete` runs the real package
            sys.modules.pop("overcomplete", None)
    return sae


class Normalised(torch.nn.Module):
    """An overcomplete SAE on normalised inputs, with overcomplete's interface: `encode(x)` gives
    (pre_codes, codes) of the raw vectors x (N, C); `forward(x)` adds the reconstruction,
    mapped back to the raw scale."""

    def __init__(self, sae, mean, scale):
        super().__init__()
        self.sae = sae
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    @property
    def nb_concepts(self) -> int:
        return self.sae.nb_concepts

    def encode(self, x):
        return self.sae.encode((x - self.mean) / self.scale)

    def decode(self, codes):
        return self.sae.decode(codes) * self.scale + self.mean

    def forward(self, x):
        pre_codes, codes = self.encode(x)
        return pre_codes, codes, self.decode(codes)


def build_sae(data: dict, where: str = "--features") -> Normalised:
    """The SAE module a file's dict describes, its weights loaded (a version-1 file's inputs are
    used raw)."""
    needed = ("format", "model", "layer", "channels", "latents", "top_k", "reduction",
              "state_dict")
    missing = [key for key in needed if key not in data]
    if data.get("format") != SAE_FORMAT or missing:
        raise InputError(f"{where}: not an SAE file of `interpscore sae fit` (missing "
                         f"{', '.join(missing) or 'format'})")
    version = data.get("version", 1)
    if not isinstance(version, int) or version > FILE_VERSION:
        raise InputError(f"{where}: an SAE file of version {version}, written by a newer "
                         f"interpscore (this one reads versions 1 to {FILE_VERSION}); upgrade "
                         "interpscore, or fit the SAE again with this one")
    channels = int(data["channels"])
    sae = overcomplete_sae().TopKSAE(channels, int(data["latents"]), top_k=int(data["top_k"]),
                                      device="cpu")
    sae.load_state_dict(data["state_dict"])
    mean, scale = (data["input_mean"], data["input_scale"]) if version >= 2 else (
        torch.zeros(channels), torch.tensor(1.0))
    return Normalised(sae, mean, scale).eval().requires_grad_(False)


def input_statistics(vectors) -> tuple:
    """The mean (C,) of the fit vectors and their root-mean-square deviation per channel."""
    mean = vectors.mean(0)
    scale = ((vectors - mean) ** 2).sum(1).mean().div(vectors.shape[1]).sqrt()
    return mean, scale.clamp_min(1e-12)


def collect_vectors(model, layer: str, pool, positions_per_image: int, batch_size: int,
                    seed: int, progress: bool = True):
    """One pass over the pool: each image's channel vectors at up to `positions_per_image`
    positions (all where the layer has fewer), as a float32 matrix (N, C)."""
    from tqdm.auto import tqdm

    from .networks import channel_maps, check_layers

    check_layers(model.module, [layer])
    module = dict(model.module.named_modules())[layer]
    captured, vectors = {}, []
    generator = torch.Generator().manual_seed(seed)
    handle = module.register_forward_hook(
        lambda m, _i, out: captured.__setitem__("maps", channel_maps(m, out)))
    try:
        with torch.no_grad(), tqdm(total=len(pool), unit="img", desc=f"activations {layer}",
                                   disable=not progress) as bar:
            for start in range(0, len(pool), batch_size):
                images = [pool[i] for i in range(start, min(start + batch_size, len(pool)))]
                images = [im for im in images if im is not None]
                bar.update(min(batch_size, len(pool) - start))
                if not images:
                    continue
                model(torch.stack(images).to(model.device))
                maps = captured.pop("maps").float().cpu()  # (B, C, S)
                b, c, s = maps.shape
                keep = min(s, positions_per_image)
                picks = torch.rand(b, s, generator=generator).argsort(1)[:, :keep]
                vectors.append(maps.gather(2, picks[:, None].expand(b, c, keep))
                               .transpose(1, 2).reshape(-1, c))
    finally:
        handle.remove()
    return torch.cat(vectors)


def reconstruction_stats(sae, vectors, batch_size: int = 4096) -> tuple[float, float]:
    """R^2 of the reconstruction (1 - residual / total sum of squares about the mean) and the
    fraction of latents that are zero on every vector."""
    mean = vectors.mean(0)
    residual = total = 0.0
    alive = torch.zeros(sae.nb_concepts, dtype=torch.bool)
    with torch.no_grad():
        for start in range(0, len(vectors), batch_size):
            x = vectors[start:start + batch_size]
            _, codes, x_hat = sae(x)
            residual += float(((x - x_hat) ** 2).sum())
            total += float(((x - mean) ** 2).sum())
            alive |= (codes != 0).any(0)
    return 1 - residual / max(total, 1e-12), float((~alive).float().mean())


def fit_sae(vectors, latents: int, top_k: int, epochs: int, batch_size: int, lr: float,
            seed: int, progress: bool = True) -> Normalised:
    """A TopKSAE fitted to `vectors` (N, C), normalised (`input_statistics`), by Adam on the
    mean squared reconstruction error, its learning rate decayed linearly to 0."""
    from tqdm.auto import tqdm

    mean, scale = input_statistics(vectors)
    inputs = (vectors - mean) / scale
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sae = overcomplete_sae().TopKSAE(vectors.shape[1], latents, top_k=top_k, device="cpu")
        optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
        steps = epochs * -(-len(vectors) // batch_size)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
        with tqdm(total=steps, desc=f"sae {latents} latents", disable=not progress) as bar:
            for _ in range(epochs):
                order = torch.randperm(len(inputs))
                for start in range(0, len(inputs), batch_size):
                    x = inputs[order[start:start + batch_size]]
                    _, _, x_hat = sae(x)
                    loss = ((x - x_hat) ** 2).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    decay.step()
                    bar.update()
                    bar.set_postfix(mse=f"{loss.item():.4g}", refresh=False)
    return Normalised(sae.eval(), mean, scale).requires_grad_(False)


def sae_record(sae, model: str, layer: str, top_k: int, reduction: str, r2: float,
               dead: float, training: dict) -> dict:
    """What an SAE file holds: its weights, the normalisation of its inputs, and everything
    needed to check and reproduce it. `sae` is a `Normalised` or a bare overcomplete SAE (raw
    inputs)."""
    inner = getattr(sae, "sae", sae)
    channels = int(inner.get_dictionary().shape[1])
    mean = getattr(sae, "mean", torch.zeros(channels))
    scale = getattr(sae, "scale", torch.tensor(1.0))
    return dict(format=SAE_FORMAT, version=FILE_VERSION, sae_class=SAE_CLASS, model=model,
                layer=layer, channels=channels, latents=int(inner.nb_concepts),
                top_k=int(top_k), reduction=reduction, r2=float(r2), dead_fraction=float(dead),
                training=json.loads(json.dumps(training)),  # plain types: weights_only loads
                library={name: version(name) for name in ("overcomplete", "torch")},
                input_mean=mean.detach().cpu().float().contiguous(),
                input_scale=scale.detach().cpu().float().reshape(()),
                state_dict={k: v.detach().cpu().contiguous()
                            for k, v in inner.state_dict().items()})


def write_sae(path: str | Path, record: dict) -> Path:
    """Atomically: a temporary sibling, renamed into place once whole."""
    with atomic_file(path) as tmp:
        torch.save(record, tmp)
    return Path(path)
