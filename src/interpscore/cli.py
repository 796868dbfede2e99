"""The `interpscore` command. Subcommands import their heavy modules lazily, so `--help` is fast.

`main(argv)` returns an exit code and is callable from tests.
"""

from __future__ import annotations

import argparse
import sys

from .errors import InputError


def _download_imi(args) -> int:
    from .download import download_imi

    for path in download_imi(args.out, args.files or None, base_url=args.base_url):
        print(f"ok  {path}")
    return 0


def _prepare(args) -> int:
    from .dataset import prepare
    from .exclusion import ExclusionCriteria

    criteria = ExclusionCriteria(
        min_catch_accuracy=args.min_catch_accuracy, min_total_time_s=args.min_total_time,
        max_total_time_s=args.max_total_time, min_instruction_time_s=args.min_instruction_time,
        min_presses_per_row=args.min_presses_per_row, max_demo_attempts=args.max_demo_attempts,
        drop_multi_participation=not args.keep_multi_participation,
        use_table_checks=not args.recompute_checks)
    result = prepare(args.responses, args.out, images=args.images, criteria=criteria,
                     allow_missing=args.allow_missing, seed=args.seed,
                     val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                     overwrite=args.overwrite)
    print(result.report.table())
    print(f"\nsource: {result.source}; {len(result.trials)} valid trials, "
          f"{result.units['unit_id'].nunique()} units -> {result.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interpscore", description="Predict per-unit human interpretability (IMI 2-AFC).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dl = commands.add_parser("download-imi", help="download the IMI release from Zenodo")
    dl.add_argument("--out", required=True, help="folder for the zips")
    dl.add_argument("--files", nargs="*", help="subset: human_responses.zip image_data.zip")
    dl.add_argument("--base-url", default="https://zenodo.org/records/8131197/files")
    dl.set_defaults(run=_download_imi)

    prep = commands.add_parser("prepare", help="turn IMI responses (+ images) into a dataset")
    prep.add_argument("--responses", required=True,
                      help="responses_main.csv, a folder or a zip (CSV or result_task_*.pkl)")
    prep.add_argument("--images", help="images root (stimulus store or per-task layout)")
    prep.add_argument("--out", required=True, help="output dataset folder")
    prep.add_argument("--allow-missing", action="store_true",
                      help="drop trials whose images are missing instead of failing")
    prep.add_argument("--overwrite", action="store_true")
    prep.add_argument("--seed", type=int, default=0, help="seed of the unit split")
    prep.add_argument("--val-fraction", type=float, default=0.15)
    prep.add_argument("--test-fraction", type=float, default=0.15)
    prep.add_argument("--min-catch-accuracy", type=float, default=0.8)
    prep.add_argument("--min-total-time", type=float, default=135.0, help="seconds")
    prep.add_argument("--max-total-time", type=float, default=2500.0, help="seconds")
    prep.add_argument("--min-instruction-time", type=float, default=15.0, help="seconds")
    prep.add_argument("--min-presses-per-row", type=int, default=5)
    prep.add_argument("--max-demo-attempts", type=int, default=3)
    prep.add_argument("--keep-multi-participation", action="store_true")
    prep.add_argument("--recompute-checks", action="store_true",
                      help="ignore the table's passed_checks and compute the checks")
    prep.set_defaults(run=_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
