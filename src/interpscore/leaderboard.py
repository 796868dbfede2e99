"""The results leaderboard: one file per entry, a schema a machine checks, numbers written by the
harness (never by the submitter), and a static page.

    leaderboard/schema.json                    JSON Schema of an entry's metadata
    leaderboard/tracks.yaml                    benchmarks: dataset and fixed, versioned test units
    leaderboard/tracks/<track>.csv             unit_id, mode, difficulty
    leaderboard/submissions/<id>.yaml          metadata written by the submitter
    leaderboard/submissions/<id>.<track>.csv   predictions: unit_id, mode, difficulty, predicted
    leaderboard/results/<id>.json              measured by `interpscore leaderboard score`
    leaderboard/README.md, index.html          rendered by `interpscore leaderboard render`
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .errors import InputError

ROOT = Path(__file__).resolve().parents[2] / "leaderboard"
KEYS = ["unit_id", "mode", "difficulty"]
PREDICTION_COLUMNS = KEYS + ["predicted"]


@dataclass
class Problems:
    """Every problem found, each with its file and (where known) line."""

    items: list[str] = field(default_factory=list)

    def add(self, path, message, line=None):
        where = f"{path}:{line}" if line is not None else str(path)
        self.items.append(f"{where}: {message}")

    def __bool__(self):
        return bool(self.items)


# --- tracks ------------------------------------------------------------------------------------

def load_tracks(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "tracks.yaml").read_text())["tracks"]


def track_units(root: Path, name: str, track: dict) -> pd.DataFrame | None:
    path = root / track["units"]
    return pd.read_csv(path, dtype={"unit_id": str}) if path.is_file() else None


def track_dataset(track: dict, data_root: str | Path = "data", imi_data=None) -> Path | None:
    """The prepared dataset a track is measured on (the simulated one is built on demand)."""
    if track["dataset"] == "simulated":
        from .simulate import ensure_simulated

        return ensure_simulated(track.get("simulation"), data_root)
    return Path(imi_data) if imi_data else None


def fix_track_units(name: str, dataset, root: Path = ROOT) -> Path:
    """Freeze a track's test units from a prepared dataset's test split (once, then versioned)."""
    from .dataset import load_prepared

    tracks = load_tracks(root)
    if name not in tracks:
        raise InputError(f"unknown track {name!r}; tracks: {', '.join(tracks)}")
    out = root / tracks[name]["units"]
    if out.exists():
        raise InputError(f"{out}: the track's units are already fixed; a new list is a new track "
                         "version (add e.g. imi-v2 to tracks.yaml)")
    units = load_prepared(dataset)["units"].to_pandas()
    test = units[units["split"] == "test"][KEYS].sort_values(KEYS)
    if test.empty:
        raise InputError(f"{dataset}: no units in the 'test' split")
    out.parent.mkdir(parents=True, exist_ok=True)
    test.to_csv(out, index=False)
    return out


# --- validation --------------------------------------------------------------------------------

def _line_of(node, path) -> int | None:
    """1-based line of a JSON-Schema error path inside a composed YAML node."""
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == key]
            if not match:
                break
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    return node.start_mark.line + 1 if node is not None else None


def validate_entry(meta_path: Path, root: Path = ROOT) -> Problems:
    """Schema, id = file name, prediction files: columns, numbers in [0, 1], duplicates, and
    missing or extra units against each track's fixed unit list. All problems at once."""
    import jsonschema

    problems = Problems()
    text = meta_path.read_text()
    try:
        meta = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problems.add(meta_path, f"not valid YAML ({err})", mark.line + 1 if mark else None)
        return problems
    schema = json.loads((root / "schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(meta), key=lambda e: list(e.path)):
        location = "/".join(map(str, error.path)) or "(top level)"
        problems.add(meta_path, f"{location}: {error.message}", _line_of(node, error.path))
    if not isinstance(meta, dict):
        return problems
    if meta.get("id") != meta_path.stem:
        problems.add(meta_path, f"id {meta.get('id')!r} must equal the file name "
                     f"{meta_path.stem!r}", _line_of(node, ["id"]))
    tracks = load_tracks(root)
    for track, file in (meta.get("predictions") or {}).items():
        line = _line_of(node, ["predictions", track])
        if track not in tracks:
            problems.add(meta_path, f"unknown track {track!r}; tracks: {', '.join(tracks)}", line)
            continue
        if not isinstance(file, str):
            continue
        path = meta_path.parent / file
        if not path.is_file():
            problems.add(meta_path, f"predictions file {file} does not exist", line)
            continue
        validate_predictions(path, track_units(root, track, tracks[track]), problems)
    return problems


def validate_predictions(path: Path, units: pd.DataFrame | None, problems: Problems) -> None:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        problems.add(path, f"not a readable CSV ({err})")
        return
    if list(table.columns) != PREDICTION_COLUMNS:
        problems.add(path, f"columns must be {', '.join(PREDICTION_COLUMNS)}; found "
                     f"{', '.join(table.columns)}", 1)
        return
    for i, value in enumerate(table["predicted"]):
        try:
            number = float(value)
        except ValueError:
            problems.add(path, f"predicted {value!r} is not a number", i + 2)
            continue
        if not 0.0 <= number <= 1.0 or math.isnan(number):
            problems.add(path, f"predicted {value} is outside [0, 1]", i + 2)
    keys = list(map(tuple, table[KEYS].to_numpy()))
    seen = {}
    for i, key in enumerate(keys):
        if key in seen:
            problems.add(path, f"duplicate unit {'/'.join(key)} (first on line {seen[key]})", i + 2)
        seen.setdefault(key, i + 2)
    if units is not None:
        expected = set(map(tuple, units[KEYS].astype(str).to_numpy()))
        missing, extra = expected - set(keys), set(keys) - expected
        if missing:
            problems.add(path, f"{len(missing)} test unit(s) missing, e.g. "
                         f"{', '.join('/'.join(k) for k in sorted(missing)[:3])}")
        for key in sorted(extra):
            problems.add(path, f"unit {'/'.join(key)} is not a test unit of this track", seen[key])


def validate_all(paths=None, root: Path = ROOT) -> Problems:
    paths = [Path(p) for p in paths] if paths else sorted((root / "submissions").glob("*.yaml"))
    problems = Problems()
    for path in paths:
        problems.items += validate_entry(path, root).items
    return problems


# --- scoring (the harness writes the numbers) --------------------------------------------------

def score_track(predictions: pd.DataFrame, units: pd.DataFrame, n_boot: int = 1000) -> dict:
    """The evaluation harness's numbers for predictions of a track's units (`units`: the rows of
    the prepared dataset's units table, with his, n_trials, n_correct, model, ...)."""
    from .evaluate import ceiling_used, ceilings, predictor_report

    merged = units.merge(predictions[PREDICTION_COLUMNS], on=KEYS, how="left", validate="1:1")
    ceiling = ceilings(merged)
    report = predictor_report(merged["predicted"].astype(float), merged, ceiling,
                              n_boot=n_boot, name="entry")
    return _finite({
        "n_units": report["n_units"], "spearman": report["spearman"],
        "spearman_ci": report["spearman_ci"], "mae": report["mae"], "pearson": report["pearson"],
        "ceiling": ceiling_used(ceiling), "fraction_of_ceiling": report["fraction_of_ceiling"],
        "model_rank_correlation": report["model_level"].get("spearman_of_model_means"),
        "models": {m: {"measured": r["measured"], "predicted": r["predicted"],
                       "n_units": r["n_units"]} for m, r in report["model_level"]["models"].items()},
        "units": [[round(float(m), 4), round(float(p), 4), model] for m, p, model in
                  zip(merged["his"], merged["predicted"], merged["model"])],
    })


def _finite(value):
    """NaN (e.g. the Spearman of a constant predictor) becomes null: valid JSON, shown as '-'."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def track_table(dataset: Path, units: pd.DataFrame) -> pd.DataFrame:
    from .dataset import load_prepared

    table = load_prepared(dataset)["units"].to_pandas()
    chosen = table.merge(units[KEYS], on=KEYS, how="inner")
    if len(chosen) != len(units):
        raise InputError(f"{dataset}: holds {len(chosen)} of the track's {len(units)} units "
                         "(a different dataset version?)")
    return chosen


def score_entries(ids=None, root: Path = ROOT, data_root="data", imi_data=None,
                  n_boot: int = 1000) -> list[Path]:
    problems = validate_all([root / "submissions" / f"{i}.yaml" for i in ids] if ids else None,
                            root)
    if problems:
        raise InputError("fix these before scoring:\n" + "\n".join(problems.items))
    tracks = load_tracks(root)
    written = []
    for meta_path in sorted((root / "submissions").glob("*.yaml")):
        meta = yaml.safe_load(meta_path.read_text())
        if ids and meta["id"] not in ids:
            continue
        results = {}
        for track, file in meta["predictions"].items():
            units = track_units(root, track, tracks[track])
            dataset = track_dataset(tracks[track], data_root, imi_data)
            if units is None or dataset is None:
                results[track] = {"status": "not yet scored"}
                continue
            predictions = pd.read_csv(meta_path.parent / file, dtype={"unit_id": str})
            results[track] = score_track(predictions, track_table(dataset, units), n_boot)
        out = root / "results" / f"{meta['id']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        tmp.replace(out)
        written.append(out)
    return written


# --- making entries ----------------------------------------------------------------------------

def submit(meta_file, root: Path = ROOT, checkpoint=None, baseline: str | None = None,
           data_root="data", cache_dir=".cache/interpscore") -> Path:
    """An entry from a trained checkpoint (or a built-in baseline) for every track whose
    dataset is at hand: predictions of the track's units plus the given metadata."""
    from .backbones import create_backbone
    from .checkpoint import load_checkpoint
    from .evaluate import fit_mis, metadata_baselines, predict_conditions
    from .tasks import load_task_tensors

    meta = yaml.safe_load(Path(meta_file).read_text())
    if not isinstance(meta, dict) or "id" not in meta:
        raise InputError(f"{meta_file}: metadata needs at least an id")
    metric = load_checkpoint(checkpoint) if checkpoint else None
    # Metadata baselines read no embeddings; the default backbone only builds the task table.
    backbone_name = (metric.backbone if metric else meta.get("backbone", "efficientnet_lite0")
                     if baseline == "mis" else "efficientnet_lite0")
    image_size = metric.image_size if metric else 128
    predictions = {}
    for track_name, track in load_tracks(root).items():
        units = track_units(root, track_name, track)
        dataset = track_dataset(track, data_root) if track["dataset"] == "simulated" else None
        if units is None or dataset is None:
            continue
        tensors = load_task_tensors(dataset, create_backbone(backbone_name, image_size),
                                    cache_dir)
        conditions = tensors.conditions
        position = {k: i for i, k in enumerate(map(tuple, conditions[KEYS].to_numpy()))}
        ids = [position[k] for k in map(tuple, units[KEYS].to_numpy())]
        train = np.flatnonzero(conditions["split"] == "train").tolist()
        if metric is not None:
            predictor = metric.head
        elif baseline == "mis":
            predictor = fit_mis(tensors, train)
        elif baseline in ("constant", "layer_depth"):
            predictor = metadata_baselines(tensors, train)[baseline]
        else:
            raise InputError("submit needs --checkpoint or --baseline mis|layer_depth|constant")
        frame = units[KEYS].copy()
        frame["predicted"] = np.round(predict_conditions(predictor, tensors, ids), 6)
        file = f"{meta['id']}.{track_name}.csv"
        frame.to_csv(root / "submissions" / file, index=False)
        predictions[track_name] = file
    if not predictions:
        raise InputError("no track's dataset is at hand to predict")
    meta["predictions"] = predictions
    if metric is not None:
        meta.setdefault("backbone", metric.backbone)
        meta.setdefault("trainable_parameters",
                        int(sum(p.numel() for p in metric.head.parameters() if p.requires_grad)))
    out = root / "submissions" / f"{meta['id']}.yaml"
    out.write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


# --- rendering ---------------------------------------------------------------------------------

def collect(root: Path = ROOT) -> dict:
    """Everything the page shows, in a deterministic order."""
    tracks = load_tracks(root)
    entries = []
    for meta_path in sorted((root / "submissions").glob("*.yaml")):
        meta = yaml.safe_load(meta_path.read_text())
        result_path = root / "results" / f"{meta['id']}.json"
        results = json.loads(result_path.read_text()) if result_path.is_file() else {}
        entries.append({"meta": meta, "results": results})
    return {"tracks": [{"name": name, "title": t["title"], "description": t.get("description", "")}
                       for name, t in tracks.items()], "entries": entries}


def _ranked(data: dict, track: str) -> tuple[list, list]:
    scored, unscored = [], []
    for entry in data["entries"]:
        result = entry["results"].get(track)
        if result and "spearman" in result:
            scored.append((entry, result))
        elif track in entry["meta"].get("predictions", {}):
            unscored.append(entry)
    # Best Spearman first; an undefined one (a constant predictor) last; ties by id.
    scored.sort(key=lambda er: (er[1]["spearman"] is None, -(er[1]["spearman"] or 0.0),
                                er[0]["meta"]["id"]))
    return scored, unscored


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(data: dict) -> str:
    lines = ["# interpscore leaderboard", "",
             "Proxy metrics of per-unit human interpretability (IMI 2-AFC), ranked by Spearman "
             "correlation with measured HIS on each track's fixed test units. Numbers are written "
             "by `interpscore leaderboard score`, never by submitters. How to submit: see "
             "[CONTRIBUTING](#submitting). The page with plots: `leaderboard/index.html`.", ""]
    for track in data["tracks"]:
        name = track["name"]
        scored, unscored = _ranked(data, name)
        lines += [f"## {track['title']} (`{name}`)", "", track["description"], ""]
        if not scored:
            lines += ["Not yet scored: the track's prepared data is not at hand.", ""]
            continue
        lines += ["| rank | entry | method | backbone | Spearman [95% CI] | of ceiling | "
                  "model rank corr. | MAE | flags |", "|---:|---|---|---|---|---:|---:|---:|---|"]
        for rank, (entry, r) in enumerate(scored, start=1):
            meta = entry["meta"]
            flags = ", ".join(k for k, v in meta.get("flags", {}).items() if v) or "-"
            ci = r["spearman_ci"]
            lines.append(f"| {rank} | `{meta['id']}` | {meta['method']} | {meta['backbone']} | "
                         f"{_num(r['spearman'], 3)} [{_num(ci[0], 3)}, {_num(ci[1], 3)}] | "
                         f"{_num(r['fraction_of_ceiling'], 2)} | "
                         f"{_num(r.get('model_rank_correlation'), 2)} | {_num(r['mae'], 3)} | "
                         f"{flags} |")
        lines += ["", f"Noise ceiling: {scored[0][1]['ceiling']:.3f} "
                  f"({scored[0][1]['n_units']} test units)."]
        if unscored:
            lines += ["", "Not yet scored: " + ", ".join(f"`{e['meta']['id']}`" for e in unscored)
                      + " (the track's prepared data is not at hand)."]
        lines.append("")
    lines += ["## Submitting", "",
              "1. `interpscore leaderboard submit --checkpoint CKPT --meta meta.yaml` (or write "
              "`submissions/<id>.yaml` and one predictions CSV per track by hand).",
              "2. `interpscore leaderboard validate` must report no problems.",
              "3. Open a pull request; maintainers run `interpscore leaderboard score` and "
              "`interpscore leaderboard render`.", ""]
    return "\n".join(lines)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>interpscore leaderboard</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;color:#222}
table{border-collapse:collapse;width:100%;margin:8px 0 16px}
th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}
th{cursor:pointer;background:#f4f4f4;user-select:none}th.sorted-asc::after{content:" \\25B2"}
th.sorted-desc::after{content:" \\25BC"}tr.selected{background:#eef5ff}
.plots{display:flex;gap:16px;flex-wrap:wrap}svg{background:#fafafa;border:1px solid #ddd}
.muted{color:#777}
</style></head><body>
<h1>interpscore leaderboard</h1>
<p class="muted">Spearman correlation of predicted with measured per-unit HIS on fixed test units,
with bootstrap 95% CIs; the dashed line is the noise ceiling. Click a column to sort, a row to
show its scatter and per-model breakdown.</p>
<div id="tracks"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const COLUMNS = [["rank", "#"], ["id", "entry"], ["method", "method"], ["backbone", "backbone"],
  ["spearman", "Spearman"], ["fraction", "of ceiling"], ["modelcorr", "model rank corr."],
  ["mae", "MAE"]];
const fmt = (x, d) => (x === null || x === undefined) ? "-" : Number(x).toFixed(d);
function el(tag, attrs, text) {
  const e = document.createElementNS(tag === "svg" || attrs.svg ? "http://www.w3.org/2000/svg"
    : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs)) if (k !== "svg") e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function rowsFor(track) {
  const rows = [];
  for (const entry of DATA.entries) {
    const r = (entry.results || {})[track];
    if (!r || r.spearman === undefined) continue;
    rows.push({id: entry.meta.id, method: entry.meta.method, backbone: entry.meta.backbone,
      spearman: r.spearman, ci: r.spearman_ci, fraction: r.fraction_of_ceiling,
      modelcorr: r.model_rank_correlation, mae: r.mae, ceiling: r.ceiling, result: r});
  }
  rows.sort((a, b) => (a.spearman === null) - (b.spearman === null) ||
    (b.spearman || 0) - (a.spearman || 0) || a.id.localeCompare(b.id));
  rows.forEach((r, i) => r.rank = i + 1);
  return rows;
}
function bars(rows) {
  const w = 520, h = 24 * rows.length + 40, x0 = 150, scale = v => x0 + (w - x0 - 20) * Math.max(0, v);
  const svg = el("svg", {width: w, height: h, class: "bars"});
  rows.forEach((r, i) => {
    const y = 20 + 24 * i;
    svg.append(el("text", {svg: 1, x: 4, y: y + 12, "font-size": 12}, r.id));
    if (r.spearman === null) return;
    svg.append(el("rect", {svg: 1, x: x0, y: y, width: scale(r.spearman) - x0, height: 14, fill: "#4a7fc1"}));
    svg.append(el("line", {svg: 1, x1: scale(r.ci[0]), x2: scale(r.ci[1]), y1: y + 7, y2: y + 7, stroke: "#111"}));
  });
  if (rows.length) {
    const c = scale(rows[0].ceiling || 0);
    svg.append(el("line", {svg: 1, x1: c, x2: c, y1: 10, y2: h - 14, stroke: "#c33", "stroke-dasharray": "4 3", class: "ceiling"}));
    svg.append(el("text", {svg: 1, x: c - 3, y: h - 4, "font-size": 11, fill: "#c33", "text-anchor": "end"}, "noise ceiling " + fmt(rows[0].ceiling, 3)));
  }
  return svg;
}
function scatter(row) {
  const s = 300, pad = 30, p = v => pad + (s - 2 * pad) * v;
  const svg = el("svg", {width: s, height: s, class: "scatter"});
  svg.append(el("line", {svg: 1, x1: p(0), y1: s - p(0), x2: p(1), y2: s - p(1), stroke: "#999", "stroke-dasharray": "3 3"}));
  const models = [...new Set(row.result.units.map(u => u[2]))].sort();
  const colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  for (const [measured, predicted, model] of row.result.units)
    svg.append(el("circle", {svg: 1, cx: p(measured), cy: s - p(predicted), r: 3, fill: colours[models.indexOf(model) % 9]}));
  svg.append(el("text", {svg: 1, x: s / 2 - 40, y: s - 6, "font-size": 11}, "measured HIS"));
  svg.append(el("text", {svg: 1, x: 4, y: 14, "font-size": 11}, "predicted (" + row.id + ")"));
  return svg;
}
function breakdown(row) {
  const t = el("table", {class: "models"});
  const head = el("tr", {});
  ["model", "units", "measured mean", "predicted mean"].forEach(h => head.append(el("th", {}, h)));
  t.append(head);
  for (const [m, r] of Object.entries(row.result.models).sort()) {
    const tr = el("tr", {});
    [m, r.n_units, fmt(r.measured, 3), fmt(r.predicted, 3)].forEach(v => tr.append(el("td", {}, String(v))));
    t.append(tr);
  }
  return t;
}
function renderTrack(name, info) {
  const section = el("section", {id: "track-" + name});
  section.append(el("h2", {}, info.title));
  section.append(el("p", {class: "muted"}, info.description));
  const rows = rowsFor(name);
  const unscored = DATA.entries.filter(e => (e.meta.predictions || {})[name] &&
    !((e.results || {})[name] || {}).spearman).map(e => e.meta.id);
  if (!rows.length) {
    section.append(el("p", {class: "muted"}, "Not yet scored" + (unscored.length ? ": " + unscored.join(", ") : "") + "."));
    return section;
  }
  const table = el("table", {class: "ranking", "data-track": name});
  const thead = el("tr", {});
  const tbody = el("tbody", {});
  let sortKey = "spearman", ascending = false;
  const detail = el("div", {class: "plots"});
  function select(row) {
    detail.replaceChildren(scatter(row), breakdown(row));
    for (const tr of tbody.children) tr.classList.toggle("selected", tr.dataset.id === row.id);
  }
  function draw() {
    const sorted = [...rows].sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      if (x === null || y === null) return (x === null) - (y === null);  // undefined last
      const c = typeof x === "string" ? x.localeCompare(y) : x - y;
      return ascending ? c : -c;
    });
    tbody.replaceChildren(...sorted.map(r => {
      const tr = el("tr", {"data-id": r.id});
      [r.rank, r.id, r.method, r.backbone, fmt(r.spearman, 3) + " [" + fmt(r.ci[0], 3) + ", " + fmt(r.ci[1], 3) + "]",
       fmt(r.fraction, 2), fmt(r.modelcorr, 2), fmt(r.mae, 3)].forEach(v => tr.append(el("td", {}, String(v))));
      tr.addEventListener("click", () => select(r));
      return tr;
    }));
    for (const th of thead.children) {
      th.classList.toggle("sorted-asc", th.dataset.key === sortKey && ascending);
      th.classList.toggle("sorted-desc", th.dataset.key === sortKey && !ascending);
    }
  }
  for (const [key, label] of COLUMNS) {
    const th = el("th", {"data-key": key}, label);
    th.addEventListener("click", () => {
      ascending = sortKey === key ? !ascending : (key === "id" || key === "method" || key === "rank" || key === "mae");
      sortKey = key; draw();
    });
    thead.append(th);
  }
  table.append(thead, tbody);
  section.append(table, bars(rows), detail);
  draw();
  select(rows[0]);
  if (unscored.length) section.append(el("p", {class: "muted"}, "Not yet scored: " + unscored.join(", ")));
  return section;
}
for (const track of DATA.tracks)
  document.getElementById("tracks").append(renderTrack(track.name, track));
</script></body></html>
"""


def render_html(data: dict) -> str:
    payload = json.dumps(data, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")
    return PAGE.replace("__DATA__", payload)


def render(root: Path = ROOT, out: Path | None = None) -> list[Path]:
    """Write README.md and index.html (into `out`, default the leaderboard folder)."""
    out = Path(out) if out else root
    data = collect(root)
    files = []
    for name, text in (("README.md", render_markdown(data)), ("index.html", render_html(data))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
        files.append(out / name)
    return files

