"""Rendering the leaderboard: README.md and a static, sortable index.html from the entries and
their results. The page is a template shipped with the package (`page.html`); the ranking rule
is `ranked`, here, and the page receives the ranked rows."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..atomic import write_text
from ..resources import package_file
from .entries import ROOT, load_tracks


MEASURES = {"overall": "Spearman", "within": "within-group Spearman"}


def collect(root: Path = ROOT) -> dict:
    """Everything the page shows, in a deterministic order."""
    tracks = load_tracks(root)
    entries = []
    for meta_path in sorted((root / "submissions").glob("*.yaml")):
        meta = yaml.safe_load(meta_path.read_text())
        result_path = root / "results" / f"{meta['id']}.json"
        results = json.loads(result_path.read_text()) if result_path.is_file() else {}
        entries.append({"meta": meta, "results": results})
    data = {"tracks": [{"name": name, "title": t["title"], "description": t.get("description", ""),
                        "measure": MEASURES[t.get("measure", "overall")],
                        "retired": t.get("status") == "retired"}
                       for name, t in tracks.items()], "entries": entries}
    data["ranked"] = {}
    for name in tracks:
        rows, unscored = ranked(data, name)
        data["ranked"][name] = {"rows": rows, "unscored": unscored}
    return data


def ranked(data: dict, track: str) -> tuple[list[dict], list[str]]:
    """The ranking rule: best Spearman first, an undefined one (a constant predictor) last, ties
    by id. Returns the ranked rows and the ids of entries not yet scored on the track."""
    rows, unscored = [], []
    for entry in data["entries"]:
        meta, result = entry["meta"], entry["results"].get(track)
        if result and "spearman" in result:
            rows.append(dict(id=meta["id"], method=meta.get("method"), backbone=meta.get("backbone"),
                             flags=meta.get("flags", {}), spearman=result["spearman"],
                             ci=result["spearman_ci"], fraction=result["fraction_of_ceiling"],
                             modelcorr=result.get("model_rank_correlation"), mae=result["mae"],
                             ceiling=result["ceiling"], n_units=result["n_units"], result=result))
        elif track in meta.get("predictions", {}):
            unscored.append(meta["id"])
    rows.sort(key=lambda r: (r["spearman"] is None, -(r["spearman"] or 0.0), r["id"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows, unscored


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(data: dict) -> str:
    lines = ["# interpscore leaderboard", "",
             "Proxy metrics of per-unit human interpretability (IMI 2-AFC), ranked by their "
             "correlation with measured HIS on each track's fixed test units. Numbers are written "
             "by `interpscore leaderboard score`, never by submitters. How to submit: see "
             "[CONTRIBUTING](#submitting). The page with plots: `leaderboard/index.html`.", "",
             "Simulated tracks measure agreement with simulated observers (hypotheses about "
             "people), not with people: the current one ranks by the Spearman correlation within "
             "model x difficulty groups on observer families and images that training never saw. "
             "Only the IMI track measures agreement with humans.", ""]
    for track in data["tracks"]:
        name = track["name"]
        scored, unscored = data["ranked"][name]["rows"], data["ranked"][name]["unscored"]
        lines += [f"## {track['title']} (`{name}`)", "", track["description"], ""]
        if not scored:
            lines += ["Not yet scored: the track's prepared data is not at hand.", ""]
            continue
        if track["retired"]:
            lines += ["Retired: kept for the record, no longer scored.", ""]
        lines += [f"| rank | entry | method | backbone | {track['measure']} [95% CI] | of ceiling | "
                  "model rank corr. | MAE | flags |", "|---:|---|---|---|---|---:|---:|---:|---|"]
        for r in scored:
            flags = ", ".join(k for k, v in r["flags"].items() if v) or "-"
            ci = r["ci"]
            lines.append(f"| {r['rank']} | `{r['id']}` | {r['method']} | {r['backbone']} | "
                         f"{_num(r['spearman'], 3)} [{_num(ci[0], 3)}, {_num(ci[1], 3)}] | "
                         f"{_num(r['fraction'], 2)} | {_num(r['modelcorr'], 2)} | "
                         f"{_num(r['mae'], 3)} | {flags} |")
        lines += ["", f"Noise ceiling: {scored[0]['ceiling']:.3f} "
                  f"({scored[0]['n_units']} test units)."]
        if unscored:
            lines += ["", "Not yet scored: " + ", ".join(f"`{i}`" for i in unscored)
                      + " (the track's prepared data is not at hand)."]
        lines.append("")
    lines += ["## Submitting", "",
              "1. `interpscore leaderboard submit --checkpoint CKPT --meta meta.yaml` (or write "
              "`submissions/<id>.yaml` and one predictions CSV per track by hand).",
              "2. `interpscore leaderboard validate` must report no problems.",
              "3. Open a pull request; maintainers run `interpscore leaderboard score` and "
              "`interpscore leaderboard render`.", ""]
    return "\n".join(lines)




def render_html(data: dict) -> str:
    payload = json.dumps(data, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")
    return package_file("leaderboard", "page.html").read_text().replace("__DATA__", payload)


def render(root: Path = ROOT, out: Path | None = None) -> list[Path]:
    """Write README.md and index.html (into `out`, default the leaderboard folder)."""
    out = Path(out) if out else Path(root)
    data = collect(root)
    return [write_text(out / name, text) for name, text in
            (("README.md", render_markdown(data)), ("index.html", render_html(data)))]
