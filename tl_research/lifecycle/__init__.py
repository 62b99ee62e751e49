"""After the run: a finished run loaded for inference, predictions, and exports to other tools' formats.

May import: run, data, backbones, training, the root modules.
"""
