"""Speed of training on cached embeddings at IMI scale (target: an epoch in <= 2 s on 2 CPU cores).

An IMI-sized problem: ~2,500 conditions (767 units x modes x difficulties) with 20 tasks each,
~76k trials, ~170k distinct images embedded in 1776 dimensions (EfficientNet-Lite0's five
stages). Embeddings are random vectors: speed does not depend on their values. Task summaries
(queries, reference means and spreads, every query-reference similarity per stage) are computed
once, then every epoch reads only them: the per-reference heads (`pooled`, `attention`) read the
(tasks x 2 x 2 x 9 x 5) similarities, `pooled_dims` and `pooled_lowrank` the batch's rows of
the embedding table.
An epoch here is one pass of AdamW steps over batches of 32 conditions, for every head alike;
the fitted heads (`stagemis`, `pooled`, `pooled_dims`, `pooled_lowrank`, `attention`) are
trained on the default by L-BFGS instead, several full-batch fits for the leave-one-model-out
choice of their shrinkage: their real cost is in `heads_ablation.json` (`fit_seconds`).
Prints JSON.

    python benchmarks/train_epoch.py [--out benchmarks/results/train_epoch.json]
"""

import argparse
import platform
import time

import pandas as pd
import torch

from interpscore.data.layouts import Task
from interpscore.metric.heads import create_head, nll
from interpscore.metric.tasks import ConditionDataset, TaskTensors, summarise_tasks

from common import emit


LITE0_STAGES = (24, 40, 112, 320, 1280)
HEADS = ("mis", "stagemis", "pooled", "attention", "pooled_dims", "pooled_lowrank", "twoafc",
         "setreg")


def imi_sized(conditions=2500, tasks_per_condition=20, refs=9, images=170_000,
              stage_dims=LITE0_STAGES, trials=76_000, seed=0) -> TaskTensors:
    g = torch.Generator().manual_seed(seed)
    n_tasks = conditions * tasks_per_condition
    embeddings = torch.randn(images, sum(stage_dims), generator=g)
    pick = lambda *shape: torch.randint(0, images, shape, generator=g)  # noqa: E731
    start = time.perf_counter()
    tasks = [Task(*t) for t in zip(pick(n_tasks).tolist(), pick(n_tasks).tolist(),
                                   pick(n_tasks, refs).tolist(), pick(n_tasks, refs).tolist())]
    summaries = summarise_tasks(embeddings, tasks, stage_dims)
    imi_sized.summary_seconds = time.perf_counter() - start
    n = torch.full((n_tasks,), trials / n_tasks)
    return TaskTensors(**summaries, n=n, k=(n * 0.8).round(),
                       condition_tasks=torch.arange(n_tasks).view(conditions, tasks_per_condition),
                       conditions=pd.DataFrame({"unit_id": range(conditions)}),
                       stage_dims=tuple(stage_dims))


def time_epoch(tensors, head_name, batch_size=32):
    torch.manual_seed(0)
    head = create_head(head_name, tensors.dim, stage_dims=tensors.stage_dims)
    dataset = ConditionDataset(tensors, range(len(tensors.conditions)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         collate_fn=dataset.collate)
    start = time.perf_counter()
    if head_name == "mis":
        head.fit_alpha(loader)
    else:
        optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
        for batch in loader:
            loss = nll(head(batch), batch, head.level) + head.regularization()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    tensors = imi_sized()
    result = {"benchmark": "train_epoch_imi_sized", "torch_threads": torch.get_num_threads(),
              "machine": platform.machine(), "conditions": len(tensors.conditions),
              "tasks": int(tensors.q_max.shape[0]), "trials": int(tensors.n.sum()),
              "images": 170_000, "dim": tensors.dim,
              "task_summaries_seconds": round(imi_sized.summary_seconds, 2),
              "epoch_seconds": {h: round(time_epoch(tensors, h), 2)
                                for h in HEADS}}
    emit(result, args.out)


if __name__ == "__main__":
    main()
