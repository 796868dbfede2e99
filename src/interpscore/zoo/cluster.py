"""A zoo scan as SLURM array jobs (submitit), beside torchrun's ranks in one allocation.

    interpscore zoo --launcher submitit --slurm-partition gpu --slurm-gpus-per-task 1 ...

Three steps, each resumable the way a one-process scan is (the same files mark what is done):
1. an array of activation passes, one task per (model, pool shard) still missing: each saves
   `OUT/work/<model>/shards/activations-R-of-W.pt`, the file a one-process scan saves;
2. an array of scoring tasks, one per model not yet in `OUT/models/`: each reads its model's
   shards and writes `OUT/models/<model>.parquet` (`scan_model`, as the one-process scan does);
3. here, once every model is done, the tables and report (`write_scan`).
So the outputs are a one-process scan's, and a rerun submits only the work that is missing.
This process waits for the jobs; a job that fails is reported with its log, and the scan stops
before the next step (rerun the same command to resume once the cause is fixed).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..metric.jobs import shard_file
from .options import LaunchOptions
from .scan import (ZooRequest, all_done, check_scan, model_file, scan_model, scan_shard,
                   start_scan, work_folder, write_scan)

log = logging.getLogger(__name__)


def check_launcher(launch: LaunchOptions, shard: str | None = None) -> None:
    """Before any work: the launcher can run here (submitit installed, SLURM's sbatch on PATH),
    and no option of one launcher is given to the other."""
    if launch.launcher == "local":
        given = [flag for flag, value, default in _cluster_flags(launch) if value != default]
        if given:
            raise InputError(f"{given[0]}: only used with --launcher submitit; add "
                             "--launcher submitit, or drop it")
        return
    if shard is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--shard: the submitit launcher makes its own array jobs; drop --shard "
                         "and run it once, not under torchrun (or use --launcher local)")
    if importlib.util.find_spec("submitit") is None:
        raise InputError("--launcher submitit: submitit is not installed; install it with "
                         "`pip install 'interpscore[cluster]'` (or `pip install submitit`)")
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]  # submitit calls both
    if launch.submitit_cluster == "slurm" and missing:
        raise InputError(f"--submitit-cluster slurm: no `{missing[0]}` on PATH, so no SLURM job "
                         "can be submitted from here; run on a SLURM login node, or pass "
                         "--submitit-cluster local to try the scan on this machine")


def _cluster_flags(launch: LaunchOptions):
    defaults = LaunchOptions()
    return [("--" + name.replace("_", "-"), getattr(launch, name), getattr(defaults, name))
            for name in vars(defaults) if name != "launcher"]


@dataclass(frozen=True)
class ShardTask:
    """One array task of step 1: pool slice `rank` of one model's activation pass."""

    spec: str
    rank: int


def plan(out: Path, models: list[str], request: ZooRequest) -> tuple[list[ShardTask], list[str]]:
    """The activation passes still to run and the models still to score: a model in
    `OUT/models/` needs neither; a saved pool shard is not run again."""
    pending = [spec for spec in models if not model_file(out, spec).is_file()]
    world = request.pool_shards
    tasks = [ShardTask(spec, rank) for spec in pending for rank in range(world)
             if not shard_file(work_folder(out, spec) / "shards", rank, world).is_file()]
    return tasks, pending


@dataclass(frozen=True)
class Context:
    """What every array task needs (pickled into its job by submitit)."""

    out: Path
    request: ZooRequest
    cache_dir: str | None


@functools.lru_cache(maxsize=2)
def _scorer(checkpoint: str, cache_dir: str | None):
    from ..metric.scorer import load

    return load(checkpoint, **({"cache_dir": cache_dir} if cache_dir else {}))


def run_shard(context: Context, task: ShardTask) -> None:
    """Step 1's array task."""
    scorer = _scorer(context.request.checkpoint, context.cache_dir)
    scan_shard(scorer, task.spec, context.request, context.out, task.rank)


def run_model(context: Context, spec: str) -> str:
    """Step 2's array task: the model's rows from its shards; returns its status."""
    scorer = _scorer(context.request.checkpoint, context.cache_dir)
    return str(scan_model(scorer, spec, context.request, context.out)["status"].iloc[0])


@dataclass
class Failure:
    """An array job that did not finish: what it ran, its id, its error and its log."""

    task: str
    job_id: str
    error: str
    log: Path


@dataclass
class ClusterScan:
    """What a cluster scan submitted and what came of it; `units` is the scan's table once every
    model is done (None when a job failed)."""

    shard_tasks: list[ShardTask] = field(default_factory=list)
    model_tasks: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    units: pd.DataFrame | None = None


def executor_for(launch: LaunchOptions, folder: Path):
    """submitit's AutoExecutor with the scan's SLURM settings (`local`/`debug` take the time and
    GPU count and ignore the rest)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=launch.submitit_cluster)
    executor.update_parameters(
        name="interpscore-zoo", timeout_min=launch.slurm_time, nodes=1, tasks_per_node=1,
        slurm_partition=launch.slurm_partition, slurm_gpus_per_task=launch.slurm_gpus_per_task,
        slurm_array_parallelism=launch.slurm_array_parallelism)
    if launch.submitit_cluster == "local" and launch.slurm_gpus_per_task:
        executor.update_parameters(gpus_per_node=launch.slurm_gpus_per_task)
    return executor


def _submit(executor, function, context: Context, items: list, poll_s: float) -> list[Failure]:
    """One array job of `function(context, item)` per item; waits for all; their failures."""
    import submitit

    with submitit.helpers.clean_env():  # from inside a SLURM job, the jobs must not inherit it
        jobs = executor.map_array(function, [context] * len(items), items)
    log.info("zoo: submitted %d array job(s) of %s (first id %s)", len(jobs), function.__name__,
             jobs[0].job_id if jobs else "-")
    failures, pending = [], dict(enumerate(jobs))
    while pending:
        for i, job in list(pending.items()):
            try:
                finished = job.done()
            except Exception:  # the debug executor runs the job inside done() and raises its error
                finished = True
            if not finished:
                continue
            del pending[i]
            error = job.exception()
            if error is not None:
                text = str(error).strip().splitlines()
                failures.append(Failure(str(items[i]), str(job.job_id),
                                        f"{type(error).__name__}: {text[-1] if text else ''}"[:300],
                                        job.paths.stderr))
        if pending:
            time.sleep(poll_s)
    return failures


def submit_scan(checkpoint: str | Path, models: list[str], out: str | Path,
                launch: LaunchOptions, images: str = "default", layers: str = "auto",
                units: str = "all", pool_shards: int = 4, overwrite: bool = False,
                cache_dir: str | Path | None = None, metadata: str | Path | None = None,
                **options) -> ClusterScan:
    """Run the missing steps of a scan as array jobs and merge it; what was submitted, what
    failed, and the unit table once every model is done."""
    from ..metric.checkpoint import load_checkpoint

    out = Path(out)
    check_launcher(launch)
    request = check_scan(checkpoint, images, layers, units, pool_shards, metadata,
                         models=models, **options)
    load_checkpoint(checkpoint)  # a checkpoint that does not load fails here, not in a job
    start_scan(out, request, models, overwrite)
    folder = Path(launch.submitit_folder) if launch.submitit_folder else out / "submitit"
    executor = executor_for(launch, folder / "%j")
    context = Context(out, request, str(cache_dir) if cache_dir else None)
    poll_s = 30.0 if launch.submitit_cluster == "slurm" else 0.5
    result = ClusterScan()
    result.shard_tasks, _ = plan(out, models, request)
    if result.shard_tasks:
        result.failures = _submit(executor, run_shard, context, result.shard_tasks, poll_s)
        if result.failures:
            return result
    _, result.model_tasks = plan(out, models, request)
    if result.model_tasks:
        result.failures = _submit(executor, run_model, context, result.model_tasks, poll_s)
        if result.failures:
            return result
    if all_done(out, models):
        result.units = write_scan(out, models, metadata)
    return result
