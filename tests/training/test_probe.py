"""The converged linear probe: L-BFGS logistic regression against scikit-learn, in runs and in LP-FT."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from tests.conftest import tiny_experiment
from tl_research.config import load_experiment
from tl_research.errors import UserError
from tl_research.pipeline import run
from tl_research.training.probe import fit_logistic, fit_probe


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x, y = d.data / 16.0, d.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    tr, va, te = order[:600], order[600:900], order[900:]
    return tuple(torch.tensor(a) for a in (x[tr], y[tr], x[va], y[va], x[te], y[te]))


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_lbfgs_matches_sklearn_logistic_regression(digits, c):
    xt, yt, _, _, xs, ys = digits
    sk = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(xt.numpy(), yt.numpy())
    w, b, _ = fit_logistic(xt, yt, 10, 1.0 / (c * len(yt)))  # the run's settings
    ours = float(((xs.double() @ w.T + b).argmax(1) == ys).double().mean())
    assert abs(ours - sk.score(xs.numpy(), ys.numpy())) <= 0.005
    # run to tight tolerances, it is the same optimum
    w, b, _ = fit_logistic(xt, yt, 10, 1.0 / (c * len(yt)), max_iter=1000, tolerance_grad=1e-8,
                           tolerance_change=1e-12)
    assert np.abs(w.numpy() - sk.coef_).max() < 0.05 * np.abs(sk.coef_).max()


def test_probe_grid_keeps_the_best_validation_accuracy(digits):
    xt, yt, xv, yv, _, _ = digits
    grid = [1e-4, 1e-2, 1.0]
    fit = fit_probe(xt, yt, xv, yv, 10, grid)
    assert set(fit.grid) == set(grid)
    for l2 in grid:  # each grid point fitted independently (no warm start) lands on the same accuracy
        w, b, _ = fit_logistic(xt, yt, 10, l2, max_iter=1000, tolerance_grad=1e-8, tolerance_change=1e-12)
        assert fit.grid[l2] == pytest.approx(float(((xv.double() @ w.T + b).argmax(1) == yv).double().mean()),
                                             abs=0.0034)
    assert fit.grid[fit.l2] == max(fit.grid.values())


def _probe_run(tmp_path, name, **sections):
    sections.setdefault("freeze", {"strategy": "linear_probe"})
    return run(load_experiment(data=tiny_experiment(tmp_path, name=name, **sections)))


def test_lbfgs_probe_run_is_one_solve_saved_as_a_normal_checkpoint(tmp_path):
    result = _probe_run(tmp_path, "lb")
    m = result.metrics
    # one solve before Lightning trains anything: no SGD epoch runs, and the head is not trained further
    assert m["probe/solver"] == "lbfgs" and m["cache/used"] is True and m["epochs"] == 0
    saved = np.load(result.run_dir / "predictions.npz")
    assert m["probe/l2"] > 0 and m["test/acc"] == pytest.approx(float(np.mean(saved["pred"] == saved["label"])))
    # the checkpoint holds the head the solver found: refit on the split's features independently
    state = torch.load(result.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    from tl_research.pipeline import build_backbone_from

    exp = load_experiment(result.run_dir / "config.yaml")
    torch.manual_seed(exp.seed)  # weights: none, drawn as run() draws them
    backbone = build_backbone_from(exp).eval()
    split = json.loads((result.run_dir / "split.json").read_text())
    from tl_research.data.datamodule import input_collates, load_data

    raw = load_data(exp.data, "image")
    collate, _ = input_collates(backbone.preprocessing, exp.data)
    with torch.no_grad():
        feats = {p: backbone(collate([(raw.inputs[i], 0) for i in split[p]])[0]) for p in ("train", "val")}
    fit = fit_probe(feats["train"], torch.tensor(raw.labels[split["train"]]), feats["val"],
                    torch.tensor(raw.labels[split["val"]]), 10)
    assert fit.l2 == pytest.approx(m["probe/l2"], rel=1e-5)
    # the run's features came from the cache (float32 rows of the same forward): the same optimum up to tolerance
    assert torch.allclose(state["head.1.weight"], fit.weight, rtol=1e-3, atol=1e-3)
    assert m["val/acc"] == pytest.approx(m["probe/val_acc"], abs=1e-6)  # validated once: the probe's own choice


def test_lbfgs_probe_without_the_cache_and_sgd_on_request(tmp_path):
    cached = _probe_run(tmp_path, "c").metrics
    nocache = _probe_run(tmp_path, "n", cache={"mode": "off"}).metrics  # auto + no cache: SGD epochs
    assert nocache["probe/solver"] == "sgd" and nocache["epochs"] == 2
    forced = _probe_run(tmp_path, "f", cache={"mode": "off"}, freeze={"strategy": "linear_probe",
                                                                       "probe": "lbfgs"}).metrics
    assert forced["probe/solver"] == "lbfgs" and forced["cache/used"] is True  # computed once, thrown away
    assert forced["test/acc"] == pytest.approx(cached["test/acc"], abs=1e-6)
    sgd = _probe_run(tmp_path, "s", freeze={"strategy": "linear_probe", "probe": "sgd"}).metrics
    assert sgd["probe/solver"] == "sgd" and sgd["cache/used"] is True and sgd["epochs"] == 2
    with pytest.raises(UserError, match="freeze.probe: lbfgs fits the head on features computed once, but here "
                                        "train-time augmentation"):
        _probe_run(tmp_path, "a", data={"augment": {"hflip": True}}, freeze={"strategy": "linear_probe",
                                                                            "probe": "lbfgs"})
    with pytest.raises(UserError, match="freeze.probe: lbfgs fits a linear head"):
        _probe_run(tmp_path, "m", head={"type": "mlp"}, freeze={"strategy": "linear_probe", "probe": "lbfgs"})


def test_lp_ft_fine_tunes_from_the_converged_probe(tmp_path):
    import lightning.pytorch as L

    class HeadAtStart(L.Callback):
        def on_train_start(self, trainer, module):
            self.head = module.head[-1].weight.detach().clone()
            self.trainable = all(p.requires_grad for p in module.backbone.parameters())

    probe_run = _probe_run(tmp_path, "p")
    cb = HeadAtStart()
    exp = load_experiment(data=tiny_experiment(tmp_path, name="lpft", freeze={"strategy": "lp_ft", "probe_epochs": 1}))
    m = run(exp, callbacks=[cb]).metrics
    assert m["probe/solver"] == "lbfgs" and m["probe/l2"] == pytest.approx(probe_run.metrics["probe/l2"], rel=1e-5)
    probe_head = torch.load(probe_run.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    # fine-tuning starts from the probe (found again from the cached features, rows in split order)
    assert torch.allclose(cb.head, probe_head["head.1.weight"], rtol=1e-3, atol=1e-3)
    assert cb.trainable  # and everything trains from epoch 0: the probe phase is already done
