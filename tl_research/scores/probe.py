"""The converged linear probe's validation accuracy on frozen features (training/probe.py): the strongest cheap
baseline a transferability score must beat."""

from __future__ import annotations

import numpy as np
import torch

from tl_research.scores.registry import register_score
from tl_research.training.probe import fit_probe


@register_score("probe", "validated", order=5)
def probe_accuracy(train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray) -> float:
    """Validation accuracy of the converged linear probe (L-BFGS logistic regression, L2 chosen on validation)."""
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    fit = fit_probe(torch.as_tensor(train, dtype=torch.float32), torch.as_tensor(train_labels),
                    torch.as_tensor(val, dtype=torch.float32), torch.as_tensor(val_labels), num_classes)
    return float(fit.grid[fit.l2])
