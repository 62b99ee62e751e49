"""Several processes for one run: DDP over 2 CPU processes (gloo) through the real `tlr fit` command, which
Lightning re-launches for the second process; and torch.compile."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_experiment
from tl_research.adapters.wandb import decode, run_file
from tl_research.cli.main import main


def _tlr(tmp_path, *args, timeout=600):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "tl_research.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "wandb" not in p.parts)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run(tmp_path):
    """Same result files as one process, written once: one run folder (chosen once, no --out), one metrics.json,
    every test example predicted exactly once, one W&B run; gradual unfreezing (a plan that changes between
    epochs) trains under DDP."""
    sections = {"tracking": {"mode": "offline"}, "data": {"train_limit": 48}, "trainer": {"max_epochs": 2},
                "freeze": {"strategy": "gradual_unfreeze", "every_n_epochs": 1}}
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(tiny_experiment(tmp_path / "one", **sections)))
    ddp = tmp_path / "ddp.yaml"
    ddp.write_text(yaml.safe_dump(tiny_experiment(tmp_path / "two", **sections)))
    one = _tlr(tmp_path, "fit", str(single))
    assert one.returncode == 0, one.stderr[-3000:]
    two = _tlr(tmp_path, "fit", str(ddp), "trainer.devices=2", "trainer.strategy=ddp")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run folder:") == 1  # one report, from rank 0
    [one_dir] = list((tmp_path / "one" / "runs" / "tiny").iterdir())
    [two_dir] = list((tmp_path / "two" / "runs" / "tiny").iterdir())  # one folder for both processes
    assert _files(two_dir) == _files(one_dir)
    metrics = json.loads((two_dir / "metrics.json").read_text())
    split = json.loads((two_dir / "split.json").read_text())
    with np.load(two_dir / "predictions.npz") as z:
        assert sorted(z["index"].tolist()) == sorted(split["test"])  # each test example once, none padded in
        assert metrics["test/acc"] == pytest.approx(float((z["pred"] == z["label"]).mean()))
    runs = list((two_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = decode(run_file(runs[0]))
    assert record["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert {row.get("epoch") for row in record["history"] if "val/acc" in row} == {0, 1}  # each epoch logged once


@pytest.mark.parametrize("sets, message", [
    (["trainer.strategy=ddp"], "trainer.strategy: ddp needs more than one process"),
    (["trainer.num_nodes=2"], "trainer.num_nodes: a multi-node run needs --out"),
    (["trainer.devices=2", "trainer.accelerator=cpu", "freeze.strategy=linear_probe", "freeze.probe=lbfgs"],
     "freeze.probe: the L-BFGS probe is one full-batch solve on one process"),
])
def test_what_ddp_cannot_do_is_refused(tmp_path, capsys, sets, message):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    assert main(["fit", str(cfg), *sets]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_compiled_run_matches_the_eager_run(tmp_path):
    """trainer.compile: the same run with the backbone's forward compiled (inductor on CPU) ends with the same
    weights' accuracy, and its checkpoint keys are the eager run's (a compiled run reloads anywhere)."""
    import torch

    from tl_research.config import load_experiment
    from tl_research.pipeline import run

    base = tiny_experiment(tmp_path, trainer={"max_epochs": 1}, cache={"mode": "off"})
    eager = run(load_experiment(data=base), tmp_path / "eager")
    compiled = run(load_experiment(data={**base, "trainer": {**base["trainer"], "compile": True}}), tmp_path / "c")
    assert compiled.metrics["test/acc"] == pytest.approx(eager.metrics["test/acc"], abs=0.05)
    keys = [set(torch.load(r.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"])
            for r in (eager, compiled)]
    assert keys[0] == keys[1]


def test_ddp_registers_every_group_any_epoch_trains(tmp_path):
    """Before DDP wraps the module, every group some epoch's plan trains is trainable (DDP only synchronises what
    was trainable when it wrapped); the first epoch's plan is what training starts from."""
    from tl_research.config import load_experiment
    from tl_research.pipeline import build_backbone_from, build_module_from

    exp = load_experiment(data=tiny_experiment(tmp_path, freeze={"strategy": "gradual_unfreeze"}))
    backbone = build_backbone_from(exp)
    module = build_module_from(exp, backbone, 10)
    n = len(module.groups)
    assert not any(p.requires_grad for g in module.groups for p in g.params.values())  # epoch 0: head only
    assert module.train_every_planned_group(3) is True
    trainable = [any(p.requires_grad for p in g.params.values()) for g in module.groups]
    assert trainable == [i >= n - 2 for i in range(n)]  # epochs 1 and 2 unfreeze the top two groups
    module.set_plan(module.strategy.plan(n, 0))
    assert not any(p.requires_grad for g in module.groups for p in g.params.values())
    depth = build_module_from(load_experiment(data=tiny_experiment(tmp_path, freeze={"strategy": "depth",
                                                                                     "depth": 1})), backbone, 10)
    assert depth.train_every_planned_group(3) is False
