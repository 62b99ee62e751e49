"""What trains inside a run: the LightningModule, heads, the optimizer's options and schedules, the converged
probe, callbacks. Training code receives built objects and plain values, never the experiment's config.

May import: the base, backbones, strategies. Never config.
"""
