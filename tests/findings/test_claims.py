"""`tlr check`: claims judged on a study whose trials carry known metrics (the verdicts follow from the numbers)."""

import pytest
import yaml

from tests.conftest import grid_study
from tl_research.cli.main import main
from tl_research.findings.claims import check_claims, load_claims

STRATEGIES, SHOTS, SEEDS = ["linear_probe", "full"], [1, 4, 16], [0, 1, 2, 3, 4]
PROBE = {1: 0.60, 4: 0.70, 16: 0.80}
FULL = {1: 0.50, 4: 0.70, 16: 0.90}
TIE = [0.02, -0.02, 0.01, -0.01, 0.0]  # full - probe at 4 shots, per seed: a mean of zero


@pytest.fixture
def url(tmp_path):
    accs = {}
    for seed in SEEDS:
        for shots in SHOTS:
            accs[("linear_probe", shots, seed)] = PROBE[shots] + 0.002 * seed
            accs[("full", shots, seed)] = FULL[shots] + (TIE[seed] if shots == 4 else 0.003 * seed)
    return grid_study(tmp_path, "cl", STRATEGIES, SHOTS, SEEDS, accs)


def cell(strategy, shots):
    return {"freeze.strategy": strategy, "data.shots": shots}


def claim(cid, relation, **kw):
    return {"id": cid, "relation": relation, **kw}


def test_verdicts_follow_the_numbers(url):
    claims = [
        claim("probe>full@1", ">", a=cell("linear_probe", 1), b=cell("full", 1)),
        claim("full>probe@1", ">", a=cell("full", 1), b=cell("linear_probe", 1)),
        claim("full>probe@4", ">", a=cell("full", 4), b=cell("linear_probe", 4)),
        claim("full~probe@4", "≈", within=0.05, a=cell("full", 4), b=cell("linear_probe", 4)),
        claim("full~probe@16", "~=", within=0.05, a=cell("full", 16), b=cell("linear_probe", 16)),
        claim("full>=probe@4", ">=", within=0.06, a=cell("full", 4), b=cell("linear_probe", 4)),
        claim("probe rises", "increasing", cells={"freeze.strategy": "linear_probe"}, over="data.shots"),
        claim("probe falls", "decreasing", cells={"freeze.strategy": "linear_probe"}, over="data.shots"),
        claim("full best@16", "argmax", cells={"data.shots": 16}, over="freeze.strategy", expect="full"),
        claim("probe best@16", "argmax", cells={"data.shots": 16}, over="freeze.strategy", expect="linear_probe"),
        claim("full best@4", "argmax", cells={"data.shots": 4}, over="freeze.strategy", expect="full"),
    ]
    got = {v.id: v for v in check_claims(claims, "cl", url)}
    verdicts = {k: v.verdict for k, v in got.items()}
    assert verdicts == {
        "probe>full@1": "held", "full>probe@1": "failed", "full>probe@4": "inconclusive", "full~probe@4": "held",
        "full~probe@16": "failed", "full>=probe@4": "held", "probe rises": "held", "probe falls": "failed",
        "full best@16": "held", "probe best@16": "failed", "full best@4": "inconclusive"}
    d = [0.10 - 0.001 * s for s in SEEDS]  # probe - full at 1 shot, per seed
    assert got["probe>full@1"].effect == pytest.approx(sum(d) / len(SEEDS)) and got["probe>full@1"].n == 5
    assert got["probe>full@1"].low <= got["probe>full@1"].effect <= got["probe>full@1"].high
    assert got["full>probe@4"].effect == pytest.approx(-0.004)  # the TIE mean (0) minus the probe jitter mean
    assert got["probe rises"].effect == pytest.approx(0.20)  # last - first
    assert "1: 0.604" in got["probe rises"].detail and "16: 0.804" in got["probe rises"].detail
    # the 11 claims are one family: each interval is the simultaneous (1 - 0.05 / 11) t interval over the 5 seeds
    from scipy import stats as sp

    ref = sp.ttest_rel([FULL[4] + TIE[s] for s in SEEDS], [PROBE[4] + 0.002 * s for s in SEEDS])
    ci = ref.confidence_interval(1 - 0.05 / 11)
    assert (got["full>probe@4"].low, got["full>probe@4"].high) == pytest.approx((ci.low, ci.high))
    assert got["full>probe@4"].p == pytest.approx(min(1.0, 11 * ref.pvalue))


def test_tlr_check_exit_codes(tmp_path, url, capsys):
    true = tmp_path / "true.yaml"
    true.write_text(yaml.safe_dump({"source": "constructed", "claims": [
        claim("c1", ">", a=cell("full", 16), b=cell("linear_probe", 16))]}, allow_unicode=True))
    out = tmp_path / "check.md"
    assert main(["check", "cl", str(true), "--storage", url, "--out", str(out)]) == 0
    assert "held" in capsys.readouterr().out and "**held**" in out.read_text()
    false = tmp_path / "false.yaml"  # deliberately false: the probe does not beat full fine-tuning at 16 shots
    false.write_text(yaml.safe_dump({"claims": [claim("c2", ">", a=cell("linear_probe", 16), b=cell("full", 16))]}))
    assert main(["check", "cl", str(false), "--storage", url]) == 1
    assert "failed: c2" in capsys.readouterr().out
    # a failing sanity check is reported apart and does not fail the claims; the verdict line counts claims only
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"paper_strength": True,
                                    "claims": [claim("c1", ">", a=cell("full", 16), b=cell("linear_probe", 16))],
                                    "checks": [claim("k1", ">", a=cell("linear_probe", 16), b=cell("full", 16))]}))
    assert main(["check", "cl", str(both), "--storage", url, "--out", str(out)]) == 0
    printed, written = capsys.readouterr().out, out.read_text()
    assert printed.index("sanity checks (not reproduction evidence)") < printed.index("k1") < printed.index("c1")
    assert written.startswith("**Verdict: reproduced** — of 1 claims at the paper's strength: 1 held.")
    claims_part, checks_part = written.split("## Sanity checks (not reproduction evidence)")
    assert "| c1 |" in claims_part and "| k1 | > | **failed** |" in checks_part


@pytest.mark.parametrize("claims, message", [
    ([claim("x", "<<", a=cell("full", 1), b=cell("full", 4))], "claims[0].relation: '<<'"),
    ([claim("x", ">", a={"freeze.strategy": "full"}, b=cell("full", 4))], "also pin data.shots"),
    ([claim("x", ">", a=cell("full", 1), b={**cell("full", 4), "optim.lr": 1}), ], "'optim.lr' is not a swept key"),
    ([claim("x", ">", a=cell("full", 1))], "needs `b:"),
    ([claim("x", ">", a=cell("full", 2), b=cell("full", 4))], "no completed trial"),
    ([claim("x", "≈", a=cell("full", 1), b=cell("full", 4))], "within > 0"),
    ([claim("x", "argmax", over="freeze.strategy", cells={"data.shots": 1}, expect="lora")], "expect: must be"),
    ([claim("x", "increasing", over="optim.lr", cells={})], "over: 'optim.lr'"),
    ([claim("x", ">", study="nosuch", a=cell("full", 1), b=cell("full", 4))], "no study 'nosuch'"),
    ([{"id": "x", "relation": ">", "a": {}, "b": {}, "colour": 1}], "claims[0].colour: unknown key"),
    ([claim("x", ">", a=cell("full", 1), b=cell("full", 4)), claim("x", ">", a=cell("full", 1),
                                                                   b=cell("full", 4))], "'x' appears twice"),
    ([], "non-empty list"),
    ([claim("x", ">", a={"freeze.strategy": "full"}, b={"freeze.strategy": "linear_probe"}, mean_over="data.shots",
            among=[1, 1])], "claims[0] (x).among: 1 appears twice"),
    ([claim("x", ">", a={"freeze.strategy": "full"}, b={"freeze.strategy": "linear_probe"}, mean_over="task")],
     "claims[0] (x).mean_over: 'task' is not a swept key of this study (swept: data.shots, freeze.strategy)"),
    ([claim("x", ">", a=cell("full", 1), b=cell("full", 4), among=[1, 4])], "this claim has no mean_over"),
])
def test_bad_claims_are_one_line_errors(tmp_path, url, capsys, claims, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"claims": claims}, allow_unicode=True))
    assert main(["check", "cl", str(path), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_claims_file(tmp_path, url, capsys):
    assert main(["check", "cl", str(tmp_path / "none.yaml"), "--storage", url]) == 2
    assert "none.yaml" in capsys.readouterr().err


def test_load_claims_keeps_the_source(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"source": "Kumar et al. 2022", "claims": [claim("a", ">", a={}, b={})]}))
    source, claims = load_claims(path)
    assert source == "Kumar et al. 2022" and claims[0].id == "a"


def test_a_side_may_come_from_another_study(tmp_path, url):
    accs = {(s, shots, seed): 0.95 for s in STRATEGIES for shots in SHOTS for seed in SEEDS}
    grid_study(tmp_path, "better", STRATEGIES, SHOTS, SEEDS, accs)
    claims = [claim("x", ">", a={**cell("linear_probe", 16), "study": "better"}, b=cell("full", 16)),
              claim("y", ">", a=cell("full", 16), b={**cell("full", 16), "study": "better"})]
    got = check_claims(claims, "cl", url)
    assert [v.verdict for v in got] == ["held", "failed"]
    assert got[0].effect == pytest.approx(0.95 - (0.90 + 0.003 * 2))


def test_few_seeds_without_predictions_are_inconclusive(tmp_path):
    """Two identical seed differences give a zero-width seeds-only interval: no verdict may rest on that."""
    accs = {(s, shots, seed): (0.9 if s == "full" else 0.5) for s in STRATEGIES for shots in SHOTS for seed in (0, 1)}
    url = grid_study(tmp_path, "two", STRATEGIES, SHOTS, [0, 1], accs)
    (v,) = check_claims([claim("x", ">", a=cell("full", 1), b=cell("linear_probe", 1))], "two", url)
    assert v.verdict == "inconclusive" and v.effect == pytest.approx(0.4) and "only 2 seeds" in v.detail
