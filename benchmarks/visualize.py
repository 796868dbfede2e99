"""Feature visualisation: speed, and IMI's criterion on EfficientNet-Lite0. Prints JSON.

Speed: optimisation steps of `units_per_batch` units (each 2 x 9 images with the default single
alpha) at each size, timed after a warm-up step; from it, visualisations per second and units per
minute at the default number of steps (cost is linear in units: the seconds per unit-step should
not grow with the batch). Criterion: sampled Lite0 units visualised with the CPU defaults; the
share whose weakest max visualisation activates the unit more than the most extreme natural
exemplar of the pool (and the weakest min one less), as IMI checked.

    python benchmarks/visualize.py [--out benchmarks/results/visualize.json]
    python benchmarks/visualize.py --device cuda --out benchmarks/results/visualize_cuda.json
"""

import argparse
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

from common import emit

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def speed(model, units, options, size, batch, steps):
    from interpscore.stimuli.visualize import visualize_units

    timed = replace(options, size=size, units_per_batch=batch, steps=1, min_steps=1)
    visualize_units(model, units[:batch], timed)  # warm-up: allocations, kernels
    start = time.perf_counter()
    visualize_units(model, units[:batch], replace(timed, steps=steps, min_steps=steps))
    seconds = (time.perf_counter() - start) / steps  # one step (the final measure is amortised)
    images = batch * options.images_per_unit()
    per_unit = seconds / batch * options.steps  # a unit's whole run at the default steps
    return {"size": size, "units_per_batch": batch, "images_per_step": images,
            "seconds_per_step": round(seconds, 3),
            "seconds_per_unit_step": round(seconds / batch, 4),
            "image_steps_per_second": round(images / seconds, 1),
            "visualisations_per_second": round(images / (seconds * options.steps), 3),
            "units_per_minute": round(60 / per_unit, 2)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--units", type=int, help="units of the criterion (cpu 20, cuda 80)")
    parser.add_argument("--pool-size", type=int, default=3000)
    parser.add_argument("--figure", default="benchmarks/results/visualize_lite0.png")
    args = parser.parse_args()
    os.environ["INTERPSCORE_DEVICE"] = args.device
    import torch

    from interpscore.stimuli.networks import load_model
    from interpscore.stimuli.pools import default_pool
    from interpscore.stimuli.units import choose_units
    from interpscore.stimuli.visual_store import plot_visualizations, visualization_table
    from interpscore.stimuli.visualize import (IMI_OPTIONS, VisualizationOptions,
                                               natural_rankings, visualize_units)

    gpu = args.device == "cuda"
    # CPU: the defaults at 64 px. GPU: IMI's size and transforms, fewer steps than IMI's 20,000.
    options = (replace(IMI_OPTIONS, steps=1024, min_steps=512, stop_window=256,
                       alphas=(0.5,), fallback=False, units_per_batch=32)
               if gpu else VisualizationOptions())
    sizes, batches, timed_steps = ((224,), (8, 32, 64), 8) if gpu else ((64, 128), (1, 4), 4)
    model = load_model("efficientnet_lite0")
    n_units = args.units or (80 if gpu else 20)
    result = {"device": torch.cuda.get_device_name() if gpu else platform.processor() or "cpu",
              "threads": torch.get_num_threads(), "model": "efficientnet_lite0",
              "options": asdict(options), "speed": []}
    speed_units = choose_units(model, units=max(batches), image_size=64, seed=5)
    for size in sizes:
        for batch in batches:
            result["speed"].append(speed(model, speed_units, options, size, batch, timed_steps))

    units = choose_units(model, units=n_units, image_size=options.size, seed=1)
    pool = default_pool(n_images=args.pool_size, size=options.size, seed=0)
    start = time.perf_counter()
    natural = natural_rankings(model, pool, units, keep=9, batch_size=128)
    natural_seconds = time.perf_counter() - start
    # as exemplar selection does: a unit constant over the pool has no exemplars to beat
    constant = [u for u in units if natural[u].top_value[0] - natural[u].bottom_value[0] < 1e-8]
    units = [u for u in units if u not in constant]
    start = time.perf_counter()
    visualizations = visualize_units(model, units, options, natural)
    seconds = time.perf_counter() - start
    table = visualization_table(model.label, visualizations)
    at_bound = table["min_ties_natural"] & (table["min_natural"] == 0.0)
    result["criterion"] = {
        "units_sampled": n_units, "constant_units_dropped": len(constant),
        "units": len(units), "pool_images": len(pool), "size": options.size,
        "steps": options.steps, "steps_taken_mean": round(float(table["steps"].mean()), 1),
        "seconds": round(seconds, 1), "seconds_per_unit": round(seconds / len(units), 2),
        "natural_pass_seconds": round(natural_seconds, 1),
        "max_beats_natural": round(float(table["max_beats_natural"].mean()), 3),
        "min_beats_natural": round(float(table["min_beats_natural"].mean()), 3),
        # units after a ReLU6 whose pool already holds an all-zero image: no image can go lower
        "min_ties_natural_at_zero": round(float(at_bound.mean()), 3),
        "min_beats_or_ties_at_zero": round(float((table["min_beats_natural"] | at_bound).mean()), 3),
        "both_beat_natural": round(float((table["max_beats_natural"]
                                          & table["min_beats_natural"]).mean()), 3),
        "max_diversity_mean": round(float(table["max_diversity"].mean()), 3),
        "min_diversity_mean": round(float(table["min_diversity"].mean()), 3),
        "failing": table.loc[~(table["max_beats_natural"] & (table["min_beats_natural"] | at_bound)),
                             ["layer", "channel", "max_weakest", "max_natural", "min_weakest",
                              "min_natural"]].round(3).to_dict("records"),
    }
    if args.figure:
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        shown = [v for v in visualizations if v.beats_natural("max")][:4]
        plot_visualizations(args.figure, shown, pool, natural, n_units=4,
                            title=f"EfficientNet-Lite0, {options.size} px, {options.steps} steps "
                                  f"(natural: a pool of {len(pool)} images)")
        result["figure"] = args.figure
    emit(result, args.out)


if __name__ == "__main__":
    main()
