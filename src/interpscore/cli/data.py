"""Getting data: `download-imi`, `prepare`, `simulate`."""

from __future__ import annotations

from ..atomic import check_output_folder
from ..options import add_fields, from_namespace, overwrite_help
from .common import add_command

SIMULATE_OPTIONS = ("seed", "models", "units_per_model", "pool_size", "image_size", "n_batches",
                    "responses_per_unit")  # SimulationConfig fields `simulate` takes


def download_imi(args) -> int:
    from ..data.download import download_imi

    # The folder may hold earlier (partial) downloads: they are this command's, and resumed.
    check_output_folder(args.out, overwrite=True)
    for path in download_imi(args.out, args.files or None, base_url=args.base_url):
        print(f"ok  {path}")
    return 0


def prepare(args) -> int:
    from ..data.dataset import SplitOptions, prepare
    from ..data.exclusion import ExclusionCriteria
    from ..data.split_size import too_few_test_units

    result = prepare(args.responses, args.out, images=args.images,
                     criteria=from_namespace(args, ExclusionCriteria),
                     allow_missing=args.allow_missing, splits=from_namespace(args, SplitOptions),
                     overwrite=args.overwrite)
    print(result.report.table())
    print(f"\nsource: {result.source}; {len(result.trials)} valid trials, "
          f"{result.units['unit_id'].nunique()} units -> {result.out}")
    problem = too_few_test_units(int((result.units["split"] == "test").sum()))
    if problem:
        print(f"warning: {result.out}: its split {problem}; `train.py --model.init_from` can "
              "update a metric with it but not measure it (answer more units, or raise "
              "--test-fraction)")
    return 0


def simulate(args) -> int:
    from ..simulate.config import SimulationConfig
    from ..simulate.release import simulate

    out = simulate(args.out, from_namespace(args, SimulationConfig, only=SIMULATE_OPTIONS),
                   overwrite=args.overwrite)
    print(f"simulated IMI release (source: simulated) -> {out}\nnext: interpscore prepare "
          f"--responses {out}/audiences/default/responses_main.csv --images {out}/images "
          "--out DIR (audiences/heldout-pool-*: --images images_heldout_pool)")
    return 0


def register(commands) -> None:
    from ..data.dataset import SplitOptions
    from ..data.download import IMI_FILES, ZENODO_RECORD
    from ..data.exclusion import ExclusionCriteria
    from ..simulate.config import SimulationConfig

    dl = add_command(commands, "download-imi", download_imi, "download the IMI release from Zenodo")
    dl.add_argument("--out", required=True, help="folder for the zips (resumes partial files)")
    dl.add_argument("--files", nargs="*", metavar="FILE",
                    help=f"only these: {' '.join(IMI_FILES)} (default: all)")
    dl.add_argument("--base-url", default=ZENODO_RECORD,
                    help="where the files are (a mirror, or file:// for a local copy)")

    prep = add_command(commands, "prepare", prepare,
                       "turn IMI responses (+ images) into a dataset")
    prep.add_argument("--responses", required=True,
                      help="responses_main.csv, a folder or a zip (CSV or result_task_*.pkl), "
                      "or the results folder of `study serve` (session files)")
    prep.add_argument("--images", help="images root (stimulus store, per-task layout, or a "
                      "study folder); without it, image paths are kept as the table gives them. "
                      "Session files need their study folder: only its own sessions count")
    prep.add_argument("--out", required=True, help="output dataset folder")
    prep.add_argument("--allow-missing", action="store_true",
                      help="drop trials whose images are missing instead of failing")
    prep.add_argument("--overwrite", action="store_true", help=overwrite_help("dataset"))
    add_fields(prep, SplitOptions)
    add_fields(prep, ExclusionCriteria)

    sim = add_command(commands, "simulate", simulate,
                      "generate the simulated IMI release (offline)")
    sim.add_argument("--out", required=True, help="release folder")
    sim.add_argument("--overwrite", action="store_true", help=overwrite_help("release"))
    add_fields(sim, SimulationConfig, only=SIMULATE_OPTIONS)
