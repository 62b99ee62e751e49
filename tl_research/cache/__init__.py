"""The feature cache: frozen-prefix outputs computed once, stored on disk, shared by runs and studies."""
