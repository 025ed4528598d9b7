"""Training on several devices: one process per device, DDP through accelerate.

`p2m.tasks.stages.train.train_student` is the one code path. Called in the train stage's process, it
asks `training_processes` how many processes to train with: P2M_TRAIN__PROCESSES, or every GPU
of the machine when it has more than one, else 1. For more than one it calls `train_distributed`,
which starts them with torch's launcher (`python -m torch.distributed.run`, what `torchrun` and
`accelerate launch` run) on the train stage's module; each of those calls `train_student` again, where
transformers' Trainer finds the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK) and has
accelerate wrap the model in DistributedDataParallel: NCCL between GPUs, gloo between CPU
processes. Each process takes 1/N of every batch, gradients are averaged across processes, and
the loss is normalised by the target tokens of the whole batch, so N processes follow the same
optimisation as one. Rank 0 writes the model, the loss log and train.json; the stage's process
reads the record back.

Run by hand (what `train_distributed` runs): `python -m torch.distributed.run --standalone
--nproc-per-node N -m p2m.tasks.stages.train REQUEST.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from p2m.tasks.core.config import TrainConfig
from p2m.tasks.core.errors import P2MError

# The module each launched process runs: the train stage's `main` reads the request and calls
# `train_student` (named, not imported: the stage imports this module).
LAUNCHED_MODULE = "p2m.tasks.stages.train"


def distributed_world() -> int:
    """How many processes train together, as the launcher told this one (1 outside a launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_processes(cfg: TrainConfig) -> int:
    """How many processes to train with: `cfg.processes`, else every GPU when there are several, else 1.

    Raises P2MError when more processes are asked for than the machine has GPUs (two DDP
    processes cannot share one card).
    """
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.processes is None:
        return gpus if gpus > 1 else 1
    if gpus and cfg.processes > gpus:
        raise P2MError(f"P2M_TRAIN__PROCESSES={cfg.processes}, but this machine has {gpus} GPUs: one process per GPU")
    return cfg.processes


def last_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing, or None (train from the start).

    The Trainer writes `trainer_state.json` last: a checkpoint without a readable one for its own
    step was cut short (a full disk, a kill mid-save) and would fail to load, so it is skipped and
    removed (by the one process that writes; several DDP processes all skip it).
    """
    complete = []
    for folder in ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else []:
        try:
            step = int(folder.name.removeprefix("checkpoint-"))
            if json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"] == step:
                complete.append((step, folder))
                continue
        except (ValueError, OSError, KeyError, TypeError):
            pass
        if distributed_world() == 1 or int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(folder, ignore_errors=True)
    return max(complete)[1] if complete else None


def train_distributed(
    splits_dir: Path, choice: dict, instruction: str, cfg: TrainConfig, out_dir: Path, home: Path, processes: int
) -> dict:
    """Run `train_student` in `processes` processes (one per GPU, or gloo processes on the CPU) and
    wait; returns the training record rank 0 wrote. Their output goes to this process's terminal.

    Raises RuntimeError when the processes fail (a bug, or a device error: the output says which).
    """
    import torch

    request_dir = Path(tempfile.mkdtemp(prefix="p2m-train-"))
    request = request_dir / "request.json"
    request.write_text(
        json.dumps(
            {
                "splits_dir": str(splits_dir),
                "choice": choice,
                "instruction": instruction,
                "cfg": cfg.model_dump(mode="json"),
                "out_dir": str(out_dir),
                "home": str(home),
            }
        ),
        encoding="utf-8",
    )
    env = dict(os.environ)
    if not torch.cuda.is_available():
        # CPU processes share the cores: without this each would start a thread per core.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    (Path(out_dir) / "train.json").unlink(missing_ok=True)  # what is read back is this run's
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    cmd += ["-m", LAUNCHED_MODULE, str(request)]
    try:
        done = subprocess.run(cmd, env=env, check=False)
    finally:
        shutil.rmtree(request_dir, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"training in {processes} processes failed (exit code {done.returncode}); see their output")
    return json.loads((Path(out_dir) / "train.json").read_text(encoding="utf-8"))
