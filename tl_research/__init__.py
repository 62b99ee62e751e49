"""tl_research: transfer-learning research on ordered layer groups."""

__version__ = "0.1.0"
