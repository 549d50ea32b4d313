"""Wall-time samples and peak memory of one callable, on CPU or on a CUDA device.

CUDA: every sample is bracketed by CUDA events (``triton.testing.do_bench`` when triton is
installed: it also warms up by time and flushes the L2 cache before every sample); memory is
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
allocated before the call. CPU: ``time.perf_counter`` per call; peak memory is not measured
(the CPU allocator keeps no peak statistics), and is reported as None, not as a number.
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_ms(fn: Callable[[], tuple], device: torch.device) -> tuple[float, tuple]:
    """(wall time of one synchronised call in ms, its outputs): the first call includes any
    compilation, autotuning and allocator growth."""
    synchronize(device)
    start = time.perf_counter()
    outputs = fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, outputs


def cpu_samples(fn: Callable[[], object], warmup_ms: float, rep_ms: float,
                min_samples: int, max_samples: int) -> list[float]:
    """Per-call wall times in ms: calls for ``warmup_ms`` (at least one), then samples until
    ``rep_ms`` has passed and at least ``min_samples`` were taken (at most ``max_samples``)."""
    deadline = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < deadline:
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(samples) < max_samples and (len(samples) < min_samples or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _event_samples(fn: Callable[[], object], warmup_ms: float, rep_ms: float, estimate_ms: float) -> list[float]:
    """CUDA-event samples without triton: warm-up, then one event pair per call."""
    for _ in range(max(1, int(warmup_ms / estimate_ms))):
        fn()
    n = max(1, int(rep_ms / estimate_ms))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for start, end in zip(starts, ends):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in zip(starts, ends)]


def cuda_samples(fn: Callable[[], object], device: torch.device, warmup_ms: float, rep_ms: float,
                 min_samples: int, max_samples: int) -> list[float]:
    """Per-call GPU times in ms from CUDA events. The repetition time is stretched so that
    about ``min_samples`` samples are taken, and capped so that at most ``max_samples`` are."""
    with torch.cuda.device(device):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        estimate_ms = max(start.elapsed_time(end), 1e-3)
        rep = min(max(rep_ms, min_samples * estimate_ms), max_samples * estimate_ms)
        try:
            from triton.testing import do_bench
        except ImportError:
            return _event_samples(fn, warmup_ms, rep, estimate_ms)
        try:
            return [float(t) for t in do_bench(fn, warmup=warmup_ms, rep=rep, return_mode="all")]
        except (TypeError, AssertionError):  # a triton whose do_bench cannot return every sample
            return _event_samples(fn, warmup_ms, rep, estimate_ms)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated during one call of ``fn`` above what was allocated before it
    (the inputs, and whatever else is alive); None on devices without allocator statistics."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    outputs = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del outputs
    return peak
