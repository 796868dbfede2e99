"""Score units of any vision model with a trained metric, no humans needed.

    scorer = interpscore.load("checkpoints/default-.../best.ckpt")
    scores = scorer.score_units("resnet18@random", layers="auto", units=20, images="default")

The path reuses the stimulus code (one hooked pass over the pool for all units, streaming
exemplar selection) and the checkpoint's backbone with its embedding cache. It never imports
Lightning or the training code. Both passes survive an interruption (`resume`): the activation
pass runs in chunks saved under the cache as they finish, the embeddings are appended to the
cache chunk by chunk, and a rerun computes only what is missing. The activation pass can also be
split over processes by pool shards (`compute_shard(rank, world)`): each writes its shard file
under OUT/shards/, and `score_units` with the same OUT merges them, computing only the shards
that are missing.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_file, files_into
from ..correlation import percentile_interval
from ..data.layouts import Task
from ..errors import InputError
from ..protocol import IMI
from ..resources import DEFAULT_CACHE
from ..stimuli.options import ScoringOptions
from .checkpoint import LoadedMetric, load_checkpoint
from .jobs import Job as _Job
from .jobs import select_exemplars, write_stimuli


def task_interval(p_tasks: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of a unit's score over its tasks (stimulus-sampling uncertainty)."""
    rng = np.random.default_rng(seed)
    means = p_tasks[rng.integers(0, len(p_tasks), (n_boot, len(p_tasks)))].mean(1)
    low, high = percentile_interval(means)
    return low, high


def save_table(frame: pd.DataFrame, out: Path, stem: str) -> None:
    """parquet and CSV, each written atomically."""
    for suffix, write in ((".parquet", frame.to_parquet), (".csv", frame.to_csv)):
        with atomic_file(out / f"{stem}{suffix}") as tmp:
            write(tmp, index=False)


class Scorer:
    """A trained metric ready to score units: its head and the backbone it reads."""

    def __init__(self, metric: LoadedMetric, cache_dir: str | Path = DEFAULT_CACHE):
        self.metric, self.cache_dir = metric, Path(cache_dir)
        self._cache = None

    @property
    def cache(self):
        if self._cache is None:
            from .backbones import EmbeddingCache, create_backbone

            backbone = self.metric.built or create_backbone(self.metric.backbone,
                                                            image_size=self.metric.image_size)
            self._cache = EmbeddingCache(self.cache_dir, backbone)
        return self._cache

    # -- scoring from exemplars ------------------------------------------------------------
    def score_tasks(self, embeddings: torch.Tensor, tasks: list[list[Task]], seed: int
                    ) -> list[dict]:
        """One row (score, score_low, score_high, n_tasks) per unit: tasks[u] = unit u's tasks,
        their images as row indices of `embeddings` (this scorer's backbone). The door for
        exemplars found elsewhere (e.g. a simulator's tasks) as well as the scorer's own."""
        from ..stimuli.networks import default_device
        from .heads import unit_prediction
        from .tasks import TaskTensors, gather, pad_rows, summarise_tasks

        device = default_device()  # task summaries and the head run on the GPU where there is one
        head = self.metric.head.to(device)
        flat = [task for unit_tasks in tasks for task in unit_tasks]
        summaries = summarise_tasks(embeddings.to(device), flat, self.cache.backbone.stage_dims,
                                    references=getattr(head, "reads_references", True))
        starts = np.cumsum([0] + [len(t) for t in tasks])
        tensors = TaskTensors(**summaries, n=torch.zeros(len(flat)), k=torch.zeros(len(flat)),
                              condition_tasks=pad_rows([list(range(a, b)) for a, b in
                                                        zip(starts[:-1], starts[1:])]),
                              conditions=pd.DataFrame(index=range(len(tasks))),
                              stage_dims=self.cache.backbone.stage_dims)
        rows = []
        with torch.no_grad():
            for start in range(0, len(tasks), 256):
                batch = gather(tensors, range(start, min(start + 256, len(tasks))))
                batch = {key: value.to(device) if torch.is_tensor(value) else value
                         for key, value in batch.items()}  # the table stays by reference
                p = head(batch)
                scores = unit_prediction(p, batch).cpu()
                p, mask = p.float().cpu(), batch["task_mask"].cpu()
                for i, score in enumerate(scores.tolist()):
                    p_tasks = p[i][mask[i]].numpy()
                    low, high = task_interval(p_tasks, seed=seed + start + i)
                    rows.append(dict(score=score, score_low=low, score_high=high,
                                     n_tasks=len(p_tasks)))
        return rows

    def score_exemplars(self, queries: list[tuple], refs_max: list[list], refs_min: list[list],
                        seed: int = 0) -> dict:
        """Score one unit from exemplar images you already have: per task, a (max query, min
        query) pair and its reference lists. Images are file paths or uint8 (3, H, W) tensors."""
        from ..stimuli.pools import read_image

        if not (len(queries) == len(refs_max) == len(refs_min)) or not queries:
            raise InputError("score_exemplars needs one (max, min) query pair and two reference "
                             "lists per task, and at least one task")
        given = [Task(q_max, q_min, rmax, rmin)
                 for (q_max, q_min), rmax, rmin in zip(queries, refs_max, refs_min)]
        items = [im for task in given for im in task.images()]
        if all(isinstance(im, (str, Path)) for im in items):
            embeddings = self.cache.embed_files([Path(p) for p in items], progress=False)
        else:
            tensors = [im if isinstance(im, torch.Tensor) else read_image(im) for im in items]
            embeddings = self.cache.embed_images(tensors, progress=False)
        rows = iter(range(len(items)))  # each image is embedded where it stands in `items`
        tasks = [task.map(lambda _: next(rows)) for task in given]
        return self.score_tasks(torch.from_numpy(embeddings), [tasks], seed)[0]

    # -- scoring units of a model -----------------------------------------------------------
    def _options(self, options: dict) -> ScoringOptions:
        checked = ScoringOptions.from_kwargs(options)
        if checked.image_size is None:  # the size the metric was trained at
            checked.image_size = self.metric.image_size or IMI.image_size
        return checked

    def job(self, model, layers="auto", units=20, images="default",
            out: str | Path | None = None, readout=None, **options) -> "_Job":
        """A scoring request, checked and ready (model built, units chosen, pool open), whose
        activation pass can run in shards saved under OUT/shards/ (`job.compute_shard`).
        `model` is a spec, or a `LoadedModel` already built (the monitor's: a user's module
        during training); `readout` (`stimuli.readouts`) makes the units' activations;
        default: channels."""
        return _Job(model, layers, units, images, self._options(options), self.cache_dir,
                    Path(out) if out is not None else None, readout)

    def compute_shard(self, model: str, rank: int, world: int, out: str | Path, layers="auto",
                      units=20, images="default", **options) -> Path:
        """One process's part of a sharded activation pass (pool slice `rank` of `world`),
        saved under OUT/shards/; `score_units(..., out=OUT)` merges the shards."""
        if not 0 <= rank < world:
            raise InputError(f"--shard {rank}/{world}: rank must be in 0..{world - 1}")
        return self.job(model, layers, units, images, out, **options).compute_shard(rank, world)

    def score_job(self, job: "_Job", rankings: dict | None = None,
                  skipped: dict | None = None) -> pd.DataFrame:
        """Score a job's units from its activation pass (`job.merged()`: shards or chunks,
        computing the missing ones), or from `rankings` already computed
        (`job.rankings()["rankings"]`) and their unreadable images `skipped`."""
        if rankings is None:
            rankings, skipped = job.merged()
        elif skipped is None:
            skipped = dict(getattr(job.pool, "skipped", {}))
        exemplars, dropped = select_exemplars(job, rankings)
        frame = self._unit_rows(job, exemplars, dropped)
        if "synthetic" in job.options.explanation_kinds:
            frame = self._with_synthetic(frame, job, exemplars, rankings)
        else:
            frame = frame.assign(explanation="natural")
        frame.attrs["skipped_images"] = skipped
        frame.attrs["dropped"] = len(dropped)
        job.exemplars = exemplars  # for --save-stimuli
        return frame

    def score_units(self, model: str, layers="auto", units=20, images="default",
                    out: str | Path | None = None, save_stimuli: bool = False,
                    readout=None, **options) -> pd.DataFrame:
        """One row per requested unit: model, layer, channel, layer_depth, score (predicted HIS),
        score_low/high (95 % interval over tasks), n_tasks, activation sparsity and spatial
        contrast, status. `options` are the fields of `ScoringOptions`. With OUT, the tables
        are written there and shard files a sharded run left there are merged.
        `frame.attrs["skipped_images"]` holds the pool images that could not be read."""
        job = self.job(model, layers, units, images, out, readout=readout, **options)
        return self._run(job, out, save_stimuli)

    def score_features(self, model: str, features, layer: str | None = None, units="all",
                       images="default", reduction: str | None = None,
                       out: str | Path | None = None, save_stimuli: bool = False,
                       **options) -> pd.DataFrame:
        """Score features of one layer: `features` is an SAE file of `interpscore sae fit`, a
        direction matrix [C, k] (file, tensor or array; with `layer`), an object with
        `encode` (with `layer`), or a `stimuli.readouts.Readout`. `reduction` over positions:
        mean (IMI's, the default), max, or cls. Rows as `score_units`, `channel` being the
        feature's index, with the readout's identity."""
        from ..stimuli.readouts import open_features

        readout = open_features(features, layer, reduction)
        job = self.job(model, readout.layer, units, images, out, readout=readout, **options)
        return self._run(job, out, save_stimuli)

    def score_activations(self, activations, images="default", units="all",
                          model: str = "activations", out: str | Path | None = None,
                          save_stimuli: bool = False, **options) -> pd.DataFrame:
        """Score the units of a precomputed activation matrix [n_images, n_units] (a file, see
        `stimuli.matrix`; an array or tensor whose rows are the pool's images in order; or a
        DataFrame with an `image` column) over the pool `images`. `units`: all, N (a seeded
        sample of columns) or unit names. `model` only labels the rows."""
        from .jobs import MatrixJob

        job = MatrixJob(activations, images, units, model, self._options(options),
                        self.cache_dir)
        return self._run(job, out, save_stimuli)

    def _run(self, job, out, save_stimuli: bool) -> pd.DataFrame:
        frame = self.score_job(job)
        if out is not None:
            self._write(frame, job, Path(out), frame.attrs["dropped"], save_stimuli,
                        job.exemplars)
        job.discard_chunks()  # done: an interruption up to here resumed from them
        return frame

    def _unit_rows(self, job: _Job, exemplars: list, dropped: dict) -> pd.DataFrame:
        from ..stimuli.matrix import image_names

        o = job.options
        by_pool = [ex.tasks(o.difficulty) for ex in exemplars]
        used = sorted({i for unit_tasks in by_pool for task in unit_tasks for i in task.images()})
        row_of = {image: r for r, image in enumerate(used)}
        embeddings = job.embeddings(self.cache, used)
        tasks = [[task.map(row_of.__getitem__) for task in unit_tasks] for unit_tasks in by_pool]
        # In chunks of units, so memory stays bounded for a whole model; small ones (a chunk's
        # task tensors a few MB, reused from the allocator: chunks of 256 units page-faulted
        # tens of MB in afresh each time); the seed offset keeps each unit's interval what it
        # is in one call.
        chunk = 32
        scored = dict(zip([ex.unit for ex in exemplars],
                          [row for c in range(0, len(tasks), chunk)
                           for row in self.score_tasks(embeddings, tasks[c:c + chunk],
                                                       o.seed + c)]))
        stats = {ex.unit: ex.stats for ex in exemplars}
        names = image_names(job.pool)
        # The exemplars by image (file name, or index in the default pool), as JSON lists.
        shown = {ex.unit: dict(
            exemplars_max=json.dumps([[names[i] for i in b] for b in ex.refs_max]),
            exemplars_min=json.dumps([[names[i] for i in b] for b in ex.refs_min]),
            queries=json.dumps([[names[a], names[b]] for a, b in ex.queries[o.difficulty]]))
            for ex in exemplars}
        rows = []
        for unit, row in job.unit_columns().items():
            row = {**row, "difficulty": o.difficulty}
            if unit in scored:
                rows.append({**row, **scored[unit], **stats[unit], **shown[unit],
                             "status": "ok"})
            else:
                rows.append({**row, "score": np.nan, "score_low": np.nan, "score_high": np.nan,
                             "n_tasks": 0, "status": dropped[unit]})
        return pd.DataFrame(rows)

    def _with_synthetic(self, frame, job: _Job, exemplars, rankings) -> pd.DataFrame:
        """The rows of `frame` for the explanations asked for, plus one row per unit scored with
        feature visualisations as its references (IMI's synthetic condition: the natural
        queries, `stimuli.visualize`'s 9 max and 9 min images), with IMI's check of them."""
        from ..stimuli.visualize import VisualizationOptions, visualize_units

        o = job.options
        made = visualize_units(job.model, [ex.unit for ex in exemplars],
                               VisualizationOptions(size=o.image_size, seed=o.seed,
                                                    n_images=o.n_refs), natural=rankings,
                               readout=job.readout)
        images = [torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)
                  for v in made for side in ("max", "min") for picture in v.sides[side].images]
        queries = sorted({i for ex in exemplars for pair in ex.queries[o.difficulty] for i in pair})
        images += [job.pool[i] for i in queries]
        embeddings = torch.from_numpy(self.cache.embed_images(images, progress=o.progress))
        row_of = {image: len(made) * 2 * o.n_refs + r for r, image in enumerate(queries)}
        tasks = []
        for u, ex in enumerate(exemplars):  # the natural queries, the visualisations as references
            first = u * 2 * o.n_refs
            refs_max = list(range(first, first + o.n_refs))
            refs_min = list(range(first + o.n_refs, first + 2 * o.n_refs))
            tasks.append([Task(row_of[t.query_max], row_of[t.query_min], refs_max, refs_min)
                          for t in ex.tasks(o.difficulty)])
        scored = self.score_tasks(embeddings, tasks, o.seed)
        natural = frame.set_index(["layer", "channel"])
        rows = [{**natural.loc[(v.unit.layer, v.unit.channel)].to_dict(), "layer": v.unit.layer,
                 "channel": v.unit.channel, **score, **{k: w for k, w in v.stats().items()
                                                         if k not in ("layer", "channel")},
                 "explanation": "synthetic", "status": "ok"} for v, score in zip(made, scored)]
        out = [frame.assign(explanation="natural")] if "natural" in o.explanation_kinds else []
        return pd.concat(out + [pd.DataFrame(rows)], ignore_index=True)

    def _write(self, frame, job: _Job, out: Path, n_constant: int, save_stimuli: bool,
               exemplars) -> None:
        """The scores, summaries, config (and stimuli) move into OUT together once all are
        written; only entries of those names are replaced (the shards cache stays)."""
        with files_into(out) as tmp:
            save_table(frame, tmp, "scores")
            for name, table in summarise_scores(frame).items():
                save_table(table, tmp, f"summary_by_{name}")
            meta = dict(asdict(job.options), checkpoint=str(self.metric.path),
                        backbone=self.metric.backbone, model=job.spec, images=str(job.images),
                        readout=job.identity,
                        pool_size=len(job.pool),
                        skipped_images=len(frame.attrs["skipped_images"]),
                        constant_units=n_constant)
            (tmp / "score_config.json").write_text(json.dumps(meta, indent=2))
            if save_stimuli:
                from ..stimuli.gallery import gallery_html

                write_stimuli(job, exemplars, tmp / "stimuli")
                (tmp / "exemplars.html").write_text(gallery_html(
                    frame, job.options.n_refs, title=f"{job.label}: exemplars"))


def summarise_scores(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Mean predicted HIS per layer (with its depth) and per model, over the scored units, for
    each kind of explanation (natural exemplars, synthetic visualisations)."""
    ok = frame[frame["status"] == "ok"]
    if "explanation" not in ok:
        ok = ok.assign(explanation="natural")
    stats = dict(units=("score", "size"), mean_score=("score", "mean"), sd=("score", "std"))
    return {"layer": ok.groupby(["model", "explanation", "layer"])
            .agg(**stats, depth=("layer_depth", "first")).reset_index()
            .sort_values(["model", "explanation", "depth"]),
            "model": ok.groupby(["model", "explanation"]).agg(**stats).reset_index()}


def load(checkpoint: str | Path, cache_dir: str | Path = DEFAULT_CACHE) -> Scorer:
    """`interpscore.load(CKPT)`: a Scorer for a checkpoint written by `python train.py`."""
    return Scorer(load_checkpoint(checkpoint), cache_dir)
