"""A lab's own method for tl_research: fine-tune only the top layer groups (`freeze.strategy: top_groups`) while
keeping the features' norm in check (`regularize.feature_decay`). Importing it registers both."""

from lab_method import feature_decay, top_groups  # noqa: F401  (registration)
