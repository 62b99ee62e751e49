"""Every command's inputs, table-tested as `fit`'s are: malformed files (encoding, NaN, empty, wrong shape),
numbers out of range, paths that are files / folders / missing, malformed claims, reproduce.yaml and search spaces.
Each case must exit 2 with one `tlr: error:` line naming the problem, no traceback, and leave every file in the
workspace as it was (nothing half-written, no storage or output folder created)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import grid_study, tiny_experiment
from tl_research.cli.main import main
from tl_research.config import load_experiment
from tl_research.pipeline import run


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_bert) -> Path:
    """A workspace with finished image and text runs, a study storage, claims and reproduce files, bad inputs."""
    root = tmp_path_factory.mktemp("ws")
    run(load_experiment(data=tiny_experiment(root, trainer={"max_epochs": 1})), root / "img")
    run(load_experiment(data=tiny_experiment(root, trainer={"max_epochs": 1}, backbone={
        "name": f"hf/{tiny_bert}", "weights": "offline", "max_length": 24}, data={
        "name": "rotten-tomatoes", "image_size": None, "train_limit": 32, "eval_limit": 16})), root / "txt")
    run(load_experiment(data=tiny_experiment(root, trainer={"max_epochs": 1})), root / "other")
    # a run folder holding another attempt's checkpoint in the place of the one its metrics report
    shutil.copytree(root / "img", root / "swapped")
    shutil.copy(root / "other" / "checkpoints" / "best.ckpt", root / "swapped" / "checkpoints" / "best.ckpt")
    shutil.copytree(root / "img", root / "unfinished")
    (root / "unfinished" / "metrics.json").unlink()
    grid_study(root, "fs", ["linear_probe", "full"], [4], [0, 1], {(s, 4, i): 0.5 + 0.1 * i
                                                                 for s in ("linear_probe", "full") for i in (0, 1)})
    (root / "exp.yaml").write_text(yaml.safe_dump(tiny_experiment(root)))
    (root / "afile").write_text("a file, not a folder\n")
    (root / "adir").mkdir()
    (root / "noimages").mkdir()
    (root / "garbage.ckpt").write_bytes(b"not a checkpoint")
    (root / "garbage.npz").write_bytes(b"not a zip")
    (root / "latin1.csv").write_bytes("text\ncaf\xe9 cr\xe8me\n".encode("latin-1"))
    (root / "nocolumn.csv").write_text("review\ngood\n")
    (root / "header-only.csv").write_text("text\n")
    (root / "notes.txt").write_text("hello\n")
    nan = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    nan[0, 0, 0, 0] = np.nan
    np.savez(root / "nan.npz", x=nan)
    np.savez(root / "flat.npz", x=np.zeros((4, 5), np.float32))
    np.savez(root / "empty.npz", x=np.zeros((0, 8, 8), np.uint8))
    np.savez(root / "strings.npz", x=np.array([["a", "b"], ["c", "d"]]).reshape(1, 2, 2))
    np.savez(root / "otherkey.npz", pixels=np.zeros((2, 8, 8), np.uint8))
    claims = {"a": {"freeze.strategy": "full"}, "b": {"freeze.strategy": "linear_probe"}}
    for name, body in {
        "within-lots": {"claims": [{"id": "c", "relation": ">", **claims, "within": "lots"}]},
        "relation": {"claims": [{"id": "c", "relation": "~", **claims}]},
        "unknown-key": {"claims": [{"id": "c", "relation": ">", **claims, "colour": 1}]},
        "a-not-mapping": {"claims": [{"id": "c", "relation": ">", "a": "full", "b": claims["b"]}]},
        "no-claims": {"claims": []},
        "twice": {"claims": [{"id": "c", "relation": ">", **claims}, {"id": "c", "relation": ">=", **claims}]},
        "alpha": {"alpha": 2, "claims": [{"id": "c", "relation": ">", **claims}]},
    }.items():
        (root / f"claims-{name}.yaml").write_text(yaml.safe_dump(body))
    (root / "claims-ok.yaml").write_text(yaml.safe_dump({"claims": [{"id": "c", "relation": ">", **claims}]}))
    (root / "not-yaml.yaml").write_text("claims: [unclosed\n")
    (root / "empty.yaml").write_text("")
    for name, body in {
        "studies-int": {"title": "x", "studies": 5, "claims": "claims.yaml"},
        "studies-missing": {"title": "x", "studies": ["nosuch.yaml"], "claims": "claims.yaml"},
        "claims-missing": {"title": "x", "studies": ["s.yaml"], "claims": "nosuch.yaml"},
        "unknown-key": {"title": "x", "studies": ["s.yaml"], "claims": "claims.yaml", "colour": 1},
        "smoke-seeds": {"title": "x", "studies": ["s.yaml"], "claims": "claims.yaml", "smoke": {"seeds": -1}},
        "ok": {"title": "x", "studies": ["s.yaml"], "claims": "claims.yaml"},
    }.items():
        folder = root / "findings" / name
        folder.mkdir(parents=True)
        (folder / "reproduce.yaml").write_text(yaml.safe_dump(body))
        (folder / "claims.yaml").write_text((root / "claims-ok.yaml").read_text())
        (folder / "s.yaml").write_text(yaml.safe_dump({"experiment": tiny_experiment(root), "study": {
            "name": "s", "kind": "grid", "grid": {"freeze.strategy": ["full"]}}}))
    (root / "findings" / "no-file").mkdir()
    (root / "findings" / "bad-yaml").mkdir()
    (root / "findings" / "bad-yaml" / "reproduce.yaml").write_text("studies: [\n")
    (root / "damaged.db").write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    return root


URL = "sqlite:///{ws}/st.db"
FINDING = Path(__file__).resolve().parents[2] / "benchmarks" / "reproductions" / "few_shot_crossing"
PREDICT = [
    ("predict-missing-input", "predict {ws}/img {ws}/nosuch.csv", "input: {ws}/nosuch.csv does not exist"),
    ("predict-latin1-csv", "predict {ws}/txt {ws}/latin1.csv", "is no readable UTF-8 CSV file"),
    ("predict-csv-no-column", "predict {ws}/txt {ws}/nocolumn.csv", "has no column 'text'"),
    ("predict-csv-no-rows", "predict {ws}/txt {ws}/header-only.csv", "header-only.csv has no rows"),
    ("predict-nan-npz", "predict {ws}/img {ws}/nan.npz", "nan.npz:x holds 1 NaN/inf values"),
    ("predict-flat-npz", "predict {ws}/img {ws}/flat.npz", "has shape (4, 5); images need (N, H, W[, C])"),
    ("predict-empty-npz", "predict {ws}/img {ws}/empty.npz", "has shape (0, 8, 8)"),
    ("predict-string-npz", "predict {ws}/img {ws}/strings.npz", "images need numbers"),
    ("predict-npz-key", "predict {ws}/img {ws}/otherkey.npz", "has no array 'x' (arrays: pixels)"),
    ("predict-garbage-npz", "predict {ws}/img {ws}/garbage.npz", "is no readable .npz file"),
    ("predict-batch-0", "predict {ws}/img {ws}/flat.npz --batch-size 0", "argument --batch-size: 0 is below 1"),
    ("predict-batch-text", "predict {ws}/img {ws}/flat.npz --batch-size many", "'many' is not an integer"),
    ("predict-out-folder", "predict {ws}/img {ws}/flat.npz --out {ws}/adir", "--out: {ws}/adir is a folder"),
    ("predict-out-under-file", "predict {ws}/img {ws}/flat.npz --out {ws}/afile/p.csv", "afile is a file"),
    ("predict-no-run", "predict {ws}/nosuch {ws}/flat.npz", "neither a checkpoint file nor a run folder"),
    ("predict-garbage-ckpt", "predict {ws}/garbage.ckpt {ws}/flat.npz", "run: cannot read"),
    ("predict-unfinished", "predict {ws}/unfinished {ws}/flat.npz", "has not finished (no metrics.json)"),
    ("predict-swapped", "predict {ws}/swapped {ws}/flat.npz", "is not the model"),
    ("predict-suffix", "predict {ws}/img {ws}/notes.txt", "is not an image folder, a .csv/.tsv"),
    ("predict-no-images", "predict {ws}/img {ws}/noimages", "input: no images below"),
    ("predict-modality", "predict {ws}/txt {ws}/flat.npz", "holds image inputs but the run's model takes text"),
    ("predict-no-args", "predict {ws}/img", "the following arguments are required: input"),
]
EXPORT = [
    ("export-out-file", "export {ws}/img --format safetensors --out {ws}/afile", "--out: {ws}/afile is a file"),
    ("export-out-under-file", "export {ws}/img --format safetensors --out {ws}/afile/x", "which is a file"),
    ("export-format", "export {ws}/img --format onnx9 --out {ws}/e", "--format: 'onnx9' is not a format"),
    ("export-no-format", "export {ws}/img", "the following arguments are required: --format"),
    ("export-no-run", "export {ws}/nosuch --format timm --out {ws}/e", "neither a checkpoint file nor a run"),
    ("export-unfinished", "export {ws}/unfinished --format timm --out {ws}/e", "has not finished"),
    ("export-swapped", "export {ws}/swapped --format timm --out {ws}/e", "is not the model"),
    ("export-peft-not-lora", "export {ws}/img --format peft --out {ws}/e",
     "--format: peft exports LoRA adapters; this run did not train any"),
    ("export-hf-of-timm", "export {ws}/img --format hf --out {ws}/e", "hf exports HF encoders"),
]
CHECK = [
    ("check-within", "check fs {ws}/claims-within-lots.yaml --storage " + URL, "within: expected a number"),
    ("check-relation", "check fs {ws}/claims-relation.yaml --storage " + URL, "claims[0].relation: '~' is not allowed"),
    ("check-unknown-key", "check fs {ws}/claims-unknown-key.yaml --storage " + URL, "colour: unknown key"),
    ("check-a-not-mapping", "check fs {ws}/claims-a-not-mapping.yaml --storage " + URL,
     "claims[0].a: expected a mapping"),
    ("check-no-claims", "check fs {ws}/claims-no-claims.yaml --storage " + URL, "claims: expected a non-empty list"),
    ("check-twice", "check fs {ws}/claims-twice.yaml --storage " + URL, "claims[1].id: 'c' appears twice"),
    ("check-alpha", "check fs {ws}/claims-alpha.yaml --storage " + URL, "alpha: unknown key"),
    ("check-missing-file", "check fs {ws}/nosuch.yaml --storage " + URL, "nosuch.yaml: cannot read"),
    ("check-not-yaml", "check fs {ws}/not-yaml.yaml --storage " + URL, "not-yaml.yaml: not valid YAML"),
    ("check-empty-file", "check fs {ws}/empty.yaml --storage " + URL, "empty.yaml: claims: missing"),
    ("check-out-folder", "check fs {ws}/claims-ok.yaml --out {ws}/adir --storage " + URL, "is a folder"),
    ("check-out-under-file", "check fs {ws}/claims-ok.yaml --out {ws}/afile/c.md --storage " + URL, "is a file"),
    ("check-no-storage", "check fs {ws}/claims-ok.yaml --storage sqlite:///{ws}/none.db", "no study storage at"),
    ("check-no-study", "check nosuch {ws}/claims-ok.yaml --storage " + URL, "no study 'nosuch'"),
]
REPRODUCE = [
    ("reproduce-studies-int", "reproduce {ws}/findings/studies-int", "studies: expected a non-empty list, got 5"),
    ("reproduce-study-missing", "reproduce {ws}/findings/studies-missing --smoke --out {ws}/r",
     "studies must list existing study YAMLs"),
    ("reproduce-claims-missing", "reproduce {ws}/findings/claims-missing --smoke --out {ws}/r",
     "nosuch.yaml: cannot read"),
    ("reproduce-unknown-key", "reproduce {ws}/findings/unknown-key --smoke --out {ws}/r", "colour: unknown key"),
    ("reproduce-smoke-seeds", "reproduce {ws}/findings/smoke-seeds --smoke --out {ws}/r",
     "seeds: expected a count >= 1"),
    ("reproduce-no-study", "reproduce {ws}/findings/ok --rejudge --out {ws}/r", "no results archive here"),
    ("reproduce-no-file", "reproduce {ws}/findings/no-file", "findings/no-file has no reproduce.yaml"),
    ("reproduce-bad-yaml", "reproduce {ws}/findings/bad-yaml", "reproduce.yaml: not valid YAML"),
    ("reproduce-no-finding", "reproduce nosuch-finding-xyz", "'nosuch-finding-xyz' is not a reproduction folder"),
    ("reproduce-out-under-file", "reproduce {ws}/findings/ok --out {ws}/afile/r", "which is a file"),
]
RANK = [
    ("rank-per-class-0", "rank {ws}/exp.yaml --backbones timm/test_efficientnet --per-class 0", "0 is below 2"),
    ("rank-per-class-text", "rank {ws}/exp.yaml --backbones timm/test_efficientnet --per-class x", "not an integer"),
    ("rank-no-backbones", "rank {ws}/exp.yaml --backbones ,", "--backbones: name at least one backbone"),
    ("rank-unknown-backbone", "rank {ws}/exp.yaml --backbones timm/nosuch_net_xyz",
     "unknown timm model 'nosuch_net_xyz'"),
    ("rank-depths", "rank {ws}/exp.yaml --backbones timm/test_efficientnet --depths a,b",
     "--depths: expected comma-separated integers"),
    ("rank-by", "rank {ws}/exp.yaml --backbones timm/test_efficientnet --by nosuch", "--by: 'nosuch' is not a score"),
    ("rank-out-file", "rank {ws}/exp.yaml --backbones timm/test_efficientnet --out {ws}/afile", "is a file"),
    ("rank-no-config", "rank {ws}/nosuch.yaml --backbones timm/test_efficientnet", "nosuch.yaml: cannot read"),
    ("rank-bad-set", "rank {ws}/exp.yaml --backbones timm/test_efficientnet --set seed=-1", "seed: -1"),
]
PLAN = [
    ("plan-no-finding", "plan nosuch-finding-xyz", "'nosuch-finding-xyz' is not a reproduction folder"),
    ("plan-seeds-1", "plan {finding} --seeds 1", "argument --seeds: 1 is below 2"),
    ("plan-test-size-0", "plan {finding} --test-size 0", "argument --test-size: 0 is below 2"),
    ("plan-pilot-missing", "plan {finding} --pilot sqlite:///{ws}/none.db", "no study storage at"),
    ("plan-claims-no-pilot", "plan {ws}/claims-ok.yaml", "--pilot: a claims file is planned from a pilot"),
    ("plan-bad-claims", "plan {ws}/claims-within-lots.yaml --pilot " + URL, "within: expected a number"),
]
CONFIG = [
    ("config-other-strategy", "config {ws}/exp.yaml --set freeze.depth=2", "freeze.depth is ignored by strategy"),
    ("config-unknown-key", "config {ws}/exp.yaml --set trainer.epochz=2", "trainer.epochz: unknown key"),
    ("config-set-no-equals", "config {ws}/exp.yaml --set trainer.max_epochs",
     "'trainer.max_epochs': expected key=value"),
    ("config-nothing", "config", "config: name an experiment YAML"),
    ("config-bad-yaml", "config {ws}/not-yaml.yaml", "not-yaml.yaml: not valid YAML"),
    ("config-missing", "config {ws}/nosuch.yaml", "nosuch.yaml: cannot read"),
]
WORKER = [
    ("worker-no-study", "worker --study nosuch --storage " + URL, "--study: no study 'nosuch'"),
    ("worker-no-storage-file", "worker --study fs --storage sqlite:///{ws}/none.db", "no study storage at"),
    ("worker-damaged", "worker --study fs --storage sqlite:///{ws}/damaged.db", "is damaged"),
    ("worker-journal-missing", "worker --study fs --storage {ws}/none.log", "no study storage at"),
]
REPORT = [
    ("report-width-0", "report fs --target-width 0 --storage " + URL, "--target-width: 0.0 is not between 0 and 1"),
    ("report-width-text", "report fs --target-width wide --storage " + URL, "'wide' is not a number"),
    ("report-out-file", "report fs --out {ws}/afile --storage " + URL, "--out: {ws}/afile is a file"),
    ("report-metric", "report fs --metric test/nosuch --storage " + URL,
     "metric: no completed trial has 'test/nosuch'"),
    ("report-rows", "report fs --rows nosuch.key --storage " + URL, "--rows: 'nosuch.key' is not a parameter"),
    ("report-baseline", "report fs --baseline nosuch --storage " + URL, "--baseline: 'nosuch' is not a row"),
    ("report-damaged", "report fs --storage sqlite:///{ws}/damaged.db", "is damaged"),
]
FIT_AND_STUDY = [
    ("fit-precision-cpu", "fit {ws}/exp.yaml --set trainer.precision=16-mixed --out {ws}/f",
     "trainer.precision: 16-mixed needs a CUDA device"),
    ("fit-other-strategy", "fit {ws}/exp.yaml --set freeze.lora.rank=4 --out {ws}/f",
     "freeze.lora is ignored by strategy full"),
    ("fit-out-under-file", "fit {ws}/exp.yaml --out {ws}/afile/run", "--out: {ws}/afile/run lies under"),
    ("fit-output-dir-under-file", "fit {ws}/exp.yaml --set output_dir={ws}/afile/runs", "output_dir: "),
    ("study-output-dir-under-file", "study {ws}/findings/unknown-key/s.yaml --set output_dir={ws}/afile/runs "
     "--storage sqlite:///{ws}/new.db", "output_dir: {ws}/afile/runs lies under {ws}/afile, which is a file"),
    ("study-workers-0", "study {ws}/findings/unknown-key/s.yaml --workers 0 --storage sqlite:///{ws}/new.db",
     "argument --workers: 0 is below 1"),
    ("study-precision-cpu", "study {ws}/findings/unknown-key/s.yaml --set trainer.precision=16-mixed "
     "--storage sqlite:///{ws}/new.db", "16-mixed needs a CUDA device"),
    ("unknown-command", "fitt {ws}/exp.yaml", "invalid choice: 'fitt'"),
]
CASES = PREDICT + EXPORT + CHECK + REPRODUCE + RANK + PLAN + CONFIG + WORKER + REPORT + FIT_AND_STUDY


def _files(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path with its size and mtime; a SQLite storage only by its presence (a reader's connection may
    checkpoint its write-ahead log, which rewrites the file without changing what it holds)."""
    return {str(p.relative_to(root)): None if p.suffix == ".db" else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if not p.name.endswith(("-wal", "-shm"))}


@pytest.mark.parametrize("name, command, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(ws, capsys, monkeypatch, name, command, message):
    monkeypatch.chdir(ws)  # default output folders (runs/…) would land here: they must not appear
    monkeypatch.delenv("TLR_STORAGE", raising=False)
    before = _files(ws)
    capsys.readouterr()
    assert main(command.format(ws=ws, finding=FINDING).split()) == 2, name
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tlr: error:")]
    assert len(errors) == 1 and message.format(ws=ws) in errors[0] and err.rstrip().endswith(errors[0]), err
    assert "Traceback" not in err, err
    assert _files(ws) == before  # nothing written, nothing touched


