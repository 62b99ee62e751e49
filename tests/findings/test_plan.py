"""`tlr plan`: the seeds and test examples a claim needs, from a pilot's variance components."""

import pytest
import yaml

from tests.conftest import predictions_study
from tl_research import stats
from tl_research.cli.main import main
from tl_research.findings import power_plan
from tl_research.findings.claims import parse_claims
from tl_research.reports import archive
from tl_research.studies.storage import open_storage

CLAIMS = {"claims": [
    {"id": "full>probe", "a": {"freeze.strategy": "full"}, "relation": ">", "b": {"freeze.strategy": "linear_probe"},
     "expected": 0.03},
    {"id": "depth~probe", "a": {"freeze.strategy": "depth"}, "relation": "≈", "within": 0.05,
     "b": {"freeze.strategy": "linear_probe"}},
    {"id": "probe>full", "a": {"freeze.strategy": "linear_probe"}, "relation": ">", "b": {"freeze.strategy": "full"},
     "expected": -0.03}]}


def test_the_plan_sizes_each_claim_for_its_power(tmp_path):
    url = predictions_study(tmp_path, 5)
    claims = parse_claims(CLAIMS).claims
    needs = {n.id: n for n in power_plan.plan_claims(claims, url, {"n5": 5}, "n5", examples=1000)}
    full = needs["full>probe"]
    assert full.source == "expected" and full.effect == pytest.approx(0.03)
    assert (full.seeds, full.examples) == (5, 1000) and 0 < full.power < 1
    level = 0.05 / 3  # one of three claims
    assert full.power == pytest.approx(stats.power(0.03, full.components, 5, 1000, level))
    assert stats.power(0.03, full.components, full.seeds_needed, 1000, level) >= 0.8
    assert stats.power(0.03, full.components, full.seeds_needed - 1, 1000, level) < 0.8
    # with 5 seeds the seed term alone is too large for 0.03 at this level: no test size is enough
    assert full.examples_needed is None and full.seeds_needed > 5
    assert stats.power(0.03, full.components, 5, 10 ** 7, level) < 0.8
    # no expected effect: the pilot's own, labelled post hoc; the equivalence margin is within - |effect|
    depth = needs["depth~probe"]
    assert depth.source == "pilot (post hoc)" and 0 < depth.effect <= 0.05
    assert needs["probe>full"].power is None and "not on the claimed side" in needs["probe>full"].note


def test_tlr_plan_from_a_storage_and_from_an_archive(tmp_path, capsys):
    url = predictions_study(tmp_path, 3)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(CLAIMS, allow_unicode=True))
    assert main(["plan", str(path), "--pilot", url, "--study", "n3", "--seeds", "10", "--test-size", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "| full>probe | > | 0.030 | expected |" in printed and "10 × 2000" in printed
    archive.export(["n3"], open_storage(url, must_exist=True), tmp_path / "results")
    assert main(["plan", str(path), "--pilot", str(tmp_path / "results"), "--study", "n3"]) == 0
    assert "3 × 200" in capsys.readouterr().out  # the pilot's own seeds and test size


@pytest.mark.parametrize("argv, message", [
    (["plan", "CLAIMS"], "--pilot: a claims file is planned from a pilot"),
    (["plan", "CLAIMS", "--pilot", "URL", "--seeds", "1"], "argument --seeds: 1 is below 2"),
    (["plan", "CLAIMS", "--pilot", "URL", "--test-size", "0"], "argument --test-size: 0 is below 2"),
    (["plan", "nosuch"], "finding: 'nosuch' is not a reproduction folder"),
    (["plan", "CLAIMS", "--pilot", "sqlite:///nowhere/x.db"], "--pilot: no study storage at nowhere/x.db"),
    (["plan", "CLAIMS", "--pilot", "nowhere/folder"], "--pilot: nowhere/folder is neither a results archive folder"),
])
def test_bad_plan_input_is_one_line(tmp_path, capsys, argv, message):
    url = predictions_study(tmp_path, 2)
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(CLAIMS, allow_unicode=True))
    argv = [str(path) if a == "CLAIMS" else url if a == "URL" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
