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
from .check import Monitor
from .report import write_outputs

REQUEST, DONE = "track.json", "checkpoints"


def read_state(path: Path, model_keys: dict) -> tuple[dict, int | None]:
    """The checkpoint's tensors under the model's own key names, and its global step where it
    records one. `model_keys`: name -> shape of the architecture's state dict."""
    import torch

    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:  # tensors and plain containers only: reading a checkpoint runs no code
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: not a readable checkpoint ({type(err).__name__}); give a "
                         "state dict saved with torch.save or a Lightning .ckpt") from err
    step = data.get("global_step") if isinstance(data, dict) else None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{path}: holds no state dict of tensors; give model.state_dict() "
                         "saved with torch.save, or a Lightning .ckpt")
    prefix = _prefix(state, model_keys)
    if prefix is None:
        example = next(iter(model_keys))
        raise InputError(f"{path}: not a checkpoint of this architecture (no key prefix maps "
                         f"its tensors onto the model's, e.g. {example!r}); check --model")
    mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(model_keys[k])}" for k, v in mine.items()
             if tuple(v.shape) != tuple(model_keys[k])]
    if wrong:
        raise InputError(f"{path}: not a checkpoint of this architecture: {len(wrong)} "
                         f"tensor(s) of another shape, e.g. {wrong[0]}; check --model")
    return mine, (int(step) if step is not None else None)


def _prefix(state: dict, model_keys: dict) -> str | None:
    """The prefix (possibly empty) under which `state` holds exactly the model's keys."""
    first = next(iter(model_keys))
    for key in state:
        if key.endswith(first) and (key == first or key[-len(first) - 1] == "."):
            prefix = key[: len(key) - len(first)]
            if {k[len(prefix):] for k in state if k.startswith(prefix)} == set(model_keys):
                return prefix
    return None


def build_architecture(arch: str, first_checkpoint: Path, image_size: int | None):
    """The architecture untrained, its classifier resized to the checkpoint's classes (a model
    trained on 10 classes has a 10-way head)."""
    import torch

    from ..stimuli.model_spec import parse_model_spec
    from ..stimuli.user_input import check_model_spec, load_model

    spec = f"{parse_model_spec(arch, '--model').name}@random"
    check_model_spec(spec)
    loaded = load_model(spec, image_size=image_size)
    module = loaded.module
    head = getattr(module, "pretrained_cfg", {}).get("classifier")
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    if head and f"{head}.weight" in shapes and first_checkpoint.is_file():
        try:
            state, _ = read_state(first_checkpoint, shapes)
        except InputError:
            state = _any_prefix_head(first_checkpoint, head)
        weight = state.get(f"{head}.weight") if state else None
        if weight is not None and weight.shape[0] != shapes[f"{head}.weight"][0]:
            with torch.random.fork_rng():
                module.reset_classifier(int(weight.shape[0]))
            module.to(loaded.device).requires_grad_(False).eval()
    return loaded


def _any_prefix_head(path: Path, head: str) -> dict:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return {}  # read_state words the error when the file is checked
    state = data.get("state_dict", data) if isinstance(data, dict) else {}
    found = [k for k in state if k == f"{head}.weight" or k.endswith(f".{head}.weight")]
    return {f"{head}.weight": state[found[0]]} if len(found) == 1 else {}


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
