"""The IMI image layouts: how stimuli are named, and how each trial's images are found again.

This module owns the naming rules of the stimulus store (unit ids, condition labels with their
difficulty suffix, batch folders, `_9` as the query), so writers and readers share one copy.

Two layouts are known (examples in tests/fixtures/imi_task_tree, from the IMI code release):
- the per-unit stimulus store: `<model>/<layer>/channel_<c>/natural_images/batch_<b>/{min,max}_<i>.png`
  (`_9` = query, `_0.._8` = references) and `.../channel_<c>/optimized_images/{min,max}_<i>.png`;
- the per-task experiment layout: `task_<k>/trials/trial_<j>/queries/{min,max}.png` with
  `references/{min,max}_<i>.png`, or flat `trials/trial_<j>/{min,max}_<i>.png` (`_9` = query).
Quirks: reference indices may start at 0 or 1, synthetic trials show ten references per side, and
`index.json`'s `n_reference_images` may be a string.

Paths in the trial table are URLs or paths with unknown prefixes, so files are matched by the
longest unambiguous suffix of their path below the root.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, NamedTuple
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from ..errors import InputError

# The files PIL reads that count as images, for trial folders and pool folders alike.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
QUERY_INDEX = 9  # in the stimulus store and flat trial folders, `_9` is the query
_DIFFICULTY_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<difficulty>hard\d+)$")
_STORE_BATCH = re.compile(
    r"^(?P<model>[^/]+)/(?P<layer>.+)/channel_(?P<channel>\d+)/natural_images/batch_(?P<batch>\d+)$")


# --- naming rules of the stimulus store ---------------------------------------------------------

def unit_id(model: str, layer: str, channel) -> str:
    """The id of a unit in every table: `model/layer/channel`."""
    return f"{model}/{layer}/{channel}"


def condition_label(model: str, difficulty: str) -> str:
    """The model label of a condition in IMI: `resnet50` (easy) or `resnet50_hard95`."""
    return model if difficulty == "easy" else f"{model}_{difficulty}"


def split_difficulty(model_label: str) -> tuple[str, str]:
    """The inverse of `condition_label`: `resnet50_hard95` -> (`resnet50`, `hard95`)."""
    match = _DIFFICULTY_SUFFIX.match(model_label)
    return (match["base"], match["difficulty"]) if match else (model_label, "easy")


def store_unit_dir(model: str, layer: str, channel) -> str:
    return f"{model}/{layer}/channel_{channel}"


def batch_dir(model: str, layer: str, channel, batch: int, difficulty: str = "easy") -> str:
    """`<model>[_<difficulty>]/<layer>/channel_<c>/natural_images/batch_<b>`."""
    return f"{store_unit_dir(condition_label(model, difficulty), layer, channel)}/natural_images/batch_{batch}"


def optimized_dir(model: str, layer: str, channel) -> str:
    """`<model>/<layer>/channel_<c>/optimized_images`: a unit's feature visualisations (its
    synthetic references; the queries of its synthetic trials are natural)."""
    return f"{store_unit_dir(model, layer, channel)}/optimized_images"


def image_name(side: str, index: int) -> str:
    """`max_9.png` is the max query of a batch folder, `max_0..8.png` its references."""
    return f"{side}_{index}.png"


def parse_batch_dir(relative: str) -> dict | None:
    """`model/layer/channel_3/natural_images/batch_0` -> its parts (None for other paths)."""
    match = _STORE_BATCH.match(relative)
    if not match:
        return None
    return dict(model=match["model"], layer=match["layer"], channel=int(match["channel"]),
                batch=int(match["batch"]))

_AMBIGUOUS = object()
_NUMBERED = re.compile(r"^(min|max)_(\d+)$")


class Task(NamedTuple):
    """One 2-AFC task: the max and the min query and the two reference lists, its images as
    whatever names them where it is used (pool indices, embedding rows, paths); the fields are
    the trial table's columns. Defined here, in the lowest stage, so every stage shares it."""

    query_max: Any
    query_min: Any
    refs_max: list
    refs_min: list

    def images(self) -> tuple:
        """Every image of the task, queries first, in `map`'s order."""
        return (self.query_max, self.query_min, *self.refs_max, *self.refs_min)

    def map(self, f) -> "Task":
        """The same task with every image renamed by `f` (e.g. pool index -> embedding row)."""
        return Task(f(self.query_max), f(self.query_min), [f(i) for i in self.refs_max],
                    [f(i) for i in self.refs_min])


class MissingImages(InputError):
    def __init__(self, missing: list[str], root: Path):
        self.missing = missing
        shown = "\n  ".join(missing[:5])
        super().__init__(f"--images {root}: images of {len(missing)} distinct trial(s) not found "
                         f"below it, e.g.\n  {shown}\nCheck --images names the unzipped image "
                         "data, or pass --allow-missing to drop those trials.")


def _parts(path_like: str) -> tuple[str, ...]:
    path = urlparse(path_like).path if "://" in path_like else path_like
    return tuple(p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", ""))


class ImageIndex:
    """All images below a root, addressable by any unambiguous suffix of their path."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: images root is not a folder")
        self._by_suffix: dict[tuple, object] = {}
        self._folders: dict[str, list[str]] = {}
        self.files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise InputError(f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)}) below it")
        dirs = set()
        for rel in self.files:
            self._folders.setdefault(str(PurePosixPath(rel).parent), []).append(rel)
            parts = _parts(rel)
            for cut in range(len(parts)):
                self._add(parts[cut:], rel)
            for end in range(1, len(parts)):
                dirs.add(parts[:end])
        for parts in dirs:
            for cut in range(len(parts)):
                self._add(("<dir>",) + parts[cut:], "/".join(parts))

    def _add(self, key: tuple, value: str) -> None:
        self._by_suffix[key] = _AMBIGUOUS if self._by_suffix.get(key, value) != value else value

    def _lookup(self, parts: tuple, prefix: tuple = ()) -> str | None:
        for cut in range(len(parts)):  # longest suffix first
            found = self._by_suffix.get(prefix + parts[cut:])
            if found is _AMBIGUOUS:
                return None
            if found is not None:
                return found
        return None

    def find_file(self, path_like: str) -> str | None:
        return self._lookup(_parts(path_like))

    def find_dir(self, path_like: str) -> str | None:
        return self._lookup(_parts(path_like), ("<dir>",))

    def in_folder(self, folder: str) -> list[str]:
        """Images directly in a folder (relative to the root)."""
        return self._folders.get(str(PurePosixPath(folder)), [])

    def numbered(self, folder: str) -> dict[str, dict[int, str]]:
        """{'min': {i: path}, 'max': {i: path}} for `{min,max}_<i>.*` directly in a folder."""
        out: dict[str, dict[int, str]] = {"min": {}, "max": {}}
        for path in self.in_folder(folder):
            match = _NUMBERED.match(PurePosixPath(path).stem)
            if match:
                out[match[1]][int(match[2])] = path
        return out


@lru_cache(maxsize=None)
def n_references_of(task_dir: Path) -> int | None:
    """`n_reference_images` of the nearest index.json above a trial folder (may be a string)."""
    for folder in (task_dir, *task_dir.parents):
        index = folder / "index.json"
        if index.is_file():
            try:
                return int(json.loads(index.read_text())["n_reference_images"])
            except (ValueError, KeyError, TypeError) as err:
                raise InputError(f"{index}: unreadable n_reference_images ({err!r})") from err
    return None


def _trial_folder_images(index: ImageIndex, trial_dir: str) -> Task | None:
    """Per-task trial folder: `queries/` + `references/`, or flat with `_9` as the query."""
    queries = index.in_folder(f"{trial_dir}/queries")
    if queries:
        qmax = next((path for path in queries if PurePosixPath(path).stem == "max"), None)
        qmin = next((path for path in queries if PurePosixPath(path).stem == "min"), None)
        refs = index.numbered(f"{trial_dir}/references")
        if qmax is None or qmin is None or not refs["max"] or not refs["min"]:
            return None
        return Task(qmax, qmin, [refs["max"][i] for i in sorted(refs["max"])],
                           [refs["min"][i] for i in sorted(refs["min"])])
    files = index.numbered(trial_dir)
    if QUERY_INDEX not in files["max"] or QUERY_INDEX not in files["min"]:
        return None
    n_refs = n_references_of(Path(index.root, trial_dir))
    refs = {}
    for side in ("max", "min"):
        # index.json says how many references were shown; without it, all but the query
        ids = range(n_refs) if n_refs else sorted(i for i in files[side] if i != QUERY_INDEX)
        if not ids or any(i not in files[side] or i == QUERY_INDEX for i in ids):
            return None
        refs[side] = [files[side][i] for i in ids]
    return Task(files["max"][QUERY_INDEX], files["min"][QUERY_INDEX], refs["max"],
                       refs["min"])


def _trial_dir_of(query_url: str) -> str:
    """`.../task_3/trials/trial_7/queries/max.png` -> `.../task_3/trials/trial_7`."""
    parts = _parts(query_url)
    cut = len(parts) - 2 if len(parts) >= 2 and parts[-2] == "queries" else len(parts) - 1
    return "/".join(parts[:cut])


def resolve_trial(index: ImageIndex, row: dict) -> Task | None:
    """Images of one trial table row, or None when they cannot all be found: a trial whose row
    lists its references counts as found only with every one of them (never 7 of 9)."""
    found = _resolve_trial(index, row)
    listed = [len(row.get(f"{side}_references") or []) for side in ("max", "min")]
    if found is not None and all(listed) and \
            [len(found.refs_max), len(found.refs_min)] != listed:
        return None
    return found


def missing_files(index: ImageIndex, row: dict) -> list[str]:
    """The files of a row's listed images that are not below the images root, as the local
    path suffixes looked for (the URL's last folders)."""
    listed = [u for u in (row.get("max_query"), row.get("min_query"),
                          *(row.get("max_references") or []), *(row.get("min_references") or []))
              if isinstance(u, str) and u]
    found = {u: index.find_file(u) for u in listed}
    query = found.get(row.get("max_query"))
    home = _trial_of(query) if query else None
    # A file found only in another trial's folder (a shorter suffix matched) is missing here.
    return ["/".join(_parts(u)[-5:]) for u in listed
            if found[u] is None or (home is not None and _trial_of(found[u]) != home)]


def _trial_of(path: str) -> str:
    """The trial folder of an image: `.../trial_1` of `.../trial_1/references/max_0.png`."""
    return str(PurePosixPath(path).parent.parent)


def _resolve_trial(index: ImageIndex, row: dict) -> Task | None:
    # 1. The experiment's own URLs (per-task layout), with the reference lists where given.
    if isinstance(row.get("max_query"), str) and row["max_query"]:
        refs_max = [index.find_file(u) for u in row.get("max_references") or []]
        refs_min = [index.find_file(u) for u in row.get("min_references") or []]
        qmax, qmin = index.find_file(row["max_query"]), index.find_file(row.get("min_query", ""))
        if refs_max and refs_min and None not in (qmax, qmin, *refs_max, *refs_min) and \
                len({_trial_of(p) for p in (qmax, qmin, *refs_max, *refs_min)}) == 1:
            return Task(qmax, qmin, refs_max, refs_min)
        trial_dir = index.find_dir(_trial_dir_of(row["max_query"]))
        found = trial_dir and _trial_folder_images(index, trial_dir)
        if found:
            return found
    # 2. The stimulus store, from query_path (structure.json) or the unit and batch.
    found_dir = None
    if isinstance(row.get("query_path"), str) and row["query_path"]:
        found_dir = index.find_dir(row["query_path"])
    if found_dir is None and row.get("batch") is not None:
        found_dir = index.find_dir(batch_dir_of_row(row))
    if found_dir is None:
        return None
    natural = _trial_folder_images(index, found_dir)
    if natural is None or row["mode"] == "natural":
        return natural
    optimized = index.numbered(str(PurePosixPath(found_dir).parent.parent / "optimized_images"))
    if not optimized["max"] or not optimized["min"]:
        return None
    return Task(natural.query_max, natural.query_min,
                       [optimized["max"][i] for i in sorted(optimized["max"])],
                       [optimized["min"][i] for i in sorted(optimized["min"])])


def batch_dir_of_row(row: dict) -> str:
    """The stimulus-store batch folder of a trial row (its model label carries the difficulty)."""
    batch = row.get("batch")
    try:
        batch = int(batch)
    except (TypeError, ValueError):
        pass  # shown as it is in an error message
    return (f"{store_unit_dir(row.get('model_label', row['model']), row['layer'], row['channel'])}"
            f"/natural_images/batch_{batch}")


def describe_trial(row: dict) -> str:
    for key in ("max_query", "query_path"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key]
    return batch_dir_of_row(row)
