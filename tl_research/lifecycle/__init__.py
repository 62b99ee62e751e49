"""After the run: a finished run loaded for inference and predictions (inference.py), and exports to other tools'
formats (export.py; one module per format in formats/, found through the format registry).

May import: the base, backbones, data, strategies, training, pipeline, config.
"""
