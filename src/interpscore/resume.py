"""Passes that survive an interruption. A pass is split into chunks; each chunk is saved when
done (atomically: a temporary sibling, then a rename) in a folder named by everything that
determines it, so a rerun computes only the chunks not yet on disk, and an uninterrupted run and
an interrupted-then-resumed one give the same bytes. `run_chunks` is the one loop: the
activation pass (`metric.jobs`) and the embedding pass (`metric.backbones.EmbeddingCache`) both
run through it. It also keeps a tally of what is on disk (`kept`), which an interrupted command
reports. Light: torch is imported where a chunk is read or written."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .atomic import atomic_file
from .errors import InputError

CHUNKS = 8  # chunks of a pass: an interruption loses at most about an eighth of it
log = logging.getLogger(__name__)


def keyed_folder(root: str | Path, kind: str, key: str) -> Path:
    """The one naming rule of the caches: ROOT/KIND/<sha1 of KEY, 16 hex digits>, KEY being a
    text of everything that determines what the folder holds."""
    return Path(root) / kind / hashlib.sha1(key.encode()).hexdigest()[:16]


def chunk_bounds(n: int, batch_size: int, chunks: int = CHUNKS) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of n items: whole batches of `batch_size` (so a network sees
    the batches of an unchunked pass), at most `chunks` chunks, as equal as batches allow."""
    batches = -(-n // batch_size)
    count = min(chunks, batches)
    edges = [min(n, (k * batches // count) * batch_size) for k in range(count + 1)] if count else []
    return list(zip(edges[:-1], edges[1:]))


@dataclass
class Kept:
    """What a pass has on disk: `done` of its `total` chunks (`what`, e.g. "activation chunks")
    in `folder`."""

    what: str
    folder: Path
    done: int
    total: int


_KEPT: dict[Path, Kept] = {}  # by folder: the passes of this process whose chunks are on disk


def kept() -> list[Kept]:
    """The passes this process ran (since `forget`) whose chunks are still on disk."""
    return list(_KEPT.values())


def forget() -> None:
    """Start a new tally (a command's start)."""
    _KEPT.clear()


def note(what: str, folder: str | Path, done: int, total: int) -> None:
    """Tally resumable work kept by other means than `run_chunks` (a zoo's finished models)."""
    _KEPT[Path(folder)] = Kept(what, Path(folder), done, total)


def discard(folder: str | Path) -> None:
    """A finished pass's chunks are no longer needed: the folder is removed, and its passes
    (and those of folders below it) leave the tally."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    for held in [f for f in _KEPT if f == folder or folder in f.parents]:
        del _KEPT[held]


def save_chunk(path: Path, key: str, part: Any) -> None:
    import torch

    with atomic_file(path) as tmp:
        torch.save({"key": key, "part": part}, tmp)


def read_chunk(path: Path, key: str) -> Any:
    """A saved chunk's result; a chunk saved under another key is refused (never reused)."""
    import torch

    saved = torch.load(path, weights_only=False)
    if not isinstance(saved, dict) or saved.get("key") != key:
        raise InputError(f"{path}: saved by a run with other settings (or an older version); "
                         f"delete {path.parent}, or use another --out")
    return saved["part"]


def run_chunks(what: str, folder: str | Path, key: str, names: list[str],
               compute: Callable[[int, Any], Any], sizes: list[int] | None = None,
               progress: bool = False, desc: str | None = None) -> list:
    """The results of chunks `names` (files in FOLDER): read where saved, else
    `compute(i, bar)` (which may advance the progress bar within the chunk) and saved at once.
    `key` is everything the results depend on; it is saved with each chunk and checked on
    reading. `sizes` (items per chunk) drive one progress bar over the whole pass."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    paths = [folder / name for name in names]
    sizes = sizes or [1] * len(names)
    tally = _KEPT[folder] = Kept(what, folder, 0, len(names))
    found = [p.is_file() for p in paths]
    if any(found):
        log.info("%s: %d of %d already done in %s%s", what, sum(found), len(names), folder,
                 "" if all(found) else "; computing the rest")
    parts = []
    with tqdm(total=sum(sizes), initial=sum(s for s, f in zip(sizes, found) if f),
              desc=desc or what, unit="img", disable=not progress) as bar:
        for i, path in enumerate(paths):
            try:
                part = read_chunk(path, key) if found[i] else None
            except FileNotFoundError:  # removed meanwhile by a process that finished the pass
                part, found[i] = None, False
            if not found[i]:
                before = bar.n
                part = compute(i, bar)
                save_chunk(path, key, part)
                bar.update(sizes[i] - (bar.n - before))
            tally.done += 1
            parts.append(part)
    return parts
