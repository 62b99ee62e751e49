"""Several processes for one run (DDP over `trainer.devices` x `trainer.num_nodes`), and the trainers of a run.

Lightning's DDP re-launches the command once per extra local device; every process fits its share of each batch
(gradients all-reduced), and only global rank 0 writes: the run folder (chosen once, and handed to the processes
it launches through TLR_RUN_DIR), config.yaml, run.json, the W&B run, checkpoints and metrics.json. After fitting
the other processes leave, and rank 0 tests alone on one device, so that every test example is scored exactly
once (a DistributedSampler pads a split with repeats to divide it evenly).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch.distributed as dist
from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy

from tl_research.config import Experiment, TrainerConfig
from tl_research.errors import UserError
from tl_research.training.callbacks import AtomicCheckpointIO

RUN_DIR_ENV = "TLR_RUN_DIR"


def world_size(t: TrainerConfig) -> int:
    return t.devices * t.num_nodes


def global_rank(t: TrainerConfig) -> int:
    """This process's rank: RANK when a launcher (torchrun) sets it, SLURM_PROCID for tasks `srun` started (the
    processes of one run, as Lightning's Slurm environment counts them), else what Lightning's own launcher sets
    (NODE_RANK, LOCAL_RANK); 0 for the process the user started."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if world_size(t) > 1 and SLURMEnvironment.detect():
        return int(os.environ.get("SLURM_PROCID", 0))
    return int(os.environ.get("NODE_RANK", 0)) * t.devices + int(os.environ.get("LOCAL_RANK", 0))


def check_distributed(exp: Experiment, out: str | Path | None) -> None:
    """What DDP cannot do, refused before anything is built."""
    t = exp.trainer
    if t.strategy == "ddp" and world_size(t) == 1:
        raise UserError("trainer.strategy: ddp needs more than one process (trainer.devices or trainer.num_nodes > 1)")
    if out is None and world_size(t) > 1 and SLURMEnvironment.detect() and int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        raise UserError("--out: DDP tasks started by srun each run this command; give them one run folder (--out) "
                        "every task can reach")
    if t.num_nodes > 1 and out is None:
        raise UserError("trainer.num_nodes: a multi-node run needs --out, a folder every node can reach (each node "
                        "would otherwise choose its own run folder)")


def run_dir_for(exp: Experiment, out: str | Path | None) -> str | Path | None:
    """`out`, or for a process launched by rank 0 the folder rank 0 chose."""
    if out is None and global_rank(exp.trainer) > 0:
        return os.environ.get(RUN_DIR_ENV)
    return out


def share_run_dir(run_dir: Path) -> None:
    """Hand the chosen folder to the processes Lightning launches from this one (they inherit the environment)."""
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())


def plugins() -> list[Any]:
    """The trainers' plugins: atomic checkpoint writes, and under Slurm its cluster environment without Lightning's
    auto-requeue (a study worker hands its cell back and requeues its own task; two requeue handlers would race)."""
    found: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        try:
            found.append(SLURMEnvironment(auto_requeue=False))
        except RuntimeError as exc:  # Lightning's check of the srun variables (e.g. --ntasks instead of per node)
            raise UserError(f"trainer.devices: this Slurm job cannot run the DDP processes ({exc})") from None
    return found


def fit_trainer(exp: Experiment, run_dir: Path, callbacks: list[L.Callback], logger: Any, epochs: int,
                varying_plan: bool) -> L.Trainer:
    """The trainer that fits: one device, or DDP over devices x nodes (gloo on CPU). `varying_plan`: the trainable
    set changes between epochs, so DDP must allow parameters without gradients in a step."""
    t = exp.trainer
    strategy: Any = "auto"
    if world_size(t) > 1:
        strategy = DDPStrategy(find_unused_parameters=varying_plan,
                               process_group_backend="gloo" if t.accelerator == "cpu" else None)
    return L.Trainer(max_epochs=epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
                     strategy=strategy, precision=t.precision, deterministic=t.deterministic,
                     default_root_dir=run_dir, logger=logger if logger is not None else False, callbacks=callbacks,
                     enable_progress_bar=t.progress_bar, enable_model_summary=False,
                     log_every_n_steps=t.log_every_n_steps, plugins=plugins(),
                     accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val)


def testing_trainer(exp: Experiment, fitted: L.Trainer, run_dir: Path, logger: Any) -> L.Trainer:
    """The trainer that tests: the fitting one, or after DDP a single-device one on rank 0 (the process group
    is left first, so that no metric waits for processes that have gone; a plain environment, as a Slurm job's
    task count is the fit's world, not this trainer's)."""
    if world_size(exp.trainer) == 1:
        return fitted
    leave_group()
    t = exp.trainer
    return L.Trainer(accelerator=t.accelerator, devices=1, num_nodes=1, precision=t.precision,
                     default_root_dir=run_dir, logger=logger if logger is not None else False,
                     enable_progress_bar=t.progress_bar, enable_model_summary=False,
                     plugins=[AtomicCheckpointIO(), LightningEnvironment()])


def leave_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wait_for_launched(trainer: L.Trainer) -> None:
    """Rank 0 waits for the processes its launcher started, so no run outlives its command."""
    for proc in getattr(getattr(trainer.strategy, "launcher", None), "procs", []):
        proc.wait()
