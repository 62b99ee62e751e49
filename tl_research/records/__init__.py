"""What a run leaves behind besides its model: the run folder, the run record (run.json), W&B tracking.

May import: the root modules.
"""
