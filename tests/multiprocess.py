"""Run a function on N gloo ranks (CPU processes) and collect what each returns."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank, world_size, init_file, out_dir, target, args):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.save(target(rank, world_size, *args), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_in_processes(target, world_size, *args):
    """``target(rank, world_size, *args)`` in ``world_size`` gloo processes; returns their results.

    ``target`` must be a module-level function; it sees an initialised default group
    (``torch.distributed.group.WORLD``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_entry, args=(world_size, init_file, tmp, target, args), nprocs=world_size, join=True)
        return [torch.load(os.path.join(tmp, f"{rank}.pt"), weights_only=False) for rank in range(world_size)]
