"""Score a series of saved checkpoints as the callback scores a live run:

    interpscore track --model resnet18 run/epoch=0.ckpt run/epoch=1.ckpt ... --out DIR

Every checkpoint is read and matched to the architecture before any scoring (a state dict of
the timm model, or a Lightning checkpoint whose `state_dict` keys carry a prefix such as
`model.`), and features are matched to the layer they read. One `Monitor` scores them all (the
same units and probe pool; channels, or the features of one layer: an SAE file or a direction
matrix). Resumable: a finished checkpoint's rows are `OUT/checkpoints/<name>.parquet` and a
rerun skips it; a rerun must ask for what `OUT/track.json` records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from ..atomic import atomic_file, check_output_folder, write_text
from ..errors import InputError
from ..resources import DEFAULT_CACHE
from ..stimuli.weights import fit_classifier, read_state
from .check import Monitor
from .report import write_outputs

REQUEST, DONE = "track.json", "checkpoints"


def build_architecture(arch: str, first_checkpoint: Path, image_size: int | None):
    """The architecture untrained, its classifier sized as the first checkpoint's."""
    from ..stimuli.model_spec import parse_model_spec
    from ..stimuli.user_input import load_model

    loaded = load_model(f"{parse_model_spec(arch, '--model').name}@random", image_size=image_size)
    fit_classifier(loaded.module, first_checkpoint)
    return loaded


def _done_file(out: Path, checkpoint: Path) -> Path:
    digest = hashlib.sha1(str(checkpoint.resolve()).encode()).hexdigest()[:10]
    return out / DONE / f"{checkpoint.stem}-{digest}.parquet"


def track_checkpoints(arch: str, checkpoints: list[str | Path], out: str | Path,
                      metric: str = "mis", layers="auto", units=64, images="default",
                      features=None, overwrite: bool = False,
                      cache_dir: str | Path = DEFAULT_CACHE, **options) -> pd.DataFrame:
    """One row per unit and checkpoint: checkpoint, step (its global_step, else its position
    in the list), layer, unit, score ... (as `Monitor.check`); the table, summary and figure
    are written to OUT. `features`: a readout of one layer (`readouts.readout_from_options`),
    or what `Monitor` takes as features; None: channels."""
    out, paths = Path(out), [Path(c) for c in checkpoints]
    monitor = Monitor(metric, layers, units, features=features, images=images,
                      cache_dir=cache_dir, **options)
    readout = (None if monitor.readout is None
               else dict(monitor.readout.identity(), layer=monitor.readout.layer))
    request = dict(model=arch, metric=str(metric), layers=layers, units=str(units),
                   images=str(images), options={k: v for k, v in sorted(options.items())
                                                if k != "progress"},
                   **({"features": readout} if readout else {}))
    recorded = json.loads((out / REQUEST).read_text()) if (out / REQUEST).is_file() else None
    if recorded is not None and recorded != request and not overwrite:
        raise InputError(f"--out {out}: holds a track of another request ({REQUEST}); use "
                         "another --out, or --overwrite to start again there")
    check_output_folder(out, overwrite or recorded == request,
                        resumable=(REQUEST, DONE) if recorded is None else ())
    loaded = build_architecture(arch, paths[0], options.get("image_size"))
    shapes = {k: v.shape for k, v in loaded.module.state_dict().items()}
    steps = [read_state(path, shapes)[1] for path in paths]  # every file checked before work
    monitor.validate(loaded.module, "--layers")
    if recorded != request:
        write_text(out / REQUEST, json.dumps(request, indent=2))
    tables = []
    for position, (path, step) in enumerate(zip(paths, steps)):
        done = _done_file(out, path)
        if done.is_file() and recorded == request:
            tables.append(pd.read_parquet(done))
            continue
        loaded.module.load_state_dict(read_state(path, shapes)[0])
        table = monitor.check(loaded.module, position if step is None else step)
        table.insert(0, "checkpoint", str(path))
        with atomic_file(done) as tmp:
            table.to_parquet(tmp, index=False)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    write_outputs(table.drop(columns="checkpoint"), out, str(metric))
    return table
