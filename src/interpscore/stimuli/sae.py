"""`interpscore sae fit`: a TopK sparse autoencoder (overcomplete's `TopKSAE`) on one layer's
per-position channel vectors over an image pool, collected once, and the file it is kept in
(a dict for `torch.load(weights_only=True)`: the weights and what they were fitted on). Only
overcomplete's SAE classes are used; its hub wrappers (`models.py`) never are.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from importlib.metadata import version
from pathlib import Path

from ..atomic import atomic_file
from ..errors import InputError
from .readouts import SAE_FORMAT

SAE_CLASS = "TopKSAE"
FILE_VERSION = 1


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


def build_sae(data: dict, where: str = "--features"):
    """The SAE module a file's dict describes, its weights loaded."""
    needed = ("format", "model", "layer", "channels", "latents", "top_k", "reduction",
              "state_dict")
    missing = [key for key in needed if key not in data]
    if data.get("format") != SAE_FORMAT or missing:
        raise InputError(f"{where}: not an SAE file of `interpscore sae fit` (missing "
                         f"{', '.join(missing) or 'format'})")
    sae = overcomplete_sae().TopKSAE(int(data["channels"]), int(data["latents"]),
                                      top_k=int(data["top_k"]), device="cpu")
    sae.load_state_dict(data["state_dict"])
    return sae.eval().requires_grad_(False)


def collect_vectors(model, layer: str, pool, positions_per_image: int, batch_size: int,
                    seed: int, progress: bool = True):
    """One pass over the pool: each image's channel vectors at up to `positions_per_image`
    positions (all where the layer has fewer), as a float32 matrix (N, C)."""
    import torch
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
    import torch

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
            seed: int, progress: bool = True):
    """A TopKSAE fitted to `vectors` (N, C) by Adam on the mean squared reconstruction error."""
    import torch
    from tqdm.auto import tqdm

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sae = overcomplete_sae().TopKSAE(vectors.shape[1], latents, top_k=top_k, device="cpu")
        optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
        steps = epochs * -(-len(vectors) // batch_size)
        with tqdm(total=steps, desc=f"sae {latents} latents", disable=not progress) as bar:
            for _ in range(epochs):
                order = torch.randperm(len(vectors))
                for start in range(0, len(vectors), batch_size):
                    x = vectors[order[start:start + batch_size]]
                    _, _, x_hat = sae(x)
                    loss = ((x - x_hat) ** 2).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    bar.update()
                    bar.set_postfix(mse=f"{loss.item():.4g}", refresh=False)
    return sae.eval().requires_grad_(False)


def sae_record(sae, model: str, layer: str, top_k: int, reduction: str, r2: float,
               dead: float, training: dict) -> dict:
    """What an SAE file holds: its weights and everything needed to check and reproduce it."""
    return dict(format=SAE_FORMAT, version=FILE_VERSION, sae_class=SAE_CLASS, model=model,
                layer=layer, channels=int(sae.get_dictionary().shape[1]),
                latents=int(sae.nb_concepts), top_k=int(top_k), reduction=reduction,
                r2=float(r2), dead_fraction=float(dead),
                training=json.loads(json.dumps(training)),  # plain types: weights_only loads
                library={name: version(name) for name in ("overcomplete", "torch")},
                state_dict={k: v.detach().cpu().contiguous()
                            for k, v in sae.state_dict().items()})


def write_sae(path: str | Path, record: dict) -> Path:
    """Atomically: a temporary sibling, renamed into place once whole."""
    import torch

    with atomic_file(path) as tmp:
        torch.save(record, tmp)
    return Path(path)
