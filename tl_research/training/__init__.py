"""What trains inside a run: the LightningModule, heads, the converged probe, callbacks, the trainers (DDP).

May import: backbones, strategies, the root modules.
"""
