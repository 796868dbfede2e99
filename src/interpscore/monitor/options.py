"""What a monitor watches, declared once (the `track` command's flags come from here, the
`Monitor` defaults too). Light: no torch, so `interpscore --help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import IMAGES_HELP, POSITIVE_INT, option

# A smaller probe pool than `score`'s 3000: a check runs every epoch.
DEFAULT_POOL = 1000
# Pixels per forward pass of the probe pool: the whole pool in one batch at a small training
# resolution (4096 images at 32 px), 256 images at 128 px, 83 at 224 px. Many small batches
# cost a check on a CPU 2-3x the time of one large one (resnet10t, 500 images at 32 px).
PROBE_PIXELS = 2**22


def probe_batch(n_images: int, image_size: int) -> int:
    """Images per forward pass of a check: as many as fit in `PROBE_PIXELS`, at least one."""
    return max(1, min(n_images, PROBE_PIXELS // (image_size * image_size)))


@dataclass
class WatchOptions:
    metric: str = option("mis", "'mis' (training-free) or a checkpoint of `python train.py`")
    layers: str = option("auto", "auto (the layers of interest) or L1,L2,... (named_modules names)")
    units: str = option("64", "units watched: N (IMI sampling), N/layer, or LAYER:CHANNEL,...")
    images: str = option("default", f"probe pool: {IMAGES_HELP}")
    batch_size: int | None = option(None, "images per forward pass of the probe pool "
                                    f"(default: the pool, up to {PROBE_PIXELS:,} pixels a batch)",
                                    POSITIVE_INT)
