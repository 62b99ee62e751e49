import re
from pathlib import Path

import pytest
import yaml

from tl_research.config import Experiment, dump_yaml, from_dict, load_experiment, read_yaml
from tl_research.errors import ConfigWarning, UserError

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))


def test_defaults_and_overrides_are_coerced_to_schema_types():
    exp = load_experiment(data={"backbone": {"name": "timm/resnet18"}},
                          overrides=["optim.lr=1e-3", "freeze.strategy=depth", "freeze.depth=3",
                                     "trainer.deterministic=true", "data.train_limit=null", "optim.weight_decay=0",
                                     "name=42"])
    assert exp.optim.lr == pytest.approx(0.001) and isinstance(exp.optim.lr, float)
    assert exp.freeze.options.depth == 3 and exp.trainer.deterministic is True
    assert exp.data.train_limit is None and isinstance(exp.optim.weight_decay, float)
    assert exp.name == "42"
    assert exp.backbone.name == "timm/resnet18" and exp.backbone.weights == "offline"


@pytest.mark.parametrize("overrides, message", [
    (["freeze.dept=3"], "freeze.dept: unknown key (allowed in freeze: strategy, bn, l2sp, bitfit_norms, depth,"),
    (["bogus=1"], "bogus: unknown key"),
    (["freeze.strategy=depth", "freeze.depth=three"], "freeze.depth: expected an integer or null, got 'three'"),
    (["optim.lr=fast"], "optim.lr: expected a number"),
    (["optim.lr=0"], "optim.lr: 0.0 is out of range (allowed: > 0.0)"),
    (["head.dropout=1.5"], "head.dropout: 1.5 is out of range (allowed: >= 0.0 and < 1.0)"),
    (["freeze.bn=sometimes"], "freeze.bn: 'sometimes' is not allowed (allowed: frozen, eval_stats, train)"),
    (["trainer.deterministic=maybe"], "trainer.deterministic: expected a boolean"),
    (["optim=3"], "optim: expected a mapping"),
    (["novalue"], "expected key=value"),
])
def test_bad_values_name_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(UserError) as err:
        load_experiment(data={}, overrides=overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_and_malformed_yaml(tmp_path):
    with pytest.raises(UserError, match="cannot read config"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        read_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        read_yaml(listy)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    exp = load_experiment(data={"freeze": {"strategy": "depth", "depth": 2}, "optim": {"lr": 0.02}})
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(exp))
    assert load_experiment(path) == exp
    assert from_dict(Experiment, exp.to_dict()) == exp


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_every_experiment_yaml_validates(path):
    """Each YAML parses, its strategy accepts the backbone's group count, and its dataset is registered."""
    from tl_research.backbones import inspect_backbone
    from tl_research.data import DATASETS

    exp = load_experiment(path)
    groups = inspect_backbone(exp.backbone.name)["groups"]
    exp.freeze.options.resolve(len(groups), exp.optim.lr)
    DATASETS.get(exp.data.name, "data.name")


def test_experiments_folder_is_not_empty():
    assert len(EXPERIMENTS) >= 5


STUDIES = sorted((Path(__file__).parent.parent / "experiments" / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_every_study_yaml_validates(path):
    from tl_research.studies.studyspec import load_study

    spec = load_study(path)
    assert spec.name and (spec.cells or spec.config.kind == "search" or spec.arms)
    if spec.config.kind == "search":
        assert spec.config.n_trials >= 30 and spec.config.pruner != "none"
    if spec.config.kind == "tuned":  # every arm tunes something, with a budget worth the name
        assert spec.tune.trials >= 8 and all(spec.tuned)


def test_quickstart_study_is_the_documented_grid():
    from tl_research.cli.quickstart import STUDY
    from tl_research.studies.studyspec import load_study

    spec = load_study(STUDY)
    assert spec.base["backbone"]["weights"] == "offline"
    assert {c["freeze.strategy"] for c in spec.cells} == {"linear_probe", "depth"}
    assert len(spec.cells) == 2 * 4 * 8
    # every seed draws its own support set, so the probe's seeds are not copies of one another
    exp = spec.experiment_for({"freeze.strategy": "linear_probe", "data.shots": 4, "seed": 3})
    assert exp.seed == 3 and exp.data.subset_seed == 3 and exp.data.eval_limit is None


def _flat(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_key_is_documented_in_help_and_readme(capsys):
    """The key list covers every key of the default experiment and every strategy option, each with a meaning;
    `tlr fit --help` shows them all and README's table is the generated one."""
    import dataclasses
    from pathlib import Path

    from tl_research.cli.keydocs import experiment_keys, keys_markdown
    from tl_research.cli.main import main
    from tl_research.config import Experiment
    from tl_research.strategies.freeze_plan import STRATEGIES
    from tl_research.training.regularizers import regularizers

    docs = experiment_keys()
    expected = {k for k in _flat(Experiment().to_dict()) if not k.startswith("freeze.") or k.count(".") > 1
                or k in ("freeze.strategy", "freeze.bn")}
    for _, entry in STRATEGIES.items():
        for f in dataclasses.fields(entry):
            if not f.metadata.get("derived"):
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
                expected |= ({f"freeze.{f.name}.{g.name}" for g in dataclasses.fields(default)}
                             if dataclasses.is_dataclass(default) else {f"freeze.{f.name}"})
    for name, entry in regularizers():  # each regularizer's options, under its name
        expected |= {f"regularize.{name}.{f.name}" for f in dataclasses.fields(entry)}
    assert {"regularize.bss.eta", "regularize.delta.alpha", "regularize.l2sp.alpha"} <= expected
    assert {d.key for d in docs} == expected
    assert all(d.meaning for d in docs), [d.key for d in docs if not d.meaning]
    assert main(["fit", "--help"]) == 0
    shown = capsys.readouterr().out
    assert all(f"  {d.key} = " in shown for d in docs)
    assert keys_markdown() in Path("README.md").read_text()


def test_an_option_of_another_backbone_family_is_refused_not_ignored(tmp_path, tiny_bert):
    from tests.conftest import tiny_experiment
    from tl_research.errors import UserError

    with pytest.raises(UserError, match=r"backbone.pooling: 'cls' is an option of hf backbones; "
                                        r"timm/test_efficientnet does not take it"):
        load_experiment(data=tiny_experiment(tmp_path, backbone={"pooling": "cls"}))
    with pytest.raises(UserError, match=r"backbone.coarse: True is an option of timm backbones"):
        load_experiment(data=tiny_experiment(tmp_path, backbone={"name": f"hf/{tiny_bert}", "coarse": True}))
    # left at their defaults (as every config.yaml a run wrote holds them), other families' options load
    exp = load_experiment(data=tiny_experiment(tmp_path, backbone={"pooling": "mean", "max_length": 128}))
    assert exp.backbone.pooling == "mean"


def test_grid_cells_sweeping_backbones_are_checked_against_their_own_backbone(tmp_path, tiny_bert):
    """A family sweep shares one base: each cell keeps the options its family takes; a freeze depth is checked
    against the cell's own backbone (timm/test_efficientnet has 6 groups, mobilenetv2 18)."""
    import yaml

    from tests.conftest import tiny_experiment
    from tl_research.errors import UserError
    from tl_research.studies.studyspec import load_study

    def study(grid, **backbone):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({"experiment": tiny_experiment(tmp_path, backbone=backbone),
                                        "study": {"name": "s", "kind": "grid", "grid": grid}}))
        return load_study(path)

    spec = study({"backbone.name": ["timm/test_efficientnet", f"hf/{tiny_bert}"]}, name=f"hf/{tiny_bert}",
                 max_length=24, pooling="cls")
    cells = {spec.experiment_for(c).backbone.name: spec.experiment_for(c).backbone for c in spec.cells}
    assert cells[f"hf/{tiny_bert}"].max_length == 24 and cells[f"hf/{tiny_bert}"].pooling == "cls"
    assert cells["timm/test_efficientnet"].max_length == 128  # not an option of timm: back to its default
    grid = {"backbone.name": ["timm/mobilenetv2_100", "timm/test_efficientnet"], "freeze.strategy": ["depth"],
            "freeze.depth": [10]}
    with pytest.raises(UserError, match="freeze.depth: 10 is more than the backbone's 6 layer groups"):
        study(grid, name="timm/mobilenetv2_100")


@pytest.mark.parametrize("sections, message", [
    ({"head": {"hidden": 64}}, "head.hidden: takes effect only when head.type is mlp (here linear)"),
    ({"optim": {"momentum": 0.5}}, "optim.momentum: takes effect only when optim.name is sgd (here adamw)"),
    ({"optim": {"plateau_patience": 3}}, "optim.plateau_patience: takes effect only when optim.schedule is plateau"),
    ({"optim": {"schedule": "one_cycle", "warmup_epochs": 1}}, "optim.warmup_epochs: takes effect only when"),
    ({"data": {"text_column": "review"}}, "data.text_column: takes effect only when data.name is csv_text"),
    ({"data": {"x_key": "images"}}, "data.x_key: takes effect only when data.name is npz (here animal-mnist)"),
])
def test_an_option_that_would_not_take_effect_is_refused(tmp_path, sections, message):
    from tests.conftest import tiny_experiment
    from tl_research.errors import UserError

    with pytest.raises(UserError, match=re.escape(message)):
        load_experiment(data=tiny_experiment(tmp_path, **sections))


def test_a_sweep_over_the_option_others_depend_on_keeps_each_cells_own(tmp_path):
    import yaml

    from tests.conftest import tiny_experiment
    from tl_research.studies.studyspec import load_study

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"experiment": tiny_experiment(tmp_path, optim={"name": "sgd", "momentum": 0.5}),
                                    "study": {"name": "s", "kind": "grid", "grid": {"optim.name": ["sgd", "adamw"]}}}))
    spec = load_study(path)
    momentum = {spec.experiment_for(c).optim.name: spec.experiment_for(c).optim.momentum for c in spec.cells}
    assert momentum == {"sgd": 0.5, "adamw": 0.9}  # adamw has no momentum: back to the default it ignores


def test_a_typo_in_another_strategys_option_is_named_not_hidden_by_the_ignored_warning(tmp_path):
    from tests.conftest import tiny_experiment
    from tl_research.errors import UserError

    with pytest.raises(UserError, match=re.escape("freeze.lora.rnak: unknown key (allowed in freeze.lora: rank")):
        load_experiment(data=tiny_experiment(tmp_path, freeze={"strategy": "full", "lora": {"rnak": 4}}))
    with pytest.raises(UserError, match="freeze.depth: expected an integer or null, got 'deep'"):
        load_experiment(data=tiny_experiment(tmp_path, freeze={"strategy": "full", "depth": "deep"}))
    with pytest.warns(ConfigWarning, match="freeze.lora is ignored by strategy full"):  # well-formed: dropped
        exp = load_experiment(data=tiny_experiment(tmp_path, freeze={"strategy": "full", "lora": {"rank": 4}}))
    assert "lora" not in exp.to_dict()["freeze"]


DEPTH_YAML = Path(__file__).parents[1] / "experiments" / "mobilenetv2_animal_depth.yaml"


def test_switching_strategy_from_the_command_line_drops_the_yamls_options_of_the_old_one(capsys):
    from tl_research.cli.main import main

    assert main(["config", str(DEPTH_YAML), "--set", "freeze.strategy=linear_probe"]) in (0, None)
    out, err = capsys.readouterr()
    freeze = yaml.safe_load(out)["freeze"]
    assert freeze["strategy"] == "linear_probe" and "depth" not in freeze
    assert err.strip() == (f"note: freeze.depth from {DEPTH_YAML} is dropped: strategy linear_probe does not "
                           f"take it")
    # an option the user sets on the command line for a strategy that ignores it is still refused
    assert main(["config", str(DEPTH_YAML), "--set", "freeze.strategy=linear_probe", "--set", "freeze.depth=4"]) == 2
    assert "freeze.depth is ignored by strategy linear_probe" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, expected", [
    (["freeze.depth=null", "freeze.strategy=linear_probe"], {"strategy": "linear_probe"}),
    (["freeze.strategy=llrd", "freeze.decay=0.5", "freeze.decay=null"], {"strategy": "llrd", "decay": 0.75}),
])
def test_null_on_the_command_line_unsets_a_strategy_option(capsys, overrides, expected):
    from tl_research.cli.main import main

    argv = ["config", str(DEPTH_YAML)] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) in (0, None)
    freeze = yaml.safe_load(capsys.readouterr().out)["freeze"]
    assert {k: freeze[k] for k in expected} == expected and "depth" not in freeze
