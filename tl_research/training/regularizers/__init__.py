"""Transfer regularizers: named terms added to the training loss (`regularize: {NAME: {options}}`), each a small
options dataclass registered by name with a `penalty(step)` that sees the batch, the features and layer-group
outputs of the model being trained and of the frozen pretrained model (theta_0), and the step. L2-SP, DELTA and
BSS live here; a plugin registers its own with `register_regularizer`.

Part of training (its May-import rules); the terms use the converged probe's solver (DELTA's attention).
"""

from tl_research.training.regularizers.registry import (
    REGULARIZERS,
    RegularizeConfig,
    Regularizer,
    Step,
    register_regularizer,
    regularizers,
)

__all__ = ["REGULARIZERS", "RegularizeConfig", "Regularizer", "Step", "register_regularizer", "regularizers"]
