"""How a zoo scan is launched: in this process (torchrun ranks or `--shard`), or as SLURM array
jobs through submitit. Light (no torch, no submitit), so `--help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import POSITIVE_INT, minutes, option

LAUNCHERS = ("local", "submitit")
CLUSTERS = ("slurm", "local", "debug")  # local and debug: submitit's stand-ins, for trying it


@dataclass
class LaunchOptions:
    launcher: str = option("local", "local: this process (or the ranks torchrun starts); "
                           "submitit: SLURM array jobs, one per (model, pool shard), then one "
                           "per model to score it; this process waits and merges",
                           choices=LAUNCHERS)
    slurm_partition: str | None = option(None, "SLURM partition of the array jobs "
                                         "(default: the cluster's)")
    slurm_time: int = option(60, "time limit of each array job: minutes, H:MM:SS or D-H:MM:SS",
                             minutes)
    slurm_gpus_per_task: int | None = option(None, "GPUs of each array job (default: none)",
                                             POSITIVE_INT)
    slurm_array_parallelism: int = option(64, "array jobs running at once, at most",
                                          POSITIVE_INT)
    submitit_folder: str | None = option(None, "where submitit writes its job files and logs "
                                         "(default: OUT/submitit)")
    submitit_cluster: str = option("slurm", "slurm, or submitit's stand-ins to try a scan "
                                   "here: local (a process per job), debug (in this process; a failing job opens pdb)",
                                   choices=CLUSTERS)
