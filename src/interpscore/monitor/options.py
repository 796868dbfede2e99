"""What a monitor watches, declared once (the `track` command's flags come from here, the
`Monitor` defaults too). Light: no torch, so `interpscore --help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import IMAGES_HELP, option

# A smaller probe pool than `score`'s 3000: a check runs every epoch.
DEFAULT_POOL = 1000


@dataclass
class WatchOptions:
    metric: str = option("mis", "'mis' (training-free) or a checkpoint of `python train.py`")
    layers: str = option("auto", "auto (the layers of interest) or L1,L2,... (named_modules names)")
    units: str = option("64", "units watched: N (IMI sampling), N/layer, or LAYER:CHANNEL,...")
    images: str = option("default", f"probe pool: {IMAGES_HELP}")
