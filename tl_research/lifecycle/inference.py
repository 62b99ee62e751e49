"""After the run: `load_run(run folder or checkpoint)` gives the trained model ready for inference, and
`predict` / `read_inputs` turn an image folder, a CSV/TSV of texts or an npz of images into class probabilities.

Every checkpoint carries the resolved experiment and the class names (`tl_config`, `tl_classes`), so a checkpoint
file alone is enough: the architecture is rebuilt from the config (no pretrained weights are loaded: the trained
tensors replace them) and the tensors come from the checkpoint, `weights_only`.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from tl_research import plugins, run_folder
from tl_research.config import Experiment, from_mapping, load_experiment
from tl_research.data.datamodule import input_collates
from tl_research.data.generic import IMAGE_SUFFIXES, LazyImages, image_array
from tl_research.errors import UserError
from tl_research.pipeline import build_backbone_from, build_module_from

CONFIG, CLASSES = "tl_config", "tl_classes"


@dataclass
class LoadedRun:
    model: Any  # a TransferModule in eval mode
    experiment: Experiment
    classes: list[str]
    checkpoint: Path

    @property
    def modality(self) -> str:
        return self.model.backbone.modality


def _checkpoint(path: Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file as it is, or the checkpoint of a run folder that its metrics report (checked)."""
    if path.is_dir() and (path / run_folder.CHECKPOINTS).is_dir():
        return run_folder.load_tested(path, "run")
    if not path.is_file():
        raise UserError(f"run: {path} is neither a checkpoint file nor a run folder with checkpoints")
    try:
        return path, torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise UserError(f"run: cannot read {path} ({type(exc).__name__})") from None


def load_run(path: str | Path) -> LoadedRun:
    """The trained model of a run folder (the checkpoint its metrics report) or of a checkpoint file, in eval mode
    on the CPU."""
    if (Path(path) / "model.safetensors").is_file() and (Path(path) / run_folder.CONFIG).is_file():
        return _load_export(Path(path))
    ckpt, state = _checkpoint(Path(path).expanduser())
    if CONFIG not in state:
        raise UserError(f"run: {ckpt} carries no tl_research config (written by another tool or an older version)")
    _import_plugins(ckpt)
    exp = from_mapping(state[CONFIG])
    classes = list(state[CLASSES])
    module = _architecture(exp, len(classes))
    result = module.load_state_dict(state["state_dict"], strict=False)
    # cached runs also saved their suffix (the same tensors under a second name); nothing else may be missing
    missing = [k for k in result.missing_keys if not k.startswith("suffix.")]
    unexpected = [k for k in result.unexpected_keys if not k.startswith("suffix.")]
    if missing or unexpected:
        raise UserError(f"run: {ckpt} does not fit the model its config describes (e.g. {(missing or unexpected)[0]})")
    module.eval()
    return LoadedRun(module, exp, classes, ckpt)


def _import_plugins(ckpt: Path) -> None:
    """The plugins the run's process had (its run.json, beside checkpoints/): a strategy or family named by a
    `--plugin` or TLR_PLUGINS plugin is in no YAML the checkpoint carries."""
    for folder in (ckpt.parent.parent, ckpt.parent):
        if (folder / run_folder.RECORD).is_file():
            # an unreadable record reads as {}: the config's own plugins are all there is
            plugins.require(run_folder.read_record(folder).get("plugins"), f"run {folder}", strict=False)
            return


def _architecture(exp: Experiment, num_classes: int) -> Any:
    """The run's module without pretrained weights: the saved tensors replace whatever weights the config names."""
    bare = replace(exp, backbone=replace(exp.backbone, weights="none"))
    return build_module_from(exp, build_backbone_from(bare), num_classes)


def _load_export(folder: Path) -> LoadedRun:
    """A `tlr export --format safetensors` folder: config.yaml, classes.json, model.safetensors."""
    exp = load_experiment(folder / run_folder.CONFIG)
    classes = json.loads((folder / "classes.json").read_text())
    module = _architecture(exp, len(classes))
    state = load_file(str(folder / "model.safetensors"))
    for part, target in (("backbone.", module.backbone.model), ("head.", module.head)):
        target.load_state_dict({k.removeprefix(part): v for k, v in state.items() if k.startswith(part)})
    module.eval()
    return LoadedRun(module, exp, classes, folder / "model.safetensors")


def read_inputs(path: str | Path, loaded: LoadedRun, id_column: str | None = None) -> tuple[list[str], Sequence[Any]]:
    """(ids, raw inputs) from an image folder (every image below it: ids are their paths), a CSV/TSV (the run's
    data.text_column; ids from `id_column`, else a column named `id`, else the text itself), or an npz (its
    data.x_key; ids are row numbers); the input must suit the run's modality."""
    p = Path(path).expanduser()
    d = loaded.experiment.data
    if not p.exists():
        raise UserError(f"input: {p} does not exist")
    suffix = p.suffix.lower()
    kind = "image" if p.is_dir() or suffix == ".npz" else "text" if suffix in (".csv", ".tsv", ".tab") else None
    if kind is None:
        raise UserError(f"input: {p} is not an image folder, a .csv/.tsv file of texts or an .npz file")
    if kind != loaded.modality:
        raise UserError(f"input: {p} holds {kind} inputs but the run's model takes {loaded.modality}")
    if id_column is not None and suffix not in (".csv", ".tsv", ".tab"):
        raise UserError(f"--id-column: names a column of a CSV/TSV input; {p} is not one")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"input: no images below {p}")
        return [str(f.relative_to(p)) for f in files], LazyImages(files)
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                if d.x_key not in z.files:
                    raise UserError(f"input: {p} has no array {d.x_key!r} (arrays: {', '.join(z.files)})")
                x = z[d.x_key]
        except (OSError, ValueError, EOFError) as exc:  # not a zip, a truncated file, a pickled array
            raise UserError(f"input: {p} is no readable .npz file ({exc})") from None
        x = image_array(x, f"input: {p}:{d.x_key}")
        return [str(i) for i in range(len(x))], x
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="," if suffix == ".csv" else "\t")
            column = d.text_column or "text"
            if column not in (reader.fieldnames or []):
                raise UserError(f"input: {p} has no column {column!r} (the run's data.text_column, default text)")
            ids_from = id_column or ("id" if "id" in (reader.fieldnames or []) and column != "id" else None)
            if ids_from is not None and ids_from not in (reader.fieldnames or []):
                raise UserError(f"--id-column: {p} has no column {ids_from!r} (columns: "
                                f"{', '.join(reader.fieldnames or [])})")
            rows = list(reader)
            texts = [row[column] or "" for row in rows]
            ids = [row[ids_from] or "" for row in rows] if ids_from else texts
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"input: {p} is no readable UTF-8 CSV file ({exc})") from None
    if not texts:
        raise UserError(f"input: {p} has no rows")
    return ids, texts


def predict(loaded: LoadedRun, inputs: Sequence[Any], batch_size: int = 64) -> tuple[np.ndarray, float]:
    """Class probabilities (N, classes) for raw inputs, and the samples/s of the forward passes."""
    collate, _ = input_collates(loaded.model.backbone.preprocessing, loaded.experiment.data)
    out, seconds = [], 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            x, _ = collate([(inputs[i], 0) for i in range(start, min(start + batch_size, len(inputs)))])
            t0 = time.perf_counter()
            out.append(loaded.model(x).float().softmax(-1).numpy())
            seconds += time.perf_counter() - t0
    return np.concatenate(out), len(inputs) / max(seconds, 1e-9)


def write_predictions(path: Path, ids: list[str], probs: np.ndarray, classes: list[str]) -> None:
    """CSV: input id, predicted class, then one probability column per class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["input", "predicted", *(f"p_{c}" for c in classes)])
        for i, row in zip(ids, probs):
            writer.writerow([i, classes[int(row.argmax())], *(f"{v:.6g}" for v in row)])
