"""Device work items of one call, counted with ``torch.profiler`` (CUDA activity): kernels, and
memory copies and fills listed apart. DESIGN §5a bounds the kernels of one fwd+bwd (≤ 12 on
the fused path, ≤ 10 on the scores path), autograd's seed fill included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass(frozen=True)
class DeviceWork:
    """Counts of one call: ``kernels`` launched, ``memcpy`` copies and ``memset`` fills."""

    kernels: int
    memcpy: int
    memset: int


def classify_device_events(names: Iterable[str]) -> DeviceWork:
    """Counts of the device-side events called ``names`` (the profiler's CUDA activity):
    CUPTI names copies ``Memcpy HtoD (Pageable -> Device)`` … and fills ``Memset (Device)``;
    every other device event is a kernel."""
    kernels = memcpy = memset = 0
    for name in names:
        lowered = name.lower()
        if lowered.startswith("memcpy"):
            memcpy += 1
        elif lowered.startswith("memset"):
            memset += 1
        else:
            kernels += 1
    return DeviceWork(kernels, memcpy, memset)


def _device_event_names(prof) -> list[str]:
    """Names of the device-side events of a finished ``torch.profiler.profile``: the raw kineto
    events where torch exposes them (one per launch), else the parsed function events."""
    from torch.autograd import DeviceType

    kineto = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if kineto is not None:
        return [e.name() for e in kineto.events() if e.device_type() == DeviceType.CUDA]
    return [e.name for e in prof.events() if e.device_type == DeviceType.CUDA]


def count_device_work(fn: Callable[[], object], device) -> DeviceWork | None:
    """Kernels, copies and fills of one call of ``fn`` (already warmed up: no compilation or
    autotuning inside); None on a device the profiler's CUDA activity does not see, and None
    when it saw no device event at all (a call on the GPU launches at least one kernel, so the
    profiler could not trace the device, e.g. CUPTI missing: 0 would read as a met target)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        outputs = fn()
        torch.cuda.synchronize(device)
    del outputs
    names = _device_event_names(prof)
    return classify_device_events(names) if names else None
