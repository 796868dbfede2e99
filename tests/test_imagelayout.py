import shutil

import pytest

from imi_table import build_table
from interpscore.data.dataset import prepare
from interpscore.data.layouts import ImageIndex, MissingImages, resolve_trial

HOST = "https://example.org/static/experiments"


@pytest.fixture(scope="module")
def index(imi_fixtures):
    return ImageIndex(imi_fixtures)


def _row(max_query="", **extra):
    row = dict(model="m", model_label="m", layer="l", channel=0, batch=None, mode="natural",
               max_query=max_query, min_query=max_query.replace("max", "min"),
               max_references=[], min_references=[])
    row.update(extra)
    return row


def test_per_task_urls_with_reference_lists(index):
    base = f"{HOST}/screenshots_9_references/task_1/trials/trial_1"
    row = _row(f"{base}/queries/max.png",
               max_references=[f"{base}/references/max_{i}.png" for i in range(9)],
               min_references=[f"{base}/references/min_{i}.png" for i in range(1, 10)])
    found = resolve_trial(index, row)
    assert found.query_max == "screenshots_9_references/task_1/trials/trial_1/queries/max.png"
    assert found.refs_min[0].endswith("trial_1/references/min_1.png") and len(found.refs_min) == 9


def test_natural_references_starting_at_one(index):
    found = resolve_trial(index, _row(f"{HOST}/demo_natural_9_references/trials/trial_1/queries/max.png"))
    assert [p.rsplit("/", 1)[1] for p in found.refs_min] == [f"min_{i}.png" for i in range(1, 10)]
    assert [p.rsplit("/", 1)[1] for p in found.refs_max] == [f"max_{i}.png" for i in range(9)]


def test_optimized_trials_have_ten_references(index):
    found = resolve_trial(index, _row(f"{HOST}/demo_optimized_9_references/trials/trial_2/queries/max.png",
                                      mode="optimized"))
    assert len(found.refs_max) == len(found.refs_min) == 10
    assert found.query_min.endswith("demo_optimized_9_references/trials/trial_2/queries/min.png")


def test_flat_batch_folder_uses_nine_as_query_and_index_json(index):
    nine = resolve_trial(index, _row(f"{HOST}/exp1/task_1/trials/trial_1/queries/max.png"))
    assert nine.query_max == "flat_batch_experiments/exp1/task_1/trials/trial_1/max_9.png"
    assert len(nine.refs_max) == 9 and not any(p.endswith("_9.png") for p in nine.refs_max)
    four = resolve_trial(index, _row(f"{HOST}/exp4/task_1/trials/trial_1/queries/max.png"))
    assert [p.rsplit("/", 1)[1] for p in four.refs_min] == [f"min_{i}.png" for i in range(4)]


def test_ambiguous_short_suffix_is_not_guessed(index):
    # `trials/trial_1` exists in several experiments: without a prefix nothing is picked.
    assert resolve_trial(index, _row("trials/trial_1/queries/max.png")) is None
    assert resolve_trial(index, _row(f"{HOST}/task_7/trials/trial_1/queries/max.png")) is None


@pytest.fixture
def store(tmp_path, imi_fixtures):
    """A stimulus store built from the real fixture images."""
    unit = tmp_path / "images" / "resnet50" / "layer1.0.conv1" / "channel_3"
    shutil.copytree(imi_fixtures / "flat_batch_experiments/exp1/task_1/trials/trial_1",
                    unit / "natural_images" / "batch_0")
    shutil.copytree(imi_fixtures / "demo_optimized_9_references/trials/trial_2/references",
                    unit / "optimized_images")
    return tmp_path / "images"


def test_stimulus_store_layout(store):
    index = ImageIndex(store)
    row = _row(model="resnet50", model_label="resnet50", layer="layer1.0.conv1", channel=3, batch=0)
    natural = resolve_trial(index, row)
    assert natural.query_max == "resnet50/layer1.0.conv1/channel_3/natural_images/batch_0/max_9.png"
    assert len(natural.refs_max) == 9
    optimized = resolve_trial(index, dict(row, mode="optimized"))
    assert optimized.query_max == natural.query_max  # queries are always natural images
    assert optimized.refs_max[0] == "resnet50/layer1.0.conv1/channel_3/optimized_images/max_0.png"
    assert len(optimized.refs_min) == 10
    assert resolve_trial(index, dict(row, batch=5)) is None


def _table_on_fixture_urls():
    table = build_table()
    table["max_query"] = f"{HOST}/screenshots_9_references/task_1/trials/trial_1/queries/max.png"
    table["min_query"] = table["max_query"].str.replace("max.png", "min.png")
    table["max_references"] = "[]"
    table["min_references"] = "[]"
    return table


def test_prepare_resolves_images_relative_to_root(tmp_path, imi_fixtures):
    path = tmp_path / "r.csv"
    _table_on_fixture_urls().to_csv(path, index=False)
    trials = prepare(path, tmp_path / "ds", images=imi_fixtures).trials
    assert (trials["query_max"] == "screenshots_9_references/task_1/trials/trial_1/queries/max.png").all()
    assert all(len(refs) == 9 for refs in trials["refs_min"])  # min_1..min_9
    assert all((imi_fixtures / p).is_file() for p in trials["refs_max"].iloc[0])


def test_missing_images_error_and_allow_missing(tmp_path, imi_fixtures):
    table = _table_on_fixture_urls()
    lost = table["layer"] == "layer1.0.conv1"
    table.loc[lost, "max_query"] = f"{HOST}/nowhere/task_9/trials/trial_1/queries/max.png"
    path = tmp_path / "r.csv"
    table.to_csv(path, index=False)
    with pytest.raises(MissingImages, match=r"(?s)images of 1 distinct trial\(s\) not found.*"
                       r"imi_task_tree/\.\.\./task_9/trials/trial_1/queries/max\.png") as err:
        prepare(path, tmp_path / "ds", images=imi_fixtures)
    assert "--allow-missing" in str(err.value) and not (tmp_path / "ds").exists()
    result = prepare(path, tmp_path / "ds", images=imi_fixtures, allow_missing=True)
    assert "layer1.0.conv1" not in set(result.trials["layer"])
    assert any(r["criterion"].startswith("images missing") for r in result.report.rows)


def test_images_root_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no images"):
        ImageIndex(tmp_path / "empty")


def test_trial_folders_and_pools_take_the_same_image_files(tmp_path):
    """One list of image suffixes: an image the pool reads is one a trial folder may hold."""
    from PIL import Image

    from interpscore.stimuli.pools import FolderPool

    for name in ("a.png", "b.JPG", "c.jpeg", "d.webp", "e.bmp", "f.tif", "g.tiff"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    expected = ["a.png", "b.JPG", "c.jpeg", "d.webp", "e.bmp", "f.tif", "g.tiff"]
    assert ImageIndex(tmp_path).files == expected
    pool = FolderPool(tmp_path, size=8)
    assert [p.name for p in pool.paths] == expected
    assert tuple(pool[6].shape) == (3, 8, 8)  # the TIFF decodes
