"""Where the run executes: device, process group (torchrun), rank-aware helpers.

``torchrun --nproc_per_node N swav-train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
the trainer then joins a process group: NCCL when training on CUDA (one GPU per local
rank), gloo on CPU. A plain ``swav-train`` is a world of one and makes no collective call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def process_group(self):
        """The group the Sinkhorn sums span (None in a world of one)."""
        return dist.group.WORLD if self.distributed else None


def launch_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables (``0, 1, 0`` without them);
    ValueError naming the variable when one is impossible."""
    values = {}
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        text = os.environ.get(name, default)
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not an integer (torchrun sets it)") from None
    rank, world_size, local_rank = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE={world_size}: a run needs at least 1 process")
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside the WORLD_SIZE={world_size} processes (ranks 0 to {world_size - 1})")
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK={local_rank} must be >= 0")
    if world_size > 1 and not dist.is_available():
        raise ValueError(f"WORLD_SIZE={world_size}: this torch build has no torch.distributed; run one process")
    return rank, world_size, local_rank


def device_problem(name: str, local_rank: int = 0) -> str | None:
    """None when ``--device name`` can run local rank ``local_rank`` here; else one line
    naming the option and what is available."""
    if name == "cuda" and not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is built without CUDA" if torch.version.cuda is None
               else f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, sees no GPU")
        return f"--device cuda: no CUDA device here ({why}); available: auto, cpu"
    if name in ("auto", "cuda") and torch.cuda.is_available() and local_rank >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        return (f"--device {name}: local rank {local_rank} needs a GPU of its own and {count} are visible; start at "
                f"most {count} process(es) per node (torchrun --nproc_per_node {count}), or --device cpu")
    return None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:local_rank`` when CUDA is usable, else CPU; ``"cuda"`` → ``cuda:local_rank``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")


def start(device_name: str) -> Runtime:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; pick the device."""
    rank, world_size, local_rank = launch_env()
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank)


def stop(runtime: Runtime) -> None:
    """Leave the process group (if this process joined one)."""
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather_to_all(obj, runtime: Runtime) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a world of one)."""
    if not runtime.distributed:
        return [obj]
    gathered = [None] * runtime.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
