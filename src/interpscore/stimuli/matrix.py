"""Precomputed activations: a matrix [n_images, n_units] and the images of its rows, for units of
models outside timm and open_clip (or any readout computed elsewhere). Formats:

- `.parquet` / `.csv`: a table with a column `image` (the file's path relative to the --images
  folder; for `--images default`, the pool index) and one column per unit;
- `.pt`: a dict {"activations": [n_images, n_units], "images": [...] (optional),
  "units": [...] (optional), "reduction": str (optional)}, or a bare tensor;
- `.npy`: an array [n_images, n_units].
Without an image list the rows are the pool's images in its order (a folder's files sorted by
path). A unit named `LAYER:INDEX` is that unit (its per-unit seed, hence its exemplars, are a
readout's own); any other name N is unit (N, 0); unnamed units are (`activations`, j).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .readouts import file_sha256
from .units import Unit

SUFFIXES = (".parquet", ".csv", ".pt", ".npy")
IMAGE_COLUMN = "image"


@dataclass
class Activations:
    values: np.ndarray  # (n_images, n_units) float32
    index: np.ndarray  # pool position of each row
    units: list[Unit]
    identity: dict  # readout, readout_sha256, reduction, readout_file


def image_names(pool) -> list:
    """What a score row names an image by: its path in a folder pool, else its pool index."""
    if hasattr(pool, "paths"):
        return list(pool.source_names)
    return list(range(len(pool)))


def unit_of(name, j: int) -> Unit:
    if name is None:
        return Unit("activations", j)
    layer, _, index = str(name).rpartition(":")
    return Unit(layer, int(index)) if layer and index.isdigit() else Unit(str(name), 0)


def _read(path: Path, option: str):
    """(matrix, image list or None, unit names or None, reduction or None) of a file."""
    import torch

    if path.suffix not in SUFFIXES:
        raise InputError(f"{option} {path}: give a {', '.join(SUFFIXES)} file (see "
                         "docs/scoring.md, 'Features')")
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file")
    try:
        if path.suffix in (".parquet", ".csv"):
            import pandas as pd

            table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            if IMAGE_COLUMN not in table:
                raise InputError(f"{option} {path}: no column {IMAGE_COLUMN!r} naming each "
                                 "row's image")
            units = [c for c in table.columns if c != IMAGE_COLUMN]
            return table[units].to_numpy(np.float32), list(table[IMAGE_COLUMN]), units, None
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None, None, None
        data = torch.load(path, map_location="cpu", weights_only=True)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"{option} {path}: not readable as {path.suffix} ({err})") from err
    if torch.is_tensor(data):
        return data.numpy(), None, None, None
    if not isinstance(data, dict) or "activations" not in data:
        raise InputError(f"{option} {path}: a .pt file holds a tensor or a dict with "
                         "'activations' (and optional 'images', 'units')")
    return (np.asarray(data["activations"]), data.get("images"), data.get("units"),
            data.get("reduction"))


def read_activations(source, pool, images=None, units=None, option: str = "--activations"
                     ) -> Activations:
    """A matrix (a file, an array, a tensor or a DataFrame with an `image` column) checked
    against the pool: its rows name images of the pool, once each; finite values."""
    name, sha, reduction = None, None, None
    if isinstance(source, (str, Path)):
        path = Path(source)
        matrix, file_images, file_units, reduction = _read(path, option)
        images, units = images if images is not None else file_images, units or file_units
        name, sha = str(path), file_sha256(path)
    elif hasattr(source, "columns"):  # a DataFrame
        if IMAGE_COLUMN not in source:
            raise InputError(f"activations: no column {IMAGE_COLUMN!r} naming each row's image")
        units = units or [c for c in source.columns if c != IMAGE_COLUMN]
        matrix, images = source[units].to_numpy(np.float32), list(source[IMAGE_COLUMN])
    else:
        matrix = source.numpy() if hasattr(source, "numpy") else np.asarray(source)
    where = f"{option} {name}" if name else option
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise InputError(f"{where}: a matrix [n_images, n_units] is needed, got shape "
                         f"{matrix.shape}")
    if not np.isfinite(matrix).all():
        bad = np.argwhere(~np.isfinite(matrix))[0]
        raise InputError(f"{where}: holds NaN or infinite values (first at row {bad[0]}, "
                         f"column {bad[1]}); drop or fix those units or images")
    index = _rows(images, pool, matrix.shape[0], where)
    if units is not None and len(units) != matrix.shape[1]:
        raise InputError(f"{where}: {len(units)} unit names for {matrix.shape[1]} columns")
    made = [unit_of(None if units is None else u, j) for j, u in enumerate(
        units if units is not None else [None] * matrix.shape[1])]
    if len(set(made)) != len(made):
        raise InputError(f"{where}: unit names repeat; name each column once")
    identity = dict(readout="activations", readout_sha256=sha, reduction=reduction,
                    readout_file=Path(name).name if name else None)
    return Activations(matrix, index, made, identity)


def _rows(images, pool, n_rows: int, where: str) -> np.ndarray:
    """The pool position of each row."""
    if images is None:
        if n_rows != len(pool):
            raise InputError(f"{where}: {n_rows} rows, but the pool (--images) holds "
                             f"{len(pool)} images; give a row per image, or a table with an "
                             f"{IMAGE_COLUMN!r} column naming them")
        return np.arange(n_rows)
    images = list(images)
    if len(images) != n_rows:
        raise InputError(f"{where}: {n_rows} rows but {len(images)} images listed; the list "
                         "must name each row's image")
    names = image_names(pool)
    position = {str(n): i for i, n in enumerate(names)}
    index = [position.get(str(image)) for image in images]
    missing = [image for image, i in zip(images, index) if i is None]
    if missing:
        raise InputError(f"{where}: {len(missing)} image(s) are not in the pool (--images), "
                         f"e.g. {missing[0]!r}; name them by their path relative to the folder "
                         "(or their index in the default pool)")
    if len(set(index)) != len(index):
        raise InputError(f"{where}: an image appears in two rows; give each image once")
    return np.asarray(index, dtype=np.int64)
