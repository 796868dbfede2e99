"""Zoo scans as array jobs (submitit): the tasks planned are the work still missing; bad launch
options are refused before any work; through submitit's local executor a scan writes the table a
one-process scan writes, and a rerun after a lost shard recomputes only that shard."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from interpscore.cli import main
from interpscore.zoo.cluster import ShardTask, plan
from interpscore.zoo.options import LaunchOptions
from interpscore.zoo.scan import ZooRequest

MODEL = "resnet18@random"
TINY = ["--checkpoint", "mis", "--models", MODEL, "--layers", "layer1.0,layer4.1",
        "--units", "2/layer", "--image-size", "32", "--pool-size", "240", "--n-refs", "4",
        "--n-batches", "3", "--pool-shards", "3"]


def test_plan_lists_the_missing_shards_of_unfinished_models(tmp_path):
    request = ZooRequest("mis", pool_shards=3)
    models = ["resnet18@random", "resnet34@random", "efficientnet_lite0"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "resnet34-random.parquet").write_text("done")  # a finished model
    shards = tmp_path / "work" / "resnet18-random" / "shards"
    shards.mkdir(parents=True)
    (shards / "activations-1-of-3.pt").write_text("done")
    (shards / "activations-0-of-2.pt").write_text("another split: not this scan's")
    tasks, to_score = plan(tmp_path, models, request)
    assert tasks == [ShardTask("resnet18@random", 0), ShardTask("resnet18@random", 2),
                     ShardTask("efficientnet_lite0", 0), ShardTask("efficientnet_lite0", 1),
                     ShardTask("efficientnet_lite0", 2)]
    assert to_score == ["resnet18@random", "efficientnet_lite0"]


@pytest.mark.parametrize("extra, problem", [
    (["--launcher", "submitit", "--submitit-cluster", "slurm"], "--submitit-cluster slurm: no `sbatch`"),
    (["--slurm-partition", "gpu"], "--slurm-partition: only used with --launcher submitit"),
    (["--launcher", "submitit", "--submitit-cluster", "local", "--shard", "0/2"], "--shard:"),
    (["--launcher", "submitit", "--slurm-time", "2h"], "--slurm-time 2h: give a duration"),
])
def test_bad_launch_options_exit_2_before_any_work(tmp_path, monkeypatch, capsys, extra, problem):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    out = tmp_path / "scan"
    assert main(["zoo", *TINY, "--out", str(out), *extra]) == 2
    assert capsys.readouterr().err.startswith(f"error: {problem}")
    assert not out.exists()


def test_submitit_not_installed_is_said_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # what find_spec sees when it is absent
    out = tmp_path / "scan"
    assert main(["zoo", *TINY, "--out", str(out), "--launcher", "submitit",
                 "--submitit-cluster", "local"]) == 2
    err = capsys.readouterr().err
    assert "--launcher submitit: submitit is not installed" in err and "interpscore[cluster]" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The plain one-process scan."""
    base = tmp_path_factory.mktemp("cluster")
    assert main(["zoo", *TINY, "--cache-dir", str(base / "cache"), "--out", str(base / "one")]) == 0
    return base


def _scores(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "scores.parquet")


@pytest.mark.slow
def test_local_array_jobs_write_the_one_process_table_and_resume_by_shard(reference, capsys):
    pytest.importorskip("submitit")
    base = reference
    cluster = ["--launcher", "submitit", "--submitit-cluster", "local", "--slurm-time", "10",
               "--cache-dir", str(base / "cache")]
    out = base / "array"
    assert main(["zoo", *TINY, *cluster, "--out", str(out)]) == 0
    assert "array jobs: 3 activation pass(es) of (model, pool shard), 1 model(s)" in \
        capsys.readouterr().out
    pd.testing.assert_frame_equal(_scores(out), _scores(base / "one"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary_by_layer.csv"),
                                  pd.read_csv(base / "one" / "summary_by_layer.csv"))
    assert sorted(p.name for p in (out / "submitit").iterdir())  # the jobs' logs are kept there

    # A scan whose first pool shard was lost (its job killed): only that shard runs again.
    lost = base / "lost"
    lost.mkdir()
    shutil.copy(out / "zoo.json", lost / "zoo.json")  # the scan was started, then interrupted
    from interpscore.metric.scorer import load
    from interpscore.zoo.scan import scan_shard

    request = ZooRequest(**json.loads((lost / "zoo.json").read_text())["request"])
    scorer = load("mis", cache_dir=base / "cache")
    for rank in (1, 2):  # the two shards saved before the loss
        scan_shard(scorer, MODEL, request, lost, rank)
    capsys.readouterr()
    assert main(["zoo", *TINY, *cluster, "--out", str(lost)]) == 0
    assert "array jobs: 1 activation pass(es) of (model, pool shard), 1 model(s)" in \
        capsys.readouterr().out
    pd.testing.assert_frame_equal(_scores(lost), _scores(base / "one"))

    # A finished scan submits nothing and keeps its table.
    assert main(["zoo", *TINY, *cluster, "--out", str(out)]) == 0
    assert "array jobs: 0 activation pass(es) of (model, pool shard), 0 model(s)" in \
        capsys.readouterr().out
    pd.testing.assert_frame_equal(_scores(out), _scores(base / "one"))


def test_launch_options_default_to_todays_local_scan():
    assert LaunchOptions().launcher == "local"


def test_a_failed_array_job_is_reported_with_its_log_and_exit_1(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    import interpscore.zoo.cluster as cluster

    def broken(scorer, spec, request, out, rank):
        raise KeyError(f"shard {rank} lost its node")  # not a model's fault: the job fails

    monkeypatch.setattr(cluster, "scan_shard", broken)
    monkeypatch.setattr("pdb.post_mortem", lambda *args: None)  # the debug executor's debugger
    out = tmp_path / "scan"
    assert main(["zoo", *TINY, "--out", str(out), "--launcher", "submitit",
                 "--submitit-cluster", "debug", "--cache-dir", str(tmp_path / "cache")]) == 1
    printed = capsys.readouterr().out
    assert printed.count("failed: ShardTask(spec='resnet18@random'") == 3
    assert "lost its node" in printed and f"log: {out / 'submitit'}" in printed
    assert "3 array job(s) failed; rerun the same command to resume" in printed
    assert not (out / "models").exists() and not (out / "scores.parquet").exists()


def test_slurm_options_reach_the_sbatch_script(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from interpscore.zoo.cluster import check_launcher, executor_for

    for name in ("sbatch", "srun"):  # stand-ins: nothing is submitted
        (tmp_path / name).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    launch = LaunchOptions(launcher="submitit", slurm_partition="gpu", slurm_gpus_per_task=1,
                           slurm_time=150, slurm_array_parallelism=8)
    check_launcher(launch)  # sbatch and srun found: accepted
    executor = executor_for(launch, tmp_path / "logs" / "%j")
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-task=1", "#SBATCH --time=150",
                 "#SBATCH --job-name=interpscore-zoo"):
        assert line in script
    assert executor._executor.parameters["array_parallelism"] == 8
