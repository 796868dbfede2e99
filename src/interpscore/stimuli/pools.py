"""Image pools that activations are computed over: a folder, an HF `datasets` image dataset, or the
offline default (crops of the photos bundled with scikit-image, scikit-learn and matplotlib, plus
procedural dead-leaves images with natural colour and occlusion statistics).

Every pool yields uint8 RGB tensors (3, S, S) and knows each image's *source* (the photo it was
cropped from), so that exemplar selection can cap how many references come from one photo.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..data.layouts import IMAGE_SUFFIXES
from ..errors import InputError
from ..protocol import EMBEDDED, IMI

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
                  "retina", "rocket", "brick", "camera", "cell", "clock", "coins", "grass",
                  "gravel", "moon", "page", "text")


def read_image(path: str | Path):
    """An image file as a uint8 RGB tensor (3, H, W), with a clear error for an unreadable one."""
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path}: not a readable image ({err})") from err


def resize_and_crop(image, size: int):
    """IMI preprocessing, scaled: shorter side to size * 256 / 224 (`Protocol.resized`), then a
    centre crop of size."""
    from PIL import Image

    image = image.convert("RGB")
    short = IMI.resized(size)
    scale = short / min(image.size)
    image = image.resize((max(short, round(image.width * scale)),
                          max(short, round(image.height * scale))), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImagePool:
    """Indexable pool: `pool[i]` is a uint8 tensor (3, S, S); `pool.pil(i)` a PIL image."""

    def __init__(self, name: str, size: int, sources: np.ndarray, source_names: list[str]):
        self.name, self.size = name, size
        self.sources, self.source_names = sources, source_names

    def __len__(self) -> int:
        return len(self.sources)

    def pil(self, index: int):
        raise NotImplementedError

    def __getitem__(self, index: int):
        import torch

        return torch.from_numpy(np.array(self.pil(index), dtype=np.uint8)).permute(2, 0, 1)


class ArrayPool(ImagePool):
    def __init__(self, name, images: np.ndarray, sources, source_names):
        super().__init__(name, images.shape[1], np.asarray(sources), source_names)
        self.images = images

    def pil(self, index):
        from PIL import Image

        return Image.fromarray(self.images[index])

    def __getitem__(self, index):
        import torch

        return torch.from_numpy(self.images[index]).permute(2, 0, 1)


class FolderPool(ImagePool):
    """Every image below a folder (sorted paths); each file is its own source."""

    def __init__(self, folder: str | Path, size: int = IMI.image_size):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: image pool folder does not exist")
        self.paths = sorted(p for p in self.folder.rglob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise InputError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the "
                             "pool folder")
        super().__init__(str(self.folder), size, np.arange(len(self.paths)),
                         [p.relative_to(self.folder).as_posix() for p in self.paths])

        self.skipped: dict[int, str] = {}  # unreadable images: skipped and counted

    def pil(self, index):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.paths[index]) as image:
                return resize_and_crop(image, self.size)
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(f"{self.paths[index]}: not a readable image ({err})") from err

    def __getitem__(self, index):
        """The image, or None (with a warning, and counted in `skipped`) when unreadable."""
        import warnings

        try:
            return super().__getitem__(index)
        except InputError as err:
            if index not in self.skipped:
                self.skipped[index] = str(err)
                warnings.warn(f"skipping an unreadable image: {err}", stacklevel=2)
            return None


class HFPool(ImagePool):
    """An HF `datasets` image dataset saved with `save_to_disk` (column `image` by default)."""

    def __init__(self, path: str | Path, size: int = IMI.image_size, column: str = "image",
                 split: str | None = None):
        import datasets

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            split = split or ("train" if "train" in data else next(iter(data)))
            data = data[split]
        if column not in data.column_names:
            raise InputError(f"{path}: no column {column!r} (columns: {data.column_names})")
        self.data, self.column = data, column
        super().__init__(str(path), size, np.arange(len(data)), [str(i) for i in range(len(data))])

    def pil(self, index):
        return resize_and_crop(self.data[int(index)][self.column], self.size)


def _photos() -> list[tuple[str, np.ndarray]]:
    """The natural photos that ship inside installed packages (no download)."""
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # an image this scikit-image version would have to download
            continue
        photos.append((f"skimage:{name}", image))
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos += [(f"sklearn:{Path(f).stem}", im) for f, im in zip(sample.filenames, sample.images)]
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos.append(("matplotlib:grace_hopper", np.asarray(Image.open(handle).convert("RGB"))))
    out = []
    for name, image in photos:
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        out.append((name, image[..., :3].astype(np.uint8)))
    return out


def _jitter_colour(crop: np.ndarray, rng) -> np.ndarray:
    gains = rng.uniform(0.75, 1.25, 3) * rng.uniform(0.8, 1.2)
    out = crop.astype(np.float32) * gains
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.6, 1.4)  # saturation
    return np.clip(out, 0, 255).astype(np.uint8)


def _photo_crop(photo: np.ndarray, size: int, rng) -> np.ndarray:
    from PIL import Image

    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.15, 0.8))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = photo[top:top + side, left:left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size),
                                                                          Image.BICUBIC))
    return _jitter_colour(crop, rng)


def _dead_leaves(size: int, rng, palette: np.ndarray) -> np.ndarray:
    """Occluding discs with power-law radii and colours drawn from natural photos."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (size, size), tuple(int(c) for c in palette[rng.integers(len(palette))]))
    draw = ImageDraw.Draw(image)
    r_min, r_max = size * 0.03, size * rng.uniform(0.15, 0.5)
    alpha = rng.uniform(2.0, 3.5)  # radius density ~ r^-alpha (scale invariance near 3)
    for _ in range(int(rng.integers(40, 250))):
        u = rng.random()
        radius = (r_min ** (1 - alpha) + u * (r_max ** (1 - alpha) - r_min ** (1 - alpha))) ** (1 / (1 - alpha))
        x, y = rng.uniform(-radius, size + radius, 2)
        stretch = rng.uniform(0.5, 2.0)
        colour = tuple(int(c) for c in palette[rng.integers(len(palette))])
        draw.ellipse([x - radius * stretch, y - radius / stretch, x + radius * stretch,
                      y + radius / stretch], fill=colour)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return np.asarray(image)


POOL_PARTS = ("A", "B")  # two pools from disjoint source photos


def default_pool(n_images: int = EMBEDDED.pool_size, size: int = EMBEDDED.image_size,
                 seed: int = 0, photo_fraction: float = 0.5,
                 cache_dir: str | Path | None = None,
                 part: str | None = None) -> ArrayPool:
    """The offline pool: photo crops (positions, scales, flips, colour jitter) and dead-leaves
    images, deterministic by seed. `part` "A" or "B" uses only every other source photo (A the
    even ones, B the odd ones) and dead-leaves colours from those photos alone, so the two
    parts share no source image: a metric can be tested on images it was never trained on.
    Cached as .npz when `cache_dir` is given."""
    if part not in (None, *POOL_PARTS):
        raise InputError(f"pool part {part!r}: valid parts are {', '.join(POOL_PARTS)}")
    version = "v1" if part is None else f"v1-{part}"
    key = hashlib.sha1(f"{n_images}-{size}-{seed}-{photo_fraction}-{version}".encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"default_pool_{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return ArrayPool("default", data["images"], data["sources"], list(data["names"]))
    rng = np.random.default_rng(seed if part in (None, "A") else seed + 7919)
    photos = _photos()
    if part is not None:
        photos = photos[POOL_PARTS.index(part)::2]
    palette = np.concatenate([p[::17, ::17].reshape(-1, 3) for _, p in photos])
    n_photo = int(round(n_images * photo_fraction))
    images = np.empty((n_images, size, size, 3), np.uint8)
    sources = np.empty(n_images, np.int64)
    names = [name for name, _ in photos]
    for i in range(n_photo):  # balanced over photos: at most ceil(n_photo / n_photos) each
        sources[i] = i % len(photos)
        images[i] = _photo_crop(photos[sources[i]][1], size, rng)
    for i in range(n_photo, n_images):  # each dead-leaves image is a source of its own
        names.append(f"dead_leaves{'' if part is None else '-' + part}:{i}")
        sources[i] = len(names) - 1
        images[i] = _dead_leaves(size, rng, palette)
    pool = ArrayPool("default" if part is None else f"default-{part}", images, sources, names)
    if cache is not None:
        with atomic_file(cache) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, images=images, sources=sources, names=np.array(names))
    return pool


def open_pool(spec: str | Path | None, size: int = IMI.image_size,
              n_images: int = EMBEDDED.pool_size, seed: int = 0,
              cache_dir: str | Path | None = None) -> ImagePool:
    """`default` (or None) -> the offline pool; a folder of images, or a saved HF dataset; a
    pool object is used as it is."""
    if isinstance(spec, ImagePool):
        return spec
    if spec in (None, "default"):
        return default_pool(n_images=n_images, size=size, seed=seed, cache_dir=cache_dir)
    path = Path(spec)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return HFPool(path, size=size)
    return FolderPool(path, size=size)
