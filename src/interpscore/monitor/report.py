"""What a watched run leaves behind, the same for the callback and `interpscore track`: the unit
table, its summary per step and layer, and a figure of predicted interpretability over steps per
layer beside the validation metric where one was logged. Written together, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import files_into
from .check import ALL_LAYERS, summary

TABLE, SUMMARY, VALIDATION, FIGURE = ("interpretability", "interpretability_summary",
                                      "validation", "interpretability.png")
NOTE = ("predicted by {metric}: what the metric expects people to answer, not a measurement "
        "of people")


def write_outputs(table: pd.DataFrame, out: str | Path, metric: str = "mis",
                  validation: pd.DataFrame | None = None) -> Path:
    """OUT/interpretability.{parquet,csv} (one row per unit and check),
    interpretability_summary.{parquet,csv}, validation.csv (step, name, value) where given,
    and interpretability.png; other files of OUT are kept."""
    from ..metric.scorer import save_table

    with files_into(out) as tmp:
        save_table(table, tmp, TABLE)
        save_table(summary(table), tmp, SUMMARY)
        if validation is not None and len(validation):
            save_table(validation, tmp, VALIDATION)
        plot(table, tmp / FIGURE, metric, validation)
    return Path(out) / FIGURE


def plot(table: pd.DataFrame, path: Path, metric: str = "mis",
         validation: pd.DataFrame | None = None) -> None:
    """Mean predicted score per layer over steps (colour by depth, the 5th-95th percentile
    band of all units in grey, their mean in black); the validation metric in a second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summary(table)
    has_val = validation is not None and len(validation) > 0
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(11 if has_val else 6.5, 4.2),
                             squeeze=False)
    ax = axes[0, 0]
    layers = [layer for layer in stats["layer"].unique() if layer != ALL_LAYERS]
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(layers), 1)))
    for layer, colour in zip(layers, colours):  # summary lists layers in depth order
        rows = stats[stats["layer"] == layer]
        ax.plot(rows["step"], rows["mean"], color=colour, lw=1, marker=".",
                label=layer if len(layers) <= 10 else None)
    overall = stats[stats["layer"] == ALL_LAYERS]
    ax.fill_between(overall["step"], overall["p05"], overall["p95"], color="0.5", alpha=0.2,
                    label="all units, 5th-95th pct")
    ax.plot(overall["step"], overall["mean"], color="black", lw=2.2, label="all units, mean")
    depth = ", shallow to deep: purple to yellow" if len(layers) > 10 else ""
    ax.set(xlabel="training step", ylabel="predicted interpretability (P correct)",
           title=f"per layer ({len(layers)} layers{depth})")
    ax.legend(fontsize=7, loc="best")
    if has_val:
        vax = axes[0, 1]
        for name, rows in validation.groupby("name", sort=False):
            vax.plot(rows["step"], rows["value"], marker="o", label=name)
        vax.set(xlabel="training step", title="validation")
        vax.legend(fontsize=8)
    fig.suptitle(NOTE.format(metric=metric), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
