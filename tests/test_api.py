"""The Python API (`from tl_research import ...`): classes without YAML freeze what run() freezes, the build() parts
fitted by the user's own lightning.Trainer give run()'s metrics at the same seed, and study_frame holds the numbers
the report shows."""

import csv
import subprocess
import sys

import lightning.pytorch as L
import numpy as np
import pytest

import tl_research
from tests.conftest import grid_study, tiny_experiment
from tl_research.backbones import build_backbone
from tl_research.errors import UserError
from tl_research.strategies.catalogue import Depth, LinearProbeThenFinetune, Surgical
from tl_research.training.heads import build_head
from tl_research.training.module import TransferModule
from tl_research.training.optim import OptimConfig


def test_importing_the_api_loads_no_framework():
    code = "import sys, tl_research; print(sorted(tl_research.__all__)); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == [
        "['Built', 'Experiment', 'RunResult', '__version__', 'build', 'load_experiment', 'load_run', 'predict', "
        "'run', 'study_frame']", "False"]
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        tl_research.nope  # noqa: B018


def _trainable(module: TransferModule) -> list[bool]:
    return [any(p.requires_grad for p in g.params.values()) for g in module.groups]


def test_a_module_built_from_python_resolves_its_strategy_as_run_does(tmp_path):
    backbone = build_backbone("timm/test_efficientnet", "none")
    n = len(backbone.layer_groups())

    def module(strategy, lr=0.01):
        return TransferModule(build_backbone("timm/test_efficientnet", "none"),
                              build_head(backbone.num_features, 10), strategy, 10, optim=OptimConfig(lr=lr))

    half = module(Depth(fraction=0.5))
    assert _trainable(half) == [i >= round(0.5 * n) for i in range(n)]
    exp = tl_research.load_experiment(data=tiny_experiment(tmp_path, freeze={"strategy": "depth", "fraction": 0.5}))
    result = tl_research.run(exp)
    assert result.metrics["params/trainable"] == sum(p.numel() for p in half.parameters() if p.requires_grad)
    assert _trainable(module(Surgical(group=-1))) == [i == n - 1 for i in range(n)]
    lp_ft = module(LinearProbeThenFinetune(probe="sgd", probe_epochs=1, ft_lr=0.002), lr=0.01)
    assert lp_ft.strategy.ft_scale == pytest.approx(0.2)  # ft_lr / lr: fine-tuning at ft_lr, not ignored
    assert module(half.strategy).strategy == half.strategy  # resolving a resolved strategy changes nothing


def test_the_build_parts_fitted_by_a_users_trainer_give_runs_metrics(tmp_path):
    data = tiny_experiment(tmp_path, freeze={"strategy": "depth", "depth": 2})
    data["trainer"].update(max_epochs=2)
    exp = tl_research.load_experiment(data=data)
    expected = tl_research.run(exp).metrics
    parts = tl_research.build(exp)
    assert isinstance(parts.strategy, Depth) and parts.strategy.depth == 2
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(parts.module, datamodule=parts.data)
    (got,) = trainer.test(parts.module, datamodule=parts.data, verbose=False)
    assert got["test/acc"] == expected["test/acc"] and got["test/loss"] == pytest.approx(expected["test/loss"],
                                                                                         rel=1e-6)


def test_study_frame_holds_the_numbers_the_report_shows(tmp_path):
    accs = {(s, shot, seed): 0.5 + 0.1 * i + 0.01 * seed + 0.001 * shot
            for i, s in enumerate(["linear_probe", "full"]) for shot in (4, 8) for seed in (0, 1, 2)}
    del accs[("full", 8, 2)]  # a missing cell: the frame has the trials there are
    url = grid_study(tmp_path, "fr", ["linear_probe", "full"], [4, 8], [0, 1, 2], accs)
    frame = tl_research.study_frame("fr", url)
    assert len(frame) == len(accs)
    assert {"trial", "freeze.strategy", "data.shots", "seed", "test/acc", "val/acc"} <= set(frame.columns)
    means = frame.groupby(["freeze.strategy", "data.shots"])["test/acc"].mean()
    out = tmp_path / "rep"
    assert subprocess.run([sys.executable, "-m", "tl_research.cli", "report", "fr", "--storage", url, "--out",
                           str(out), "--rows", "freeze.strategy", "--cols", "data.shots"],
                          capture_output=True, timeout=300).returncode == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        assert float(row["mean"]) == pytest.approx(means[(row["row"], int(row["col"]))], abs=1e-12)
    with pytest.raises(UserError, match="no study 'nope'"):
        tl_research.study_frame("nope", url)


def test_study_frame_reads_a_results_archive(tmp_path):
    from tl_research.reports.archive import export
    from tl_research.studies.storage import open_storage

    accs = {(s, 4, seed): 0.6 + 0.1 * i for i, s in enumerate(["linear_probe", "full"]) for seed in (0, 1)}
    url = grid_study(tmp_path, "ar", ["linear_probe", "full"], [4], [0, 1], accs)
    export(["ar"], open_storage(url), tmp_path / "archive", lookups=lambda name: lambda trial, metric=None: None)
    frame = tl_research.study_frame("ar", tmp_path / "archive")
    assert np.allclose(sorted(frame["test/acc"]), sorted(accs.values()))
