"""Accuracy of the surgical finding's source model on the clean and the noisy test split, before any adaptation
(the README's 0.979 / 0.611). Run after `tlr reproduce surgical_finetuning`:

    python benchmarks/reproductions/surgical_finetuning/no_adaptation.py
"""
import torch

from tl_research.config import load_experiment
from tl_research.data.datamodule import build_datamodule
from tl_research.lifecycle.inference import load_run

loaded = load_run("runs/reproductions/surgical_finetuning/sources/clean")
model = loaded.model.eval()
for shift in (None, "gaussian_noise:5"):
    exp = load_experiment("benchmarks/reproductions/surgical_finetuning/target.yaml",
                          [f"data.shift={shift}" if shift else "data.shift=null"])
    dm = build_datamodule(exp.data, model.backbone.preprocessing, "image", 0)
    correct = n = 0
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            correct += int((model(x).argmax(-1) == y).sum())
            n += len(y)
    print(shift, correct / n, n)
