"""The evaluation report: metrics.json, report.md, PNG figures and a self-contained report.html."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import files_into


def _title(text: str, source: str) -> str:
    kind = "SIMULATED data" if source == "simulated" else f"{source} data"
    return f"{text}\n({kind})"


def make_figures(metrics: dict, table: pd.DataFrame, out: Path, predictor: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = metrics.get("data", {}).get("source", "unknown")
    pred = table[f"pred_{predictor}"]
    models = sorted(table["model"].unique())
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    files = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        files.append(f"{name}.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for model in models:
        rows = table["model"] == model
        ax.scatter(table.loc[rows, "his"], pred[rows], s=14, alpha=0.75, color=colours[model],
                   label=model)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="identity")
    ax.set(xlabel="measured HIS", ylabel=f"predicted HIS ({predictor})", xlim=(0, 1.02),
           ylim=(0, 1.02), title=_title("Predicted vs measured, per unit", source))
    ax.legend(fontsize=7)
    save(fig, "scatter")

    level = metrics["predictors"][predictor]["model_level"]["models"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for model, row in level.items():
        ax.errorbar(row["measured"], row["predicted"],
                    xerr=[[row["measured"] - row["measured_ci"][0]], [row["measured_ci"][1] - row["measured"]]],
                    yerr=[[row["predicted"] - row["predicted_ci"][0]], [row["predicted_ci"][1] - row["predicted"]]],
                    fmt="o", color=colours[model], label=model, capsize=3)
    lo = min(min(r["measured_ci"][0], r["predicted_ci"][0]) for r in level.values()) - 0.02
    hi = max(max(r["measured_ci"][1], r["predicted_ci"][1]) for r in level.values()) + 0.02
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="measured model mean HIS (95% CI)", ylabel="predicted model mean (95% CI)",
           title=_title("Model means", source))
    ax.legend(fontsize=7)
    save(fig, "model_means")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    depth = table["layer_depth"].astype(float)
    if depth.notna().sum() >= 3:
        bins = np.linspace(0, 1, 6)
        which = np.clip(np.digitize(depth.fillna(-1), bins) - 1, 0, 4)
        centres = (bins[:-1] + bins[1:]) / 2
        for values, label, style in ((table["his"], "measured", "o-"), (pred, "predicted", "s--")):
            means = [values[(which == b) & depth.notna()].mean() for b in range(5)]
            ax.plot(centres, means, style, label=label)
        ax.scatter(depth, table["his"], s=6, alpha=0.25, color="grey")
        ax.legend()
    else:  # e.g. features of a layer (SAE latents): no IMI layer depth is known for them
        ax.text(0.5, 0.5, "layer depth unknown for these units", ha="center",
                transform=ax.transAxes)
    ax.set(xlabel="relative layer depth", ylabel="HIS", ylim=(0, 1.02),
           title=_title("HIS vs layer depth (binned means)", source))
    save(fig, "layer_depth")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups = table.groupby("difficulty", sort=True)
    names = list(groups.groups)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [g["his"].mean() for _, g in groups], 0.4, label="measured")
    ax.bar(x + 0.2, [pred[g.index].mean() for _, g in groups], 0.4, label="predicted")
    ax.set_xticks(x, names)
    ax.set(xlabel="task difficulty", ylabel="mean HIS", ylim=(0, 1),
           title=_title("HIS by difficulty", source))
    ax.legend()
    save(fig, "difficulty")

    cal = metrics["predictors"][predictor]["calibration"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([b["predicted"] for b in cal["bins"]], [b["measured"] for b in cal["bins"]], "o-",
            label=f"{predictor} (ECE {cal['ece']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="mean predicted HIS (bin)", ylabel="mean measured HIS (bin)", xlim=(0, 1),
           ylim=(0, 1), title=_title("Calibration", source))
    ax.legend()
    save(fig, "calibration")
    return files


# The report's terms, defined once where a reader meets them.
TERMS = ("Terms: within-group = the Spearman correlation inside each model x difficulty group, "
         "averaged (how well units of one network are ranked); of ceiling = that value over the "
         "noise ceiling of the same groups (the agreement of the data with itself); mis = the "
         "mean-similarity baseline (MIS); stage_mis = MIS with per-stage weights fitted on the "
         "training units; model_identity = each model's mean training HIS (ranks models, "
         "nothing inside them); layer_depth = relative depth of the unit's layer; observer "
         "families (spectral-nearest, prelogits-gcm, ...) = the simulator's rules of answering, "
         "named by the features they read and how they pool the references.")


def verdict(metrics: dict) -> str:
    """One line: does the trained head beat MIS within model x difficulty groups (the ranking
    of units inside each model and difficulty), on the held-out benchmark's headline where
    there is one, else on the test units; from the CI of the difference."""
    if "benchmark" in metrics and metrics["benchmark"].get("headline"):
        report, where = metrics["benchmark"]["headline"], "on held-out observers and pictures"
    elif "grouped" in metrics:
        report, where = metrics["grouped"], "on the test units"
    else:
        return ""
    r = report["predictors"].get("trained")
    if r is None or r.get("within_minus_mis") is None or not np.isfinite(r["within_minus_mis"]):
        return ""
    low, high = r["within_minus_mis_ci"]
    word = "leads" if low > 0 else "trails" if high < 0 else "ties"
    return (f"verdict: trained {word} MIS within groups {where}: {r['within_minus_mis']:+.3f} "
            f"[{low:+.2f}, {high:+.2f}] (within-group Spearman, trained - MIS, 95% CI over units)")


def num(value, digits=3) -> str:
    """A number for a table; '-' where it is undefined."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def undefined_note(predictors: dict) -> str | None:
    """Why some predictors' correlations are shown as '-': their predictions do not vary."""
    names = [name for name, m in predictors.items() if not np.isfinite(m["spearman"])]
    if not names:
        return None
    return (f"'-' = undefined: {', '.join(names)} predict{'s' if len(names) == 1 else ''} one "
            "value for every unit, so there is no ranking to correlate (within a group, a "
            "prediction constant there scores 0).")


def predictor_table(predictors: dict) -> str:
    """`interpscore evaluate`'s terminal table: the name column as wide as the longest name,
    '-' where a value is undefined, and a line saying why."""
    width = max(len("predictor"), *map(len, predictors))
    lines = [f"{'predictor':{width}s} {'spearman':>9s} {'95% CI':>16s} {'within':>7s} "
             f"{'mae':>7s} {'of ceiling':>10s}"]
    for name, m in predictors.items():
        low, high = m["spearman_ci"]
        ci = f"[{low:.3f}, {high:.3f}]" if np.isfinite([low, high]).all() else "-"
        lines.append(f"{name:{width}s} {num(m['spearman']):>9s} {ci:>16s} "
                     f"{num(m['within_group_spearman']):>7s} {num(m['mae']):>7s} "
                     f"{num(m['fraction_of_ceiling'], 2):>10s}")
    note = undefined_note(predictors)
    return "\n".join(lines + ([note] if note else []))


def benchmark_markdown(benchmark: dict) -> list[str]:
    """The held-out benchmark first: each predictor within model x difficulty groups and
    overall, against the ceiling of the same groups, on observers and images never fitted."""
    def cell(r, key):
        ci = r[f"{key}_ci"]
        return f"{num(r[key])} [{num(ci[0], 2)}, {num(ci[1], 2)}]" if np.isfinite(r[key]) else "-"

    lines = ["## Held-out benchmark (simulated observers)", "", benchmark["note"], ""]
    sections = []
    if "headline" in benchmark:
        sections.append((f"Headline: held-out families on the held-out pool "
                         f"({', '.join(benchmark['headline']['datasets'])}), mean over families",
                         benchmark["headline"]))
    sections += [(name, report) for name, report in benchmark["datasets"].items()]
    for title, report in sections:
        c = report["ceiling"]
        lines += [f"### {title}", "", f"Ceiling (same groups): within {num(c['within'])}, "
                  f"overall {num(c['overall'])}.", "",
                  "| predictor | within-group Spearman [95% CI] | of ceiling | overall [95% CI] "
                  "| of ceiling | within - MIS [95% CI] |", "|---|---|---:|---|---:|---|"]
        for name, r in report["predictors"].items():
            diff = r.get("within_minus_mis")
            diff = (f"{diff:+.3f} [{r['within_minus_mis_ci'][0]:+.2f}, "
                    f"{r['within_minus_mis_ci'][1]:+.2f}]") if diff is not None and np.isfinite(diff) else "-"
            lines.append(f"| {name} | {cell(r, 'within')} | {num(r['within_of_ceiling'], 2)} | "
                         f"{cell(r, 'overall')} | {num(r['overall_of_ceiling'], 2)} | {diff} |")
        lines.append("")
    return lines


def markdown(metrics: dict, figures: list[str]) -> str:
    source = metrics.get("data", {}).get("source", "unknown")
    lines = [f"# Evaluation report ({source} data)", ""]
    if verdict(metrics):
        lines += [verdict(metrics), "", TERMS, ""]
    if "benchmark" in metrics:
        lines += benchmark_markdown(metrics["benchmark"])
        lines += ["## In-distribution test units (the audience the head was trained on)", ""]
    for mode, report in metrics.get("by_mode", {}).items():
        lines += benchmark_markdown({"note": f"Test units whose references are {mode} "
                                     "(natural: exemplars; optimized: feature "
                                     "visualisations), within model x difficulty groups.",
                                     "datasets": {mode: report}})[2:]
    lines += [
             f"Test conditions: {metrics['n_units']}"
             + (f" of {metrics['grouped']['n_units']} units" if "grouped" in metrics else "")
             + f" ({metrics.get('split', '?')} split; a unit shown at several difficulties "
             "is one condition each). "
             f"Noise ceiling used: {metrics['ceiling_used']:.3f}.", "",
             "| predictor | Spearman [95% CI] | within-group | Pearson | Kendall | MAE | of ceiling "
             "| ECE |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in metrics["predictors"].items():
        ci = m["spearman_ci"]
        spearman = (f"{num(m['spearman'])} [{ci[0]:.3f}, {ci[1]:.3f}]"
                    if np.isfinite(m["spearman"]) else "-")
        lines.append(f"| {name} | {spearman} | {num(m['within_group_spearman'])} | "
                     f"{num(m['pearson'])} | {num(m['kendall'])} | {num(m['mae'])} | "
                     f"{num(m['fraction_of_ceiling'], 2)} | {num(m['calibration']['ece'])} |")
    if undefined_note(metrics["predictors"]):
        lines += ["", undefined_note(metrics["predictors"])]
    lines += ["", "## Noise ceiling", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in metrics["ceiling"].items()]
    lines += ["", "## Paired tests (overall Spearman difference on the in-distribution test "
              "units, bootstrap over units; not the headline's within-group comparison)", ""]
    lines += [f"- {k}: {t['spearman_difference']:+.3f} [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}], "
              f"p = {t['p_value']:.3f}" for k, t in metrics["paired_tests"].items()]
    first = next(iter(metrics["predictors"]))
    level = metrics["predictors"][first]["model_level"]
    lines += ["", f"## Model level ({first})", "",
              "| model | units | measured mean | predicted mean | Spearman within |",
              "|---|---:|---:|---:|---:|"]
    for model, row in level["models"].items():
        within = f"{row['spearman_within']:.3f}" if "spearman_within" in row else "-"
        lines.append(f"| {model} | {row['n_units']} | {row['measured']:.3f} | "
                     f"{row['predicted']:.3f} | {within} |")
    if "spearman_of_model_means" in level:
        lines.append(f"\nRank correlation of model means: {level['spearman_of_model_means']:.3f}")
    if "lomo" in metrics:
        lines += ["", "## Leave one model out (train without the model, predict its units)", "",
                  "| held-out model | units | Spearman | measured mean | predicted mean |",
                  "|---|---:|---:|---:|---:|"]
        for model, row in metrics["lomo"]["folds"].items():
            lines.append(f"| {model} | {row['n_units']} | {row['spearman']:.3f} | "
                         f"{row['measured']:.3f} | {row['predicted']:.3f} |")
        if metrics["lomo"].get("spearman_of_model_means") is not None:
            lines.append(f"\nRank correlation of held-out model means: "
                         f"{metrics['lomo']['spearman_of_model_means']:.3f}")
    breakdown = metrics["predictors"][first]["breakdowns"]
    lines += ["", f"## Breakdowns ({first})", ""]
    for column in ("mode", "difficulty"):
        for value, row in breakdown[column].items():
            s = f"{row['spearman']:.3f}" if row["spearman"] is not None else "-"
            lines.append(f"- {column} = {value}: {row['n_units']} units, measured "
                         f"{row['measured']:.3f}, predicted {row['predicted']:.3f}, Spearman {s}")
    if "layer_depth" in breakdown:
        d = breakdown["layer_depth"]
        lines.append(f"- layer depth: Spearman with measured {d['spearman_depth_vs_measured']:.3f}, "
                     f"with predicted {d['spearman_depth_vs_predicted']:.3f}")
    lines += ["", "## Figures", ""] + [f"![{f[:-4]}]({f})" for f in figures]
    lines += ["", *[f"Note: {n}" for n in metrics.get("notes", [])]]
    return "\n".join(lines) + "\n"


def html(markdown_text: str, out: Path, title: str = "interpscore evaluation") -> str:
    """A self-contained page: the report's lines, figures embedded as data URIs."""
    import html as escape

    body, in_table = [], False
    for line in markdown_text.splitlines():
        if in_table and not line.startswith("|"):
            body.append("</table>")
            in_table = False
        if line.startswith("![") and line.endswith(".png)"):
            name = line[line.index("(") + 1:-1]
            data = base64.b64encode((out / name).read_bytes()).decode()
            body.append(f'<img alt="{name}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{escape.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("|"):
            if set(line) <= set("|-: "):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            cells = [escape.escape(c.strip()) for c in line.strip("|").split("|")]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        elif line:
            body.append(f"<p>{escape.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    text = "\n".join(body)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape.escape(title)}"
            "</title><style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
            "td{padding:2px 8px;border-bottom:1px solid #ddd}img{max-width:48%}</style></head>"
            f"<body>{text}</body></html>")


def write_report(metrics: dict, table: pd.DataFrame, out: str | Path, predictor: str) -> Path:
    """Write the report's files into OUT, each whole or not at all, replacing only files of
    the same names (the caller checks OUT first: `atomic.check_output_folder`)."""
    with files_into(out) as tmp:
        figures = make_figures(metrics, table, tmp, predictor)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        text = markdown(metrics, figures)
        (tmp / "report.md").write_text(text)
        (tmp / "report.html").write_text(html(text, tmp))
        lists = [c for c in table.columns if isinstance(table[c].iloc[0], (list, np.ndarray))]
        table.drop(columns=lists).to_csv(tmp / "predictions.csv", index=False)
    return Path(out)
