"""The leaderboard: `leaderboard validate|submit|score|render|fix-track`."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..options import POSITIVE_INT
from ..resources import DEFAULT_BACKBONE, DEFAULT_CACHE, DEFAULT_DATA_ROOT, DEFAULT_LEADERBOARD
from .common import add_command, add_group


def track_datasets(root, data_root, imi_data) -> dict[str, dict | None]:
    """Each track's prepared datasets: `score` (what entries are measured on) and `fit` (whose
    training units baselines are fitted on). The simulated ones are generated on demand (here,
    not in the leaderboard package, which never simulates); the human one only where given;
    retired tracks are not measured again."""
    from ..leaderboard.entries import load_tracks
    from ..simulate.release import ensure_simulated, simulated_dataset_dir

    out = {}
    for name, track in load_tracks(root).items():
        if track.get("status") == "retired":
            out[name] = None
        elif track["dataset"] == "simulated":
            simulation = track.get("simulation")
            ensure_simulated(simulation, data_root)
            audiences = track.get("audiences", ["default"])
            out[name] = {"score": [simulated_dataset_dir(simulation, data_root, a) for a in audiences],
                         "fit": simulated_dataset_dir(simulation, data_root,
                                                      track.get("fit_audience", audiences[0]))}
        else:
            out[name] = {"score": [Path(imi_data)], "fit": Path(imi_data)} if imi_data else None
    return out


def validate(args) -> int:
    from ..leaderboard.entries import check_root, validate_all

    problems = validate_all(args.files, check_root(args.root))
    for item in problems.items:
        print(item)
    print(f"{len(problems.items)} problem(s)" if problems else "all entries valid")
    return 1 if problems else 0


def fix_track(args) -> int:
    from ..leaderboard.entries import check_root, fix_track_units

    print(f"track units -> {fix_track_units(args.track, args.imi_data, check_root(args.root))}")
    return 0


def score(args) -> int:
    from ..leaderboard.entries import check_root
    from ..leaderboard.scoring import score_entries

    root = check_root(args.root)
    datasets = {name: d and d["score"] for name, d in
                track_datasets(root, args.data_root, args.imi_data).items()}
    for path in score_entries(datasets, args.ids, root, args.n_boot):
        print(f"scored -> {path}")
    return 0


def submit(args) -> int:
    """Predictions through the evaluation harness, then the entry's files."""
    import yaml

    from ..evaluation.harness import predict_units
    from ..leaderboard.entries import KEYS, check_root, load_tracks, track_units, write_entry

    if (args.checkpoint is None) == (args.baseline is None):
        raise InputError("leaderboard submit: give --checkpoint CKPT or --baseline NAME")
    root = check_root(args.root)
    metric = None
    if args.checkpoint:  # read before any dataset is simulated
        from ..metric.checkpoint import load_checkpoint

        metric = load_checkpoint(args.checkpoint)
    meta = yaml.safe_load(Path(args.meta).read_text()) if Path(args.meta).is_file() else None
    if not isinstance(meta, dict) or "id" not in meta:
        raise InputError(f"--meta {args.meta}: a YAML file with at least an id")
    if (root / "submissions" / f"{meta['id']}.yaml").exists() and not args.overwrite:
        raise InputError(f"--meta {args.meta}: entry '{meta['id']}' already exists in "
                         f"{root / 'submissions'}; pass --overwrite to replace its predictions")
    tracks = load_tracks(root)
    datasets = {name: d for name, d in track_datasets(root, args.data_root, None).items() if d}
    # Baselines that read no embeddings (backbone: none) still go through the task tensors,
    # which the default backbone builds.
    backbone = meta.get("backbone") if meta.get("backbone") not in (None, "none") else DEFAULT_BACKBONE
    predictions = {}
    for name, dataset in datasets.items():
        units = track_units(root, name, tracks[name])
        if units is None:
            continue
        frame = units[KEYS].copy()
        frame["predicted"] = predict_units(
            dataset["score"][0], units, checkpoint=args.checkpoint, baseline=args.baseline,
            backbone=backbone, cache_dir=args.cache_dir,
            fit_on=dataset["fit"]).round(6)
        predictions[name] = frame
    if metric is not None:
        meta.setdefault("backbone", metric.backbone)
        meta.setdefault("trainable_parameters", int(sum(
            p.numel() for p in metric.head.parameters() if p.requires_grad)))
    path = write_entry(meta, predictions, root)
    print(f"entry -> {path}\nnext: interpscore leaderboard validate {path}")
    return 0


def render(args) -> int:
    from ..leaderboard.entries import check_root
    from ..leaderboard.render import render

    for path in render(check_root(args.root)):
        print(f"rendered -> {path}")
    return 0



def register(commands) -> None:
    from ..evaluation.names import BASELINES

    actions = add_group(commands, "leaderboard", "validate, score, submit and render entries")

    def board_command(name, run, help):
        sub = add_command(actions, name, run, help)
        sub.add_argument("--root", type=Path, default=Path(DEFAULT_LEADERBOARD),
                         help="leaderboard folder (tracks.yaml, submissions/, results/)")
        return sub

    val = board_command("validate", validate, "check entries (the self-check "
                        "before a pull request)")
    val.add_argument("files", nargs="*", help="entry files (default: every entry under --root)")
    sub = board_command("submit", submit, "make an entry: predictions of a "
                        "checkpoint or a baseline")
    sub.add_argument("--meta", required=True, help="the entry's metadata YAML (id, method, ...)")
    sub.add_argument("--checkpoint", help="a trained checkpoint")
    sub.add_argument("--baseline", choices=BASELINES,
                     help="a built-in baseline instead of a checkpoint")
    sub.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                     help="where simulated datasets are cached")
    sub.add_argument("--cache-dir", default=DEFAULT_CACHE, help="embedding cache")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace the predictions of an entry that already exists")
    sco = board_command("score", score, "measure every entry (maintainers)")
    sco.add_argument("--ids", nargs="*", help="only these entries")
    sco.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                     help="where simulated datasets are cached")
    sco.add_argument("--imi-data", help="the prepared real IMI dataset, for the imi track")
    sco.add_argument("--n-boot", type=POSITIVE_INT, default=1000, help="bootstrap resamples")
    board_command("render", render, "write README.md and index.html")
    fix = board_command("fix-track", fix_track,
                        "freeze a track's test units from a prepared dataset (once)")
    fix.add_argument("--track", required=True, help="the track whose test units to freeze")
    fix.add_argument("--data", "--imi-data", dest="imi_data", required=True,
                     help="the prepared dataset whose test split becomes the track's units")

