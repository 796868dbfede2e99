"""2-AFC tasks as tensors: the shared input of every head, in training, evaluation and scoring.

A *condition* is one unit x mode x difficulty (one row of the `units` table); it holds several
*tasks* (one batch of references plus its two queries) and each task was answered by several
participants (`n` trials, `k` correct). Images are indices into one embedding matrix, so each image
is embedded once however many tasks show it. Pure torch: no Lightning needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

CONDITION_KEYS = ["unit_id", "mode", "difficulty"]


@dataclass
class TaskTensors:
    embeddings: torch.Tensor  # (N_images, D)
    q_max: torch.Tensor  # (T,) image index
    q_min: torch.Tensor
    refs_max: torch.Tensor  # (T, R) image index, -1 = padding
    refs_min: torch.Tensor
    n: torch.Tensor  # (T,) trials per task (0 for unanswered tasks, e.g. when scoring)
    k: torch.Tensor  # (T,) correct trials
    condition_tasks: torch.Tensor  # (C, T_max) task index, -1 = padding
    conditions: pd.DataFrame  # one row per condition, aligned with condition_tasks

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def _pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


def build_task_tensors(trials: pd.DataFrame, conditions: pd.DataFrame, embed_paths) -> TaskTensors:
    """Group trials into tasks per condition. `embed_paths(list_of_paths) -> (N, D) array`."""
    trials = trials.assign(_refs_max=trials["refs_max"].map(tuple),
                           _refs_min=trials["refs_min"].map(tuple))
    task_keys = CONDITION_KEYS + ["query_max", "query_min", "_refs_max", "_refs_min"]
    tasks = (trials.groupby(task_keys, sort=True)["correct"].agg(["size", "sum"]).reset_index())
    paths = sorted(set(tasks["query_max"]) | set(tasks["query_min"])
                   | {p for refs in tasks["_refs_max"] for p in refs}
                   | {p for refs in tasks["_refs_min"] for p in refs})
    where = {p: i for i, p in enumerate(paths)}
    embeddings = torch.from_numpy(np.asarray(embed_paths(paths), dtype=np.float32))
    conditions = conditions.reset_index(drop=True)
    position = {key: i for i, key in enumerate(map(tuple, conditions[CONDITION_KEYS].to_numpy()))}
    per_condition: list[list[int]] = [[] for _ in range(len(conditions))]
    for t, key in enumerate(map(tuple, tasks[CONDITION_KEYS].to_numpy())):
        if key in position:
            per_condition[position[key]].append(t)
    if any(not ts for ts in per_condition):
        missing = [c for c, ts in zip(conditions["unit_id"], per_condition) if not ts][:5]
        raise ValueError(f"conditions without any task: {missing}")
    return TaskTensors(
        embeddings=embeddings,
        q_max=torch.tensor([where[p] for p in tasks["query_max"]]),
        q_min=torch.tensor([where[p] for p in tasks["query_min"]]),
        refs_max=_pad([[where[p] for p in refs] for refs in tasks["_refs_max"]]),
        refs_min=_pad([[where[p] for p in refs] for refs in tasks["_refs_min"]]),
        n=torch.tensor(tasks["size"].to_numpy(), dtype=torch.float32),
        k=torch.tensor(tasks["sum"].to_numpy(), dtype=torch.float32),
        condition_tasks=_pad(per_condition),
        conditions=conditions,
    )


def gather(tensors: TaskTensors, condition_ids) -> dict[str, torch.Tensor]:
    """A batch of conditions with their tasks' embeddings: the input of every head."""
    ids = torch.as_tensor(condition_ids, dtype=torch.long)
    tasks = tensors.condition_tasks[ids]  # (B, T)
    task_mask = tasks >= 0
    t = tasks.clamp(min=0)
    emb = tensors.embeddings

    def images(index):  # index (..., ) with -1 padding
        return emb[index.clamp(min=0)], index >= 0

    refs_max, mask_max = images(tensors.refs_max[t])
    refs_min, mask_min = images(tensors.refs_min[t])
    n = torch.where(task_mask, tensors.n[t], 0.0)
    k = torch.where(task_mask, tensors.k[t], 0.0)
    return dict(q_max=emb[tensors.q_max[t]], q_min=emb[tensors.q_min[t]], refs_max=refs_max,
                refs_min=refs_min, mask_max=mask_max & task_mask[..., None],
                mask_min=mask_min & task_mask[..., None], task_mask=task_mask, n=n, k=k,
                condition=ids)


class ConditionDataset(torch.utils.data.Dataset):
    """Items are condition indices; `collate` gathers their tasks (DDP splits by condition)."""

    def __init__(self, tensors: TaskTensors, condition_ids):
        self.tensors, self.ids = tensors, list(condition_ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i]

    def collate(self, ids):
        return gather(self.tensors, ids)


def dataset_info(data_dir) -> dict:
    """`prepare_info.json` of a prepared dataset (source, images root, filters)."""
    import json
    from pathlib import Path

    info = Path(data_dir) / "prepare_info.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def load_task_tensors(data_dir, backbone, cache_dir, images_dir=None) -> TaskTensors:
    """Prepared dataset + backbone -> task tensors, embedding each image once (cached)."""
    from pathlib import Path

    from .backbones import EmbeddingCache
    from .dataset import load_prepared
    from .errors import InputError

    data = load_prepared(data_dir)
    root = images_dir or dataset_info(data_dir).get("images")
    if not root or root == "None":
        raise InputError(f"{data_dir}: the dataset records no images root; pass the images "
                         "folder explicitly")
    cache = EmbeddingCache(cache_dir, backbone)
    return build_task_tensors(data["trials"].to_pandas(), data["units"].to_pandas(),
                              lambda paths: cache.embed_files([Path(root) / p for p in paths]))
