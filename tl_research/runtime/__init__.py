"""What a run is made of besides its model: the run folder, the run record (run.json), W&B tracking, and the
trainers (one device or DDP; rank 0 writes). The call path itself is `tl_research.run`.

May import: the base, backbones, data, training, config. Never pipeline, studies or anything above them.
"""
