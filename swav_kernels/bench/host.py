"""``swav-bench --host``: the host cost of one eager forward + backward of the Triton backend.

Without a GPU, launches go through Triton's real launch path down to a CUDA driver that does
nothing (``null_driver``), as a device with the H200's architecture and size (sm_90, 132 SMs), so
the library picks the split rules and issues the launches it would on that GPU; the time per call
is then the library's host path (checks, plan lookup, allocation, Triton's launcher, autograd) and
nothing else. Both paths are measured: the fused one (``swav_loss(z, prototypes=c)``) and the scores
path (``swav_loss(s)``). Each figure is the best of several repeats of the mean over many calls, in
wall time and in this thread's CPU time (steadier when the machine is shared), with the load
average printed beside it. With ``profile`` the top functions of the fused path (cProfile) follow.

On a GPU the same shapes run for real: eager time per call, the replay of the same call captured in
a CUDA graph, and their difference (the host's share of an eager call).
"""
from __future__ import annotations

import cProfile
import io
import os
import platform
import pstats
import statistics
import time
from dataclasses import dataclass

import torch

from .shapes import NAMED_SHAPES, Shape

HOST_SHAPE = NAMED_SHAPES["tiny"]  # the paper's crops and D, 4 images, 64 prototypes: no GPU work to speak of


@dataclass
class HostCost:
    """Microseconds per eager forward + backward of one path."""

    path: str  # "fused" or "scores"
    wall_us: float  # best repeat's mean wall time per call
    cpu_us: float  # best repeat's mean CPU time of this thread per call
    wall_median_us: float  # median over repeats
    launches: int | None  # driver launches per call (null driver), None on a GPU
    launch_names: list[str]
    captured_us: float | None = None  # GPU: a replay of the captured call
    profile: str | None = None


def _inputs(shape: Shape, device, dtype, path: str):
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(shape.rows, shape.dim, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(shape.prototypes, shape.dim, generator=g), dim=1)
    queue = None
    if shape.queue:
        queue = torch.nn.functional.normalize(
            torch.randn(len(shape.crops_for_assign), shape.queue, shape.dim, generator=g), dim=-1)
    if path == "scores":
        s = (z @ c.t()).to(device, dtype).requires_grad_()
        queue_scores = None if queue is None else (queue @ c.t()).to(device, dtype)
        return (s,), dict(queue_scores=queue_scores)
    z = z.to(device, dtype).requires_grad_()
    c = c.to(device, dtype).requires_grad_()
    return (z, c), dict(queue=None if queue is None else queue.to(device, dtype))


def _step(shape: Shape, path: str, device, dtype):
    """One eager fwd+bwd as a training step makes it (gradients dropped as ``zero_grad`` does)."""
    from ..loss import swav_loss

    tensors, extra = _inputs(shape, device, dtype, path)

    def step():
        loss = swav_loss(*tensors, nmb_crops=list(shape.nmb_crops), crops_for_assign=shape.crops_for_assign,
                         backend="triton", **extra)
        loss.backward()
        for t in tensors:
            t.grad = None

    step.tensors, step.extra = tensors, extra  # for tests that look at the launches' buffers
    return step


def _time(step, calls: int, repeats: int, synchronize=None) -> tuple[float, float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        if synchronize:
            synchronize()
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            step()
        if synchronize:
            synchronize()
        walls.append((time.perf_counter() - wall) / calls * 1e6)
        cpus.append((time.thread_time() - cpu) / calls * 1e6)
    return min(walls), min(cpus), statistics.median(walls)


def measure(path: str, shape: Shape = HOST_SHAPE, dtype=torch.bfloat16, calls: int = 500, repeats: int = 9,
            profile: bool = False) -> HostCost:
    """The host cost of ``path`` ("fused" or "scores") at ``shape``: through the null driver when no
    GPU is visible (``null_driver.activate()`` must have run), on the GPU otherwise."""
    from . import null_driver

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    step = _step(shape, path, device, dtype)
    for _ in range(5):  # compile, then settle every launch on its compiled kernel
        step()
    synchronize = torch.cuda.synchronize if on_gpu else None
    launches, names = None, []
    if not on_gpu:
        before = null_driver.launch_count()
        step()
        names = [launch.name for launch in null_driver.launches(before)]
        launches = len(names)
    wall, cpu, median = _time(step, calls, repeats, synchronize)
    result = HostCost(path, wall, cpu, median, launches, names)
    if on_gpu:
        result.captured_us = _captured(shape, path, device, dtype, calls, repeats)
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [step() for _ in range(calls)])
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
        result.profile = text.getvalue()
    return result


def _captured(shape: Shape, path: str, device, dtype, calls: int, repeats: int) -> float:
    """µs per replay of one fwd+bwd captured in a CUDA graph (``graphs.graphed``, as the ``-graph`` peers).

    The captured call takes its gradients with ``torch.autograd.grad`` on fresh leaves: ``backward()``
    on the eager step's leaves would accumulate their gradients on the stream those leaves were first
    used on, and a capture refuses that (cudaErrorStreamCaptureImplicit)."""
    from ..loss import swav_loss
    from .graphs import graphed

    tensors, extra = _inputs(shape, device, dtype, path)

    def step():
        loss = swav_loss(*tensors, nmb_crops=list(shape.nmb_crops), crops_for_assign=shape.crops_for_assign,
                         backend="triton", **extra)
        return torch.autograd.grad(loss, tensors)

    replay = graphed(step, warmup=3)
    replay()  # the capture
    return _time(replay, calls, repeats, torch.cuda.synchronize)[0]


def environment_line(threads: int) -> str:
    import triton

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "null driver as sm_90, 132 SMs"
    return (f"torch {torch.__version__}, triton {triton.__version__}, Python {platform.python_version()}, "
            f"{platform.processor() or platform.machine()}, {threads} torch thread(s), load average {load}; "
            f"device: {device}")


def report(results: list[HostCost], shape: Shape, dtype, threads: int) -> str:
    """The host-cost table (and profiles) as text."""
    lines = [f"host cost per eager fwd+bwd, Triton backend, shape {shape.name} (B={shape.batch}, crops "
             f"{list(shape.nmb_crops)}, K={shape.prototypes}, D={shape.dim}, queue {shape.queue}), "
             f"{str(dtype).replace('torch.', '')}",
             environment_line(threads)]
    for r in results:
        line = (f"  {r.path:6s}  {r.wall_us:7.1f} µs wall (median of repeats {r.wall_median_us:.1f}), "
                f"{r.cpu_us:7.1f} µs CPU")
        if r.launches is not None:
            line += f", {r.launches} launches: {' '.join(r.launch_names)}"
        if r.captured_us is not None:
            line += f"; captured replay {r.captured_us:.1f} µs, eager − captured {r.wall_us - r.captured_us:.1f} µs"
        lines.append(line)
    for r in results:
        if r.profile:
            lines += [f"top functions, {r.path} path (cProfile, tottime):", r.profile]
    return "\n".join(lines)


def main(profile: bool = False, calls: int = 500, repeats: int = 9, threads: int = 1) -> int:
    """Measure both paths and print the report (``swav-bench --host``)."""
    from . import null_driver

    torch.set_num_threads(threads)
    if not torch.cuda.is_available():
        null_driver.activate()
    dtype = torch.bfloat16
    results = [measure(path, HOST_SHAPE, dtype, calls, repeats, profile=profile and path == "fused")
               for path in ("fused", "scores")]
    print(report(results, HOST_SHAPE, dtype, threads))
    return 0
