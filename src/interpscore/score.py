"""Score units of any vision model with a trained metric, no humans needed.

    scorer = interpscore.load("checkpoints/default-.../best.ckpt")
    scores = scorer.score_units("resnet18@random", layers="auto", units=20, images="default")

The path reuses the stimulus code (one hooked pass over the pool for all units, streaming
exemplar selection) and the checkpoint's backbone with its embedding cache. It never imports
Lightning or the training code. The activation pass can be split over processes by pool shards
(`shard=(rank, world)`, or torchrun's RANK / WORLD_SIZE): each writes its shard file, the merge
reads them all, and finished shards are never computed again (resume after an interruption).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoint import LoadedMetric, load_checkpoint
from .errors import InputError
from .stimuli import Unit

DEFAULT_CACHE = ".cache/interpscore"


def parse_units(spec, channels: dict[str, int], seed: int) -> list[Unit]:
    """`all`, a number (IMI sampling), or explicit units (`layer:channel` strings or Units)."""
    from .stimuli import sample_units

    if spec in (None, "all"):
        return sample_units(channels, None, seed)
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.isdigit()):
        return sample_units(channels, int(spec), seed)
    units = []
    for item in spec:
        unit = item if isinstance(item, Unit) else Unit(str(item).rsplit(":", 1)[0],
                                                         int(str(item).rsplit(":", 1)[1]))
        if unit.layer not in channels or not 0 <= unit.channel < channels[unit.layer]:
            raise InputError(f"unit {unit.layer}:{unit.channel} is not among the layers scored "
                             f"({', '.join(f'{k} ({v})' for k, v in channels.items())})")
        units.append(unit)
    return units


def task_interval(p_tasks: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of a unit's score over its tasks (stimulus-sampling uncertainty)."""
    rng = np.random.default_rng(seed)
    means = p_tasks[rng.integers(0, len(p_tasks), (n_boot, len(p_tasks)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _save_table(frame: pd.DataFrame, out: Path, stem: str) -> None:
    """parquet and CSV, each written to a temporary file and renamed."""
    for suffix, write in ((".parquet", frame.to_parquet), (".csv", frame.to_csv)):
        tmp = out / f".{stem}{suffix}.tmp"
        write(tmp, index=False)
        tmp.replace(out / f"{stem}{suffix}")


class Scorer:
    """A trained metric ready to score units: its head and the backbone it reads."""

    def __init__(self, metric: LoadedMetric, cache_dir: str | Path = DEFAULT_CACHE):
        self.metric, self.cache_dir = metric, Path(cache_dir)
        self._cache = None

    @property
    def cache(self):
        if self._cache is None:
            from .backbones import EmbeddingCache, create_backbone

            backbone = create_backbone(self.metric.backbone, image_size=self.metric.image_size)
            self._cache = EmbeddingCache(self.cache_dir, backbone)
        return self._cache

    # -- scoring from exemplars ------------------------------------------------------------
    def _score_tasks(self, embeddings: torch.Tensor, tasks: list[list[tuple]], seed: int
                     ) -> list[dict]:
        """tasks[u] = [(q_max, q_min, refs_max, refs_min) as embedding row indices, ...]."""
        from .heads import unit_prediction
        from .tasks import TaskTensors, pad_rows, gather, summarise_tasks

        flat = [task for unit_tasks in tasks for task in unit_tasks]
        summaries = summarise_tasks(embeddings, [t[0] for t in flat], [t[1] for t in flat],
                                    [t[2] for t in flat], [t[3] for t in flat])
        starts = np.cumsum([0] + [len(t) for t in tasks])
        tensors = TaskTensors(**summaries, n=torch.zeros(len(flat)), k=torch.zeros(len(flat)),
                              condition_tasks=pad_rows([list(range(a, b)) for a, b in
                                                    zip(starts[:-1], starts[1:])]),
                              conditions=pd.DataFrame(index=range(len(tasks))))
        rows = []
        with torch.no_grad():
            for start in range(0, len(tasks), 256):
                batch = gather(tensors, range(start, min(start + 256, len(tasks))))
                p = self.metric.head(batch)
                for i, score in enumerate(unit_prediction(p, batch).tolist()):
                    p_tasks = p[i][batch["task_mask"][i]].numpy()
                    low, high = task_interval(p_tasks, seed=seed + start + i)
                    rows.append(dict(score=score, score_low=low, score_high=high,
                                     n_tasks=len(p_tasks)))
        return rows

    def score_exemplars(self, queries: list[tuple], refs_max: list[list], refs_min: list[list],
                        seed: int = 0) -> dict:
        """Score one unit from exemplar images you already have: per task, a (max query, min
        query) pair and its reference lists. Images are file paths or uint8 (3, H, W) tensors."""
        if not (len(queries) == len(refs_max) == len(refs_min)) or not queries:
            raise InputError("score_exemplars needs one (max, min) query pair and two reference "
                             "lists per task, and at least one task")
        items = [im for (q_max, q_min), rmax, rmin in zip(queries, refs_max, refs_min)
                 for im in (q_max, q_min, *rmax, *rmin)]
        if all(isinstance(im, (str, Path)) for im in items):
            embeddings = self.cache.embed_files([Path(p) for p in items], progress=False)
        else:
            from PIL import Image

            tensors = [im if isinstance(im, torch.Tensor) else torch.from_numpy(
                np.array(Image.open(im).convert("RGB"))).permute(2, 0, 1) for im in items]
            embeddings = self.cache.embed_images(tensors, progress=False)
        tasks, row = [], 0
        for rmax, rmin in zip(refs_max, refs_min):
            r_max = list(range(row + 2, row + 2 + len(rmax)))
            r_min = list(range(row + 2 + len(rmax), row + 2 + len(rmax) + len(rmin)))
            tasks.append((row, row + 1, r_max, r_min))
            row += 2 + len(rmax) + len(rmin)
        return self._score_tasks(torch.from_numpy(embeddings), [tasks], seed)[0]

    # -- scoring units of a model -----------------------------------------------------------
    def score_units(self, model: str, layers="auto", units=20, images="default",
                    difficulty: str = "easy", n_refs: int = 9, n_batches: int = 20,
                    image_size: int = 224, pool_size: int = 3000, max_refs_per_source=None,
                    seed: int = 0, batch_size: int = 64, out: str | Path | None = None,
                    save_stimuli: bool = False, shard: tuple[int, int] | None = None,
                    progress: bool = True) -> pd.DataFrame | None:
        """One row per requested unit: model, layer, channel, layer_depth, score (predicted HIS),
        score_low/high (95 % interval over tasks), n_tasks, activation sparsity and spatial
        contrast, status. With `shard=(rank, world)`
        only that rank's part of the activation pass is computed (into OUT/shards/) and None is
        returned; a call without `shard` merges all shards, computing any that are missing."""
        from .models import check_layers, layers_of_interest, load_model, module_depths
        from .pools import open_pool
        from .stimuli import keep_for, layer_channels, merge_rankings, select_all, write_store

        loaded = load_model(model, image_size=image_size)
        names = (layers_of_interest(loaded.module) if layers in (None, "auto")
                 else [layers] if isinstance(layers, str) else list(layers))
        check_layers(loaded.module, names)
        chosen = parse_units(units, layer_channels(loaded, names, image_size), seed)
        pool = open_pool(images, size=image_size, n_images=pool_size, seed=seed,
                         cache_dir=self.cache_dir / "pools")
        keep = keep_for(n_refs, n_batches)
        work = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="interpscore-"))
        shards = work / "shards"
        signature = json.dumps(dict(model=model, units=[(u.layer, u.channel) for u in chosen],
                                    pool=str(images), pool_size=len(pool), image_size=image_size,
                                    keep=keep, seed=seed), sort_keys=True)

        def shard_file(rank, world):
            return shards / f"activations-{rank}-of-{world}.pt"

        def compute(rank, world):
            from .stimuli import collect_rankings

            part = collect_rankings(loaded, pool, chosen, keep, batch_size=batch_size,
                                    seed=seed, progress=progress,
                                    indices=range(rank * len(pool) // world,
                                                  (rank + 1) * len(pool) // world))
            shards.mkdir(parents=True, exist_ok=True)
            tmp = shard_file(rank, world).with_suffix(".tmp")
            torch.save({"signature": signature, "rankings": part,
                        "skipped": getattr(pool, "skipped", {})}, tmp)
            tmp.replace(shard_file(rank, world))

        def read(rank, world):
            data = torch.load(shard_file(rank, world), weights_only=False)
            if data["signature"] != signature:
                raise InputError(f"{shard_file(rank, world)}: a shard of another scoring job; "
                                 "use another --out or delete the shards folder")
            return data

        if shard is None and (os.environ.get("WORLD_SIZE", "1") != "1"):
            shard = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        if shard is not None:
            rank, world = shard
            if not 0 <= rank < world:
                raise InputError(f"shard {rank} of {world}: rank must be in 0..{world - 1}")
            if out is None:
                raise InputError("sharded scoring needs an output folder for the shard files")
            if not shard_file(rank, world).exists():
                compute(rank, world)
            if rank != 0 or world > 1:
                return None
        world = max([int(p.stem.split("-of-")[1]) for p in shards.glob("activations-*-of-*.pt")],
                    default=1) if shards.is_dir() else 1
        for rank in range(world):  # resume: only missing shards are computed
            if not shard_file(rank, world).exists():
                compute(rank, world)
        parts = [read(rank, world) for rank in range(world)]
        rankings = merge_rankings([p["rankings"] for p in parts], keep, seed)
        skipped = {k: v for p in parts for k, v in p["skipped"].items()}
        if skipped:
            print(f"skipped {len(skipped)} unreadable image(s) of the pool, e.g. "
                  f"{next(iter(skipped.values()))}")
        exemplars, constant = select_all(rankings, pool.sources, chosen, n_refs, n_batches,
                                         [difficulty], max_refs_per_source, seed)
        used = sorted({i for ex in exemplars for b in range(n_batches) for i in
                       (*ex.refs_max[b], *ex.refs_min[b], *ex.queries[difficulty][b])})
        row_of = {image: r for r, image in enumerate(used)}
        embeddings = torch.from_numpy(self.cache.embed_images([pool[i] for i in used],
                                                              progress=progress))
        tasks = [[(row_of[q_max], row_of[q_min], [row_of[i] for i in ex.refs_max[b]],
                   [row_of[i] for i in ex.refs_min[b]])
                  for b, (q_max, q_min) in enumerate(ex.queries[difficulty])] for ex in exemplars]
        scored = dict(zip([ex.unit for ex in exemplars],
                          self._score_tasks(embeddings, tasks, seed) if tasks else []))
        stats = {ex.unit: ex.stats for ex in exemplars}
        depths = module_depths(loaded.module)
        rows = []
        for unit in chosen:
            row = dict(model=loaded.label, layer=unit.layer, channel=unit.channel,
                       layer_depth=depths[unit.layer], difficulty=difficulty)
            if unit in scored:
                rows.append({**row, **scored[unit], **stats[unit], "status": "ok"})
            else:
                rows.append({**row, "score": np.nan, "score_low": np.nan, "score_high": np.nan,
                             "n_tasks": 0, "status": "constant over the pool"})
        frame = pd.DataFrame(rows)
        if out is not None:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            _save_table(frame, out, "scores")
            summaries = summarise_scores(frame)
            for name, table in summaries.items():
                _save_table(table, out, f"summary_by_{name}")
            meta = dict(checkpoint=str(self.metric.path), backbone=self.metric.backbone,
                        model=model, images=str(images), pool_size=len(pool),
                        skipped_images=len(skipped), n_refs=n_refs, n_batches=n_batches,
                        difficulty=difficulty, seed=seed, constant_units=len(constant))
            (out / "score_config.json").write_text(json.dumps(meta, indent=2))
            if save_stimuli:
                write_store(out / "stimuli", loaded.label, exemplars, pool)
        return frame


def summarise_scores(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Mean predicted HIS per layer (with its depth) and per model, over the scored units."""
    ok = frame[frame["status"] == "ok"]
    stats = dict(units=("score", "size"), mean_score=("score", "mean"), sd=("score", "std"))
    return {"layer": ok.groupby(["model", "layer"]).agg(**stats, depth=("layer_depth", "first"))
            .reset_index().sort_values(["model", "depth"]),
            "model": ok.groupby("model").agg(**stats).reset_index()}


def load(checkpoint: str | Path, cache_dir: str | Path = DEFAULT_CACHE) -> Scorer:
    """`interpscore.load(CKPT)`: a Scorer for a checkpoint written by `python train.py`."""
    return Scorer(load_checkpoint(checkpoint), cache_dir)
