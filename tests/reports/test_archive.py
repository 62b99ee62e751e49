"""Results archives: what a study was judged on, exported and re-judged without run folders or the storage."""

import shutil

import numpy as np
import optuna
import pytest

from tests.conftest import predictions_study
from tl_research.errors import UserError
from tl_research.findings.claims import check_claims, to_markdown
from tl_research.reports import archive, predictions
from tl_research.reports.report import run_report
from tl_research.reports.report import to_markdown as table_markdown
from tl_research.studies.storage import open_storage

CLAIMS = [{"id": "full>probe", "a": {"freeze.strategy": "full"}, "relation": ">",
           "b": {"freeze.strategy": "linear_probe"}},
          {"id": "depth~probe", "a": {"freeze.strategy": "depth"}, "relation": "≈", "within": 0.05,
           "b": {"freeze.strategy": "linear_probe"}}]


def test_an_archive_rejudges_to_the_same_bytes_without_run_folders_or_storage(tmp_path):
    url = predictions_study(tmp_path, 3)
    live_table, _ = run_report("n3", url, tmp_path / "live", track=False)
    live = to_markdown(check_claims(CLAIMS, "n3", url))
    files = archive.export(["n3"], open_storage(url, must_exist=True), tmp_path / "archive")
    assert [f.name for f in files] == ["studies.journal", "predictions.npz"]
    stored = open_storage(url, must_exist=True)
    opened = archive.Archive(tmp_path / "archive")
    # every trial's archived predictions are its run folder's, label for label
    for trial in optuna.load_study(study_name="n3", storage=stored).get_trials():
        mine, theirs = opened.lookups("n3")(trial), predictions.from_run_folder(trial)
        assert all(np.array_equal(a, b) for a, b in zip(mine, theirs))
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "n3.db").unlink()
    opened = archive.Archive(tmp_path / "archive")
    table, _ = run_report("n3", opened.storage, tmp_path / "again", lookup=opened.lookups("n3"), track=False)
    assert {c.interval.method for c in table.cells.values()} == {"crossed-t"}
    assert table_markdown(table) == table_markdown(live_table)
    assert to_markdown(check_claims(CLAIMS, "n3", opened.storage, opened.lookups)) == live
    # without the archive's predictions the same trials fall back to seeds-only intervals, and say so
    bare, _ = run_report("n3", opened.storage, tmp_path / "bare", track=False)
    assert {c.interval.method for c in bare.cells.values()} == {"seeds-t"}


def test_shifted_predictions_give_crossed_intervals_live_and_archived(tmp_path):
    """The mean over shifted test sets is scored per example like test/acc (an image under 3 shifts is one example:
    its share right), in the run folders and in the archive alike."""
    url = predictions_study(tmp_path, 3, shifts=3)
    ood = [{**c, "metric": "test_shifted/acc"} for c in CLAIMS]
    live = check_claims(ood, "n3", url)
    assert {v.method for v in live} == {"crossed-t"}
    trial = optuna.load_study(study_name="n3", storage=open_storage(url, must_exist=True)).trials[0]
    x, index = predictions.correct_matrix([trial], [trial.user_attrs["test_shifted/acc"]], predictions.from_run_folder,
                                          "test_shifted/acc")
    assert x.shape == (1, 200) and np.array_equal(index, np.arange(200)) and set(np.unique(3 * x)) <= {0, 1, 2, 3}
    archive.export(["n3"], open_storage(url, must_exist=True), tmp_path / "archive")
    shutil.rmtree(tmp_path / "runs")
    opened = archive.Archive(tmp_path / "archive")
    assert to_markdown(check_claims(ood, "n3", opened.storage, opened.lookups)) == to_markdown(live)
    assert opened.lookups("n3")(trial, "test/acc") is not None  # test/acc's predictions beside them


def test_the_archive_is_small(tmp_path):
    """Predicted labels per trial (offsets from the label: zero where right) and the test set once, compressed:
    30 trials x 1,000 examples, 10 classes, 70-80 % right, in under 8 KB (30 KB as one byte per prediction)."""
    url = predictions_study(tmp_path, 10, size=1000)
    archive.export(["n10"], open_storage(url, must_exist=True), tmp_path / "archive")
    with np.load(tmp_path / "archive" / "predictions.npz") as z:
        assert sum(k.startswith("sets/") for k in z.files) == 2  # one test set: its index and labels
        assert z["n10/offsets"].dtype == np.uint8 and z["n10/offsets"].shape == (30 * 1000,)
    assert (tmp_path / "archive" / "predictions.npz").stat().st_size < 8 * 1000


def test_a_folder_without_an_archive_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no results archive here"):
        archive.Archive(tmp_path)
