"""A page to look at scored units: `score --save-stimuli` writes OUT/exemplars.html beside its
stimulus store. Each scored unit, best-scored first, with its score and interval and the
references of its first task (the maximally activating row above the minimally activating one,
the most extreme first), as a participant of a study sees them. Plain HTML, no script; the
images are the store's files, by relative path, so the page works from any folder viewer."""

from __future__ import annotations

from html import escape

from ..data.layouts import batch_dir, image_name
from .readouts import score_unit_ids

STYLE = ("body{font-family:sans-serif;margin:1em}section{margin-bottom:1.2em}"
         "h3{font-size:1em;margin:.2em 0}img{width:72px;height:72px;margin:1px}"
         ".row{display:flex;align-items:center}.side{width:3em;color:#555}")


def gallery_html(scores, n_refs: int, store: str = "stimuli", title: str = "exemplars") -> str:
    """The page for a scores table (`score`'s rows, `n_refs` references a side) whose store lies
    at STORE, relative to the page."""
    rows = scores[scores["status"] == "ok"]
    if "explanation" in rows:
        rows = rows[rows["explanation"] == "natural"]
    rows = rows.assign(unit_id=score_unit_ids(rows)).sort_values(
        ["score", "unit_id"], ascending=[False, True])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{STYLE}</style><h2>{escape(title)}: {len(rows)} units, best-scored "
             "first</h2>"]
    for _, row in rows.iterrows():
        model, *layer, channel = row["unit_id"].split("/")
        folder = batch_dir(model, "/".join(layer), channel, 0, row.get("difficulty", "easy"))
        parts.append(f"<section><h3>{escape(row['unit_id'])}: predicted {row['score']:.3f} "
                     f"[{row['score_low']:.3f}, {row['score_high']:.3f}]</h3>")
        for side in ("max", "min"):
            images = "".join(f"<img loading='lazy' alt='{side} {i}' src='{escape(store)}/"
                             f"{escape(folder)}/{image_name(side, i)}'>"
                             for i in range(n_refs))
            parts.append(f"<div class='row'><span class='side'>{side}</span>{images}</div>")
        parts.append("</section>")
    return "\n".join(parts) + "\n"
