"""Run a function on N gloo ranks (CPU processes) and collect what each returns."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank, world_size, init_file, out_dir, target, args):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        result = target(rank, world_size, *args)
        dist.barrier()  # no rank tears gloo down while another still talks to it
        torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_in_processes(target, world_size, *args):
    """``target(rank, world_size, *args)`` in ``world_size`` gloo processes; returns their results.

    ``target`` must be a module-level function; it sees an initialised default group
    (``torch.distributed.group.WORLD``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        results = [os.path.join(tmp, f"{rank}.pt") for rank in range(world_size)]
        try:
            mp.spawn(_entry, args=(world_size, init_file, tmp, target, args), nprocs=world_size, join=True)
        except mp.ProcessExitedException:
            # gloo on torch 2.13's CPU build now and then aborts a process in its teardown ("terminate
            # called without an active exception") after every rank saved its result: keep those
            if not all(os.path.exists(path) for path in results):
                raise
        return [torch.load(path, weights_only=False) for path in results]
