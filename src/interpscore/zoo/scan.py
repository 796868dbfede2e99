"""The zoo scan: every unit (or a sample per layer) of many models, scored by one checkpoint.

    interpscore zoo --checkpoint CKPT --models MODELS --images POOL --out DIR

Work is split two ways, both resumable:
- over models: process `rank` of `world` scans models rank, rank + world, ... (`--shard R/W` for
  the array jobs of a batch scheduler; under torchrun, RANK and WORLD_SIZE). A finished model is
  a file `OUT/models/<label>.parquet` and is skipped by a rerun; a model that cannot be built,
  runs out of memory or gives non-finite activations is recorded with its reason, and the scan
  goes on.
- within a model: the activation pass runs in `pool_shards` parts, each saved when done under
  `OUT/work/<label>/shards/`, so an interrupted model continues where it stopped.
When every model is done, `OUT/scores.parquet` (one row per unit) and the summaries and report are
written, by rank 0 after a barrier under torchrun, else by whichever process finds all models done.
`zoo.cluster` runs the same steps as SLURM array jobs, one per (model, pool shard), on these files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_file, write_text
from ..errors import InputError
from ..metric.scorer import Scorer, ScoringOptions, save_table
from ..resume import discard, note
from ..stimuli.networks import model_label
from ..stimuli.user_input import check_model_spec

log = logging.getLogger(__name__)  # progress lines; the CLI shows them

UNIT_COLUMNS = ["model", "spec", "layer", "channel", "layer_depth", "layer_width", "score",
                "score_low", "score_high", "status"]


@dataclass
class ZooRequest:
    """What every model of a scan is scored with (recorded in OUT/zoo.json; a rerun must match)."""

    checkpoint: str
    images: str = "default"
    layers: str = "auto"
    units: str = "all"  # all, or N/layer (a seeded sample of N channels of each layer)
    pool_shards: int = 4
    options: dict | None = None  # ScoringOptions fields
    features: str | None = None  # --features: an SAE file or a direction matrix (one layer)
    reduction: str | None = None
    readout: dict | None = None  # its identity (sha256 of the file): a rerun must match

    def open_readout(self):
        """The readout of --features (None: channels), opened again in each process."""
        from ..stimuli.readouts import readout_from_options

        return readout_from_options(self.features, self.layers, self.reduction)

    def scoring_options(self) -> dict:
        return {**(self.options or {}), "progress": False}


def read_models(items: list[str]) -> list[str]:
    """Model specs from the command line: specs, or files of specs (one a line, # comments)."""
    specs = []
    for item in items:
        path = Path(item)
        if path.is_file():
            lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
            specs += [line for line in lines if line]
        else:
            specs.append(item)
    if not specs:
        raise InputError("--models: no model specs given (a list, or a file of one spec a line)")
    labels = [model_label(spec) for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(f"--models: {', '.join(repeated)} given more than once")
    for spec in specs:
        check_model_spec(spec, option="--models")
    return specs


def check_scan_folder(out: Path, request: ZooRequest, overwrite: bool) -> None:
    """OUT is new, or a scan of the same request to resume; anything else needs --overwrite."""
    from ..atomic import check_output_folder

    record = out / "zoo.json"
    if record.is_file() and not overwrite:
        if json.loads(record.read_text())["request"] != _jsonable(request):
            raise InputError(f"--out {out}: holds a scan of another request (see its zoo.json); "
                             "name another folder, or pass --overwrite to start again")
        return
    check_output_folder(out, overwrite)
    if overwrite:
        for name in ("models", "work", "zoo.json"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)


def _jsonable(request: ZooRequest) -> dict:
    return json.loads(json.dumps(asdict(request), default=str))


# What a model can fail with and the scan go on: a spec that cannot be built, weights that do not
# load, torch's out-of-memory (a RuntimeError), non-finite activations.
MODEL_ERRORS = (InputError, RuntimeError, ValueError, OSError)


def model_file(out: Path, spec: str) -> Path:
    """A model's finished rows: a rerun skips the model when this file exists."""
    return out / "models" / f"{model_label(spec)}.parquet"


def work_folder(out: Path, spec: str) -> Path:
    """A model's unfinished work: its activation pass's pool shards (`shards/`)."""
    return out / "work" / model_label(spec)


def all_done(out: Path, models: list[str]) -> bool:
    return all(model_file(out, spec).is_file() for spec in models)


def _job(scorer: Scorer, spec: str, request: ZooRequest, out: Path):
    readout = request.open_readout()
    own = readout is not None and readout.layer is not None  # features read their own layer
    return scorer.job(spec, layers=readout.layer if own else _layers(request.layers),
                      units=request.units, images=request.images, out=work_folder(out, spec),
                      readout=readout, **request.scoring_options())


def _record(frame: pd.DataFrame, out: Path, spec: str) -> pd.DataFrame:
    with atomic_file(model_file(out, spec)) as tmp:
        frame.to_parquet(tmp, index=False)
    discard(work_folder(out, spec))
    return frame


def _failed(spec: str, err: Exception) -> pd.DataFrame:
    return pd.DataFrame([dict(model=model_label(spec), spec=spec, status=_reason(err))])


def scan_model(scorer: Scorer, spec: str, request: ZooRequest, out: Path) -> pd.DataFrame:
    """One model's unit rows, resumable by pool shard (shards already saved, by this process or
    by array tasks, are read, not recomputed); a failure becomes a row with its reason."""
    if model_file(out, spec).is_file():
        return pd.read_parquet(model_file(out, spec))
    try:
        job = _job(scorer, spec, request, out)
        frame = scorer.score_job(job, *job.merged(request.pool_shards))
        frame.insert(1, "spec", spec)
        frame["params"] = sum(p.numel() for p in job.model.module.parameters())
    except MODEL_ERRORS as err:
        frame = _failed(spec, err)
    return _record(frame, out, spec)


def scan_shard(scorer: Scorer, spec: str, request: ZooRequest, out: Path, rank: int) -> None:
    """Pool slice `rank` of one model's activation pass (one array task of a cluster scan),
    saved under the model's work folder; a model that fails is recorded as `scan_model` does."""
    if model_file(out, spec).is_file():
        return
    try:
        _job(scorer, spec, request, out).compute_shard(rank, request.pool_shards)
    except MODEL_ERRORS as err:
        if not model_file(out, spec).is_file():  # another slice of it may have failed first
            _record(_failed(spec, err), out, spec)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"failed: {type(err).__name__}: {text[:300]}"


def _layers(text: str):
    from ..stimuli.readouts import layer_names

    return layer_names(text)


def rank_and_world(shard: tuple[int, int] | None) -> tuple[int, int, bool]:
    """(rank, world, under torchrun): `--shard R/W` wins; else torchrun's environment."""
    if shard is not None:
        return shard[0], shard[1], False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, world > 1


def check_scan(checkpoint: str | Path, images: str = "default", layers: str = "auto",
               units: str = "all", pool_shards: int = 4, metadata: str | Path | None = None,
               features: str | None = None, reduction: str | None = None,
               models: list[str] | None = None, **options) -> ZooRequest:
    """Every check of a scan's request that needs no network: the request, or InputError.
    With `features` every model is scored through that readout (an SAE file must be of
    each of `models`; a direction matrix needs one layer, and each model's width is checked
    when it is built)."""
    from ..stimuli.model_spec import parse_model_spec
    from ..stimuli.readouts import check_reduction
    from ..stimuli.selection import check_request
    from ..stimuli.units import check_units_spec

    if reduction is not None:
        check_reduction(reduction)
    readout = ZooRequest(str(checkpoint), layers=layers, features=features,
                         reduction=reduction).open_readout()
    if readout is not None and readout.model is not None:
        other = [m for m in models or [] if parse_model_spec(m).unprefixed
                 != parse_model_spec(readout.model).unprefixed]
        if other:
            raise InputError(f"--features {features}: an SAE of model {readout.model}, not "
                             f"{other[0]}; scan that model alone, or fit one per model")

    checked = ScoringOptions.from_kwargs(options)  # unknown options fail here, before any work
    check_request(checked.n_refs, checked.n_batches, [checked.difficulty])
    check_units_spec(units)
    if str(images) != "default" and not Path(images).exists():
        raise InputError(f"--images {images}: no such folder or dataset")
    if pool_shards < 1:
        raise InputError(f"--pool-shards {pool_shards}: must be at least 1")
    if metadata is not None:
        read_metadata(metadata)
    return ZooRequest(str(checkpoint), str(images), layers, str(units), pool_shards, options,
                      None if features is None else str(features), reduction,
                      None if readout is None else readout.identity())


def start_scan(out: Path, request: ZooRequest, models: list[str], overwrite: bool) -> None:
    """The scan folder checked (new, or this request's to resume) and its record written."""
    check_scan_folder(out, request, overwrite)
    write_text(out / "zoo.json", json.dumps({"request": _jsonable(request), "models": models},
                                            indent=2))


def scan(checkpoint: str | Path, models: list[str], out: str | Path, images: str = "default",
         layers: str = "auto", units: str = "all", pool_shards: int = 4,
         shard: tuple[int, int] | None = None, overwrite: bool = False,
         cache_dir: str | Path | None = None, metadata: str | Path | None = None,
         features: str | None = None, reduction: str | None = None,
         **options) -> pd.DataFrame | None:
    """Scan this process's models; return the whole scan's unit table once every model is done
    (None while other processes still work)."""
    from ..metric.scorer import load

    out = Path(out)
    request = check_scan(checkpoint, images, layers, units, pool_shards, metadata, features,
                         reduction, models, **options)
    rank, world, torchrun = rank_and_world(shard)
    scorer = load(checkpoint, **({"cache_dir": cache_dir} if cache_dir else {}))
    if rank == 0 or not torchrun:
        start_scan(out, request, models, overwrite)
    group = _process_group() if torchrun else None
    if group:
        _barrier()  # the folder is checked and prepared before any rank writes into it
    mine = models[rank::world]
    finished = sum(model_file(out, spec).is_file() for spec in models)
    note("finished models", out / "models", finished, len(models))  # what an interruption keeps
    for n, spec in enumerate(mine, start=1):
        log.info("zoo: %s (%d of %d in this process)", spec, n, len(mine))
        done_before = model_file(out, spec).is_file()
        frame = scan_model(scorer, spec, request, out)
        finished += not done_before
        note("finished models", out / "models", finished, len(models))
        ok = frame["status"] == "ok"
        log.info("zoo: %s: %d units scored%s", spec, int(ok.sum()),
                 "" if ok.any() else f" ({frame['status'].iloc[0]})")
    if group:
        _barrier()
        if rank != 0:
            return None
    if not all_done(out, models):
        return None
    return write_scan(out, models, metadata)


def _process_group() -> bool:
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():  # one GPU per local rank where a node has several
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group("gloo")  # a barrier is all the scan needs from it
    return True


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def read_metadata(path: str | Path) -> pd.DataFrame:
    """The user's model table: a column `model` (a spec or label) and any of `top1`, `params`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--metadata {path}: no such file; a CSV with columns model, top1, params")
    table = pd.read_csv(path)
    if "model" not in table:
        raise InputError(f"--metadata {path}: no column 'model' (columns: {', '.join(table.columns)})")
    table["model"] = table["model"].astype(str).map(model_label)
    return table


def write_scan(out: Path, models: list[str], metadata=None) -> pd.DataFrame:
    """All models' rows into scores.parquet (+ .csv), the summaries and the report."""
    from .report import model_summary, write_report

    frames = [pd.read_parquet(model_file(out, spec)) for spec in models]
    units = pd.concat(frames, ignore_index=True)
    for column in UNIT_COLUMNS:
        if column not in units:
            units[column] = np.nan
    units = units[UNIT_COLUMNS + [c for c in units.columns if c not in UNIT_COLUMNS]]
    if (out / "work").is_dir() and not any((out / "work").iterdir()):
        (out / "work").rmdir()  # every model finished: no partial work is left
    save_table(units, out, "scores")
    natural = units[units["explanation"].fillna("natural") == "natural"] \
        if "explanation" in units else units  # the summaries are of natural exemplars
    summary = model_summary(natural, read_metadata(metadata) if metadata else None)
    save_table(summary, out, "summary_by_model")
    ok = natural[natural["status"] == "ok"]
    layers = (ok.groupby(["model", "layer"], sort=False)
              .agg(units=("score", "size"), mean_score=("score", "mean"),
                   depth=("layer_depth", "first"), width=("layer_width", "first"))
              .reset_index())
    save_table(layers, out, "summary_by_layer")
    write_report(units, summary, layers, out)
    return units
