"""The zoo scan's summaries and report (`report.md`, a self-contained `report.html`, PNGs): the
questions of the IMI and MIS papers asked of the scanned models. No torch here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import files_into

NOTE = ("Scores are a metric's predictions of human interpretability (HIS), not measurements: "
        "a checkpoint trained on the simulated IMI predicts what the simulator's observers would "
        "answer, not what people would.")


def architecture(spec: str) -> str:
    """The architecture a spec names: `resnet50@random` -> `resnet50`."""
    from ..stimuli.model_spec import parse_model_spec

    return parse_model_spec(spec).name


def family(spec: str) -> str:
    """The architecture family: `resnet50` -> `resnet`, `efficientnet_lite0` -> `efficientnet`."""
    name = architecture(spec).removeprefix("tf_")
    match = re.match(r"[a-z]+(v\d+)?", name)
    return match[0] if match else name


def model_summary(units: pd.DataFrame, metadata: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model: mean score with the 5th-95th percentile band over units, units scored and
    failed, family, pretrained or random, parameters, and the user's metadata (top1, params)."""
    rows = []
    for (model, spec), group in units.groupby(["model", "spec"], sort=False):
        ok = group[group["status"] == "ok"]["score"]
        rows.append(dict(
            model=model, spec=spec, architecture=architecture(spec), family=family(spec),
            pretrained=not spec.endswith("@random"), units=len(ok),
            not_scored=int((group["status"] != "ok").sum()),
            status="ok" if len(ok) else str(group["status"].iloc[0]),
            mean_score=ok.mean() if len(ok) else np.nan,
            p05=ok.quantile(0.05) if len(ok) else np.nan,
            p95=ok.quantile(0.95) if len(ok) else np.nan,
            params=group["params"].iloc[0] if "params" in group else np.nan))
    summary = pd.DataFrame(rows)
    if metadata is not None:
        extra = metadata.drop_duplicates("model").set_index("model")
        if "params" in extra:  # the user's count where given, else the computed one
            given = summary["model"].map(extra["params"])
            summary["params"] = given.where(given.notna(), summary["params"])
        for column in extra.columns.drop("params", errors="ignore"):
            summary[column] = summary["model"].map(extra[column])
    return summary


def make_figures(units: pd.DataFrame, summary: pd.DataFrame, layers: pd.DataFrame,
                 out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        figures.append(name)

    scored = summary.dropna(subset=["mean_score"]).sort_values("mean_score")
    if scored.empty:
        return figures
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(scored) + 1.5))
    y = np.arange(len(scored))
    ax.hlines(y, scored["p05"], scored["p95"], color="#9ab", lw=4, label="5th-95th percentile")
    ax.plot(scored["mean_score"], y, "o", color="#124", label="mean over units")
    ax.set_yticks(y, scored["model"])
    ax.set_xlabel("predicted HIS")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Models sorted by mean predicted interpretability")
    save(fig, "per_model.png")

    families = {m: f for m, f in zip(summary["model"], summary["family"])}
    colours = {f: plt.cm.tab10(i % 10) for i, f in enumerate(sorted(set(families.values())))}
    for x, name, title, log in (("depth", "depth.png", "relative depth", False),
                                ("width", "width.png", "layer width (units)", True)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for model, group in layers.groupby("model", sort=False):
            group = group.sort_values(x)
            ax.plot(group[x], group["mean_score"], "o-", ms=3, alpha=0.7,
                    color=colours[families[model]], label=families[model])
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, title="family")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("mean predicted HIS of the layer")
        ax.set_title(f"Score against {title}, per architecture family")
        save(fig, name)

    for column, name, title, log in (("params", "params.png", "parameters", True),
                                     ("top1", "accuracy.png", "ImageNet top-1 (given)", False)):
        if column not in scored or scored[column].notna().sum() < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for pretrained, marker in ((True, "o"), (False, "x")):
            part = scored[scored["pretrained"] == pretrained]
            ax.scatter(part[column], part["mean_score"], marker=marker,
                       label="pretrained" if pretrained else "random init")
            for _, row in part.iterrows():
                ax.annotate(row["model"], (row[column], row["mean_score"]), fontsize=6)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("mean predicted HIS")
        ax.legend(fontsize=8)
        ax.set_title(f"Score against {title}")
        save(fig, name)

    pairs = pairs_of(summary)
    if not pairs.empty:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(pairs) + 1.5))
        y = np.arange(len(pairs))
        ax.barh(y - 0.2, pairs["pretrained"], 0.4, label="pretrained")
        ax.barh(y + 0.2, pairs["random"], 0.4, label="random init")
        ax.set_yticks(y, pairs.index)
        ax.set_xlabel("mean predicted HIS")
        ax.legend(fontsize=8)
        ax.set_title("Pretrained against randomly initialised, same architecture")
        save(fig, "pretrained_vs_random.png")
    q3 = natural_against_synthetic(units)
    if not q3.empty:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(q3["natural"], q3["synthetic"])
        for model, row in q3.iterrows():
            ax.annotate(model, (row["natural"], row["synthetic"]), fontsize=7)
        low, high = q3[["natural", "synthetic"]].min().min(), q3[["natural", "synthetic"]].max().max()
        ax.plot([low, high], [low, high], color="grey", lw=0.8)  # equally interpretable
        ax.set_xlabel("natural exemplars: mean predicted HIS")
        ax.set_ylabel("feature visualisations: mean predicted HIS")
        ax.set_title("Q3: natural against synthetic explanations")
        save(fig, "natural_vs_synthetic.png")
    return figures


def natural_against_synthetic(units: pd.DataFrame) -> pd.DataFrame:
    """The paper's Q3, per model: the mean score of its units explained by natural exemplars
    and by feature visualisations (where the scan scored both), and the difference."""
    if "explanation" not in units or units["explanation"].nunique() < 2:
        return pd.DataFrame(columns=["natural", "synthetic", "difference"])
    ok = units[units["status"] == "ok"]
    table = ok.pivot_table(index="model", columns="explanation", values="score", aggfunc="mean")
    table = table[["natural", "synthetic"]].dropna()
    return table.assign(difference=table["synthetic"] - table["natural"])


def pairs_of(summary: pd.DataFrame) -> pd.DataFrame:
    """Architectures scanned both pretrained and at random init: their mean scores."""
    scored = summary.dropna(subset=["mean_score"])
    table = scored.assign(init=scored["pretrained"].map({True: "pretrained", False: "random"})
                          ).pivot_table(index="architecture", columns="init", values="mean_score",
                                        aggfunc="mean")
    if "pretrained" not in table or "random" not in table:
        return pd.DataFrame(columns=["pretrained", "random"])
    return table[["pretrained", "random"]].dropna()


def markdown(units: pd.DataFrame, summary: pd.DataFrame, figures: list[str]) -> str:
    ok = units["status"] == "ok"
    columns = [c for c in ("model", "family", "pretrained", "units", "not_scored", "mean_score",
                           "p05", "p95", "params", "top1", "status") if c in summary]
    table = summary.sort_values("mean_score", ascending=False)[columns]
    lines = ["# interpscore zoo scan", "", NOTE, "",
             f"{int(ok.sum())} units of {summary['model'].nunique()} models scored; "
             f"{int((~ok).sum())} not scored (constant over the pool, too sparse, non-finite "
             "activations, or a model that failed: see `status`).", "", "## Models", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    pairs = pairs_of(summary)
    if not pairs.empty:
        lines += ["", "## Pretrained against random init", "", "| architecture | pretrained | "
                  "random init |", "|---|---|---|"]
        lines += [f"| {a} | {p:.3f} | {r:.3f} |" for a, (p, r) in pairs.iterrows()]
    q3 = natural_against_synthetic(units)
    if not q3.empty:
        lines += ["", "## Natural exemplars against feature visualisations (the paper's Q3)", "",
                  "| model | natural | synthetic | synthetic - natural |", "|---|---|---|---|"]
        lines += [f"| {m} | {r['natural']:.3f} | {r['synthetic']:.3f} | {r['difference']:+.3f} |"
                  for m, r in q3.iterrows()]
    lines += ["", "## Figures", ""] + [f"![{f[:-4]}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else (f"{value:.3g}" if abs(value) >= 1000 else f"{value:.3f}")
    return str(value)


def write_report(units: pd.DataFrame, summary: pd.DataFrame, layers: pd.DataFrame,
                 out: str | Path) -> Path:
    from ..evaluation.report import html

    with files_into(out) as tmp:
        figures = make_figures(units, summary, layers, tmp)
        text = markdown(units, summary, figures)
        (tmp / "report.md").write_text(text)
        (tmp / "report.html").write_text(html(text, tmp, title="interpscore zoo scan"))
    return Path(out)
