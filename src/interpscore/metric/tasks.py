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

from ..data.dataset import CONDITION_KEYS
from ..data.layouts import Task


@dataclass
class TaskTensors:
    """Per task, what every head reads, computed once from unit-norm image embeddings: the two
    queries, the means of the two reference sets, and each set's spread (mean cosine similarity
    of its members to their mean). Keeping summaries instead of every reference makes an
    IMI-sized epoch cheap; the similarity comparisons of MIS-like heads are exact from them."""

    q_max: torch.Tensor  # (T, D)
    q_min: torch.Tensor
    mean_max: torch.Tensor  # (T, D) mean of the max reference embeddings
    mean_min: torch.Tensor
    spread_max: torch.Tensor | None  # (T,); None where not summarised (`references=False`)
    spread_min: torch.Tensor | None
    ref_sims: torch.Tensor | None  # (T, 2, 2, R, S) query x reference set x reference x stage
    ref_mask: torch.Tensor  # (T, 2, R) which references exist (sets may differ in size)
    embeddings: torch.Tensor  # (N, D) the unit-norm embedding of every image, once
    query_index: torch.Tensor  # (T, 2) rows of `embeddings`: the max and the min query
    ref_index: torch.Tensor  # (T, 2, R) rows of the max and min references, -1 = none
    n: torch.Tensor  # (T,) trials per task (0 for unanswered tasks, e.g. when scoring)
    k: torch.Tensor  # (T,) correct trials
    condition_tasks: torch.Tensor  # (C, T_max) task index, -1 = padding
    conditions: pd.DataFrame  # one row per condition, aligned with condition_tasks
    stage_dims: tuple = ()  # widths of the backbone stages concatenated in an embedding

    @property
    def dim(self) -> int:
        return int(self.q_max.shape[1])


def pad_rows(rows: list[list[int]]) -> torch.Tensor:
    """Index lists of unequal length as one tensor, -1 marking the padding."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


def summarise_tasks(embeddings: torch.Tensor, tasks: list[Task], stage_dims: tuple = (),
                    references: bool = True, block: int = 64):
    """Task summaries from an embedding matrix and tasks whose images are its row indices: the
    queries, each reference set's mean and spread, and every query's similarity to every
    reference, stage by stage (`ref_sims` (T, 2 queries [max, min], 2 sets [max, min], R, S),
    `ref_mask` (T, 2, R)), so heads can read each reference, not only the set means, at a cost
    linear in images; and the normalised embedding table with each task's rows in it
    (`query_index`, `ref_index`) for heads that weigh every dimension of every reference.
    `references=False` leaves out (None) what only such heads read, `ref_sims` and the spreads:
    the queries and means are the same, at about half the cost.
    Tasks are summarised `block` at a time: a block's reference embeddings stay small enough to
    be reused from the allocator and the caches (all at once, 1k units' tasks took GBs and most
    of the time went to page faults); each task's numbers do not depend on the block size."""
    emb = torch.nn.functional.normalize(embeddings.float(), dim=1)
    stage_dims = list(stage_dims) or [emb.shape[1]]
    device = emb.device
    query_index = torch.tensor([[t.query_max, t.query_min] for t in tasks], dtype=torch.long)
    query_index = query_index.to(device)
    refs_of = [[t.refs_max for t in tasks], [t.refs_min for t in tasks]]
    width = max(len(r) for refs in refs_of for r in refs)
    ref_index = torch.stack([pad_rows([list(r) + [-1] * (width - len(r)) for r in refs])
                             for refs in refs_of], 1).to(device)  # (T, 2, R), -1 = none
    n_tasks, dim = len(tasks), emb.shape[1]
    out = {"q_max": emb[query_index[:, 0]], "q_min": emb[query_index[:, 1]], "embeddings": emb,
           "query_index": query_index, "ref_index": ref_index, "ref_mask": ref_index >= 0,
           "mean_max": emb.new_empty(n_tasks, dim), "mean_min": emb.new_empty(n_tasks, dim),
           "spread_max": None, "spread_min": None, "ref_sims": None}
    if references:
        out.update(spread_max=emb.new_empty(n_tasks), spread_min=emb.new_empty(n_tasks),
                   ref_sims=emb.new_empty(n_tasks, 2, 2, width, len(stage_dims)))
    # A missing reference reads a row of zeros (the last row of `table`).
    table = torch.cat([emb, emb.new_zeros(1, dim)])
    rows_of = torch.where(ref_index >= 0, ref_index, len(emb))
    for start in range(0, n_tasks, block):
        part = slice(start, start + block)
        queries = torch.stack([out["q_max"][part], out["q_min"][part]], 1).split(stage_dims, -1)
        for s, side in enumerate(("max", "min")):
            rows = rows_of[part, s]
            members = table.index_select(0, rows.flatten()).view(*rows.shape, dim)  # (B, R, D)
            mask = out["ref_mask"][part, s].float().unsqueeze(-1)
            mean = members.sum(1) / mask.sum(1).clamp(min=1)
            out[f"mean_{side}"][part] = mean
            if not references:
                continue
            spread = (members * mean.unsqueeze(1)).sum(-1).sum(1) / mask.sum((1, 2)).clamp(min=1)
            out[f"spread_{side}"][part] = spread / mean.norm(dim=1).clamp(min=1e-8)
            out["ref_sims"][part, :, s] = torch.stack(
                [torch.einsum("tqd,trd->tqr", q, m) for q, m in
                 zip(queries, members.split(stage_dims, -1))], -1)  # (B, 2, R, S)
    return out


def distinct_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of `matrix` and, for each row, its index among them: IMI stores an
    image once per task folder, so the same picture appears under many paths; the embedding
    table holds it once. Rows are compared byte for byte."""
    matrix = np.ascontiguousarray(matrix)
    rows = matrix.view(np.dtype((np.void, matrix.dtype.itemsize * matrix.shape[1]))).ravel()
    _, first, row = np.unique(rows, return_index=True, return_inverse=True)
    return matrix[first], row.ravel()


def build_task_tensors(trials: pd.DataFrame, conditions: pd.DataFrame, embed_paths,
                       stage_dims: tuple = ()) -> TaskTensors:
    """Group trials into tasks per condition. `embed_paths(list_of_paths) -> (N, D) array`."""
    trials = trials.assign(_refs_max=trials["refs_max"].map(tuple),
                           _refs_min=trials["refs_min"].map(tuple))
    task_keys = CONDITION_KEYS + ["query_max", "query_min", "_refs_max", "_refs_min"]
    tasks = (trials.groupby(task_keys, sort=True)["correct"].agg(["size", "sum"]).reset_index())
    by_path = [Task(*row) for row in zip(tasks["query_max"], tasks["query_min"],
                                          tasks["_refs_max"], tasks["_refs_min"])]
    paths = sorted({p for task in by_path for p in task.images()})
    matrix, row = distinct_rows(np.asarray(embed_paths(paths), dtype=np.float32))
    where = {p: int(r) for p, r in zip(paths, row)}
    embeddings = torch.from_numpy(matrix)
    conditions = conditions.reset_index(drop=True)
    position = {key: i for i, key in enumerate(map(tuple, conditions[CONDITION_KEYS].to_numpy()))}
    per_condition: list[list[int]] = [[] for _ in range(len(conditions))]
    for t, key in enumerate(map(tuple, tasks[CONDITION_KEYS].to_numpy())):
        if key in position:
            per_condition[position[key]].append(t)
    if any(not ts for ts in per_condition):
        missing = [c for c, ts in zip(conditions["unit_id"], per_condition) if not ts][:5]
        raise ValueError(f"conditions without any task: {missing}")
    summaries = summarise_tasks(embeddings, [t.map(where.__getitem__) for t in by_path],
                                stage_dims)
    return TaskTensors(
        **summaries,
        n=torch.tensor(tasks["size"].to_numpy(), dtype=torch.float32),
        k=torch.tensor(tasks["sum"].to_numpy(), dtype=torch.float32),
        condition_tasks=pad_rows(per_condition),
        conditions=conditions,
        stage_dims=tuple(stage_dims),
    )


class ImageTable:
    """The embedding table in a batch, by reference: a head that reads every reference's
    embedding takes the rows it needs (`table[index]`), the other heads never pay for a copy,
    and moving a batch to a device (Lightning moves tensors) leaves the table where it is."""

    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.matrix[index.to(self.matrix.device)].to(index.device)


def gather(tensors: TaskTensors, condition_ids) -> dict[str, torch.Tensor]:
    """A batch of conditions with their tasks' summaries: the input of every head."""
    ids = torch.as_tensor(condition_ids, dtype=torch.long)
    tasks = tensors.condition_tasks[ids]  # (B, T)
    task_mask = tasks >= 0
    t = tasks.clamp(min=0)
    batch = {name: getattr(tensors, name)[t] for name in
             ("q_max", "q_min", "mean_max", "mean_min", "spread_max", "spread_min", "ref_sims",
              "ref_mask", "query_index", "ref_index") if getattr(tensors, name) is not None}
    batch.update(embeddings=ImageTable(tensors.embeddings), task_mask=task_mask,
                 n=torch.where(task_mask, tensors.n[t], 0.0),
                 k=torch.where(task_mask, tensors.k[t], 0.0), condition=ids)
    return batch


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

    from ..data.dataset import load_prepared
    from ..errors import InputError
    from .backbones import EmbeddingCache

    data = load_prepared(data_dir)
    root = images_dir or dataset_info(data_dir).get("images")
    if not root or root == "None":
        raise InputError(f"{data_dir}: the dataset records no images root; pass the images "
                         "folder explicitly")
    cache = EmbeddingCache(cache_dir, backbone)
    return build_task_tensors(data["trials"].to_pandas(), data["units"].to_pandas(),
                              lambda paths: cache.embed_files([Path(root) / p for p in paths]),
                              backbone.stage_dims)
