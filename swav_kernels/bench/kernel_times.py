"""Per-kernel device time of a kernel backend's call (``torch.profiler``), each kernel's rate against
ceilings measured in the same run (issue 19): matmul kernels in TFLOP/s against ``torch.mm`` at the
kernel's own product size, ``(rows × D) @ (D × K)`` in the dtype; streaming kernels in GB/s against a
device-to-device copy (``hardware.CopyRate``: bytes read + written / time). FLOPs and bytes come from
the cost model of ``plan`` applied to the Triton plan the call ran (``swav_kernels.loss._PREPARED``);
kernels of other backends get their times only.

GPU only: on a CPU nothing here is measured, and the report says so.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from .plan import Cost, launch_cost
from .shapes import Shape

PROFILED_CALLS = 5


def plan_costs(plan, shape: Shape, dtype: torch.dtype, backward: bool) -> dict[str, tuple[int, Cost]]:
    """``{kernel name: (launches per call, summed Cost)}`` of a Triton plan's forward launches (and its
    backward's with ``backward``), in launch order; kernels the cost model does not know are left out."""
    from .plan import launch_scalars

    launches = list(plan.forward_launches) + (list(plan.backward_launches) if backward else [])
    costs: dict[str, tuple[int, Cost]] = {}
    for launch in launches:
        cost = launch_cost(launch.name, launch.constexprs, launch.grid, launch_scalars(launch), shape, dtype)
        if cost is None:
            continue
        count, total = costs.get(launch.name, (0, Cost((), 0, 0)))
        costs[launch.name] = (count + 1, Cost(total.passes + cost.passes, total.flops + cost.flops,
                                              total.bytes + cost.bytes))
    return costs


def sum_kernel_events(events: Iterable[tuple[str, float]], calls: int) -> dict[str, tuple[float, float]]:
    """``{name: (launches per call, µs per call)}`` from ``(name, µs)`` device events of ``calls`` calls, in
    order of first appearance."""
    totals: dict[str, list[float]] = {}
    for name, microseconds in events:
        entry = totals.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += microseconds
    return {name: (count / calls, total / calls) for name, (count, total) in totals.items()}


def profile_device_events(fn: Callable[[], object], device, calls: int = PROFILED_CALLS) -> list[tuple[str, float]]:
    """``(name, µs)`` of every device event (kernels, copies, fills) of ``calls`` calls of ``fn``."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(device)
    kineto = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if kineto is not None:
        return [(e.name(), e.duration_ns() / 1e3) for e in kineto.events() if e.device_type() == DeviceType.CUDA]
    return [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA]


def kernel_rows(times: dict[str, tuple[float, float]], costs: dict[str, tuple[int, Cost]],
                matmul_rate: Callable[[int], object], copy_rate) -> list[dict]:
    """One entry per kernel name of ``times`` (``sum_kernel_events``): its launches and µs per call and,
    where ``costs`` has it, its work and rate against the ceiling: ``matmul_rate(rows)`` (a
    ``hardware.MatmulRate`` or None) for kernels with matmul passes, ``copy_rate`` (a ``hardware.CopyRate``
    or None) for the others."""
    rows = []
    for name, (launches, microseconds) in times.items():
        entry = dict(kernel=name, launches=launches, us=microseconds, flops=None, bytes=None, rate=None, unit=None,
                     ceiling=None, ceiling_rate=None, pct_of_ceiling=None)
        cost = costs.get(name, (None, None))[1]
        seconds = microseconds / 1e6
        if cost is not None and seconds > 0:
            entry.update(flops=cost.flops, bytes=cost.bytes)
            if cost.flops:
                ceiling = matmul_rate(cost.rows)
                entry.update(rate=cost.flops / seconds / 1e12, unit="TFLOP/s")
                if ceiling is not None:
                    entry.update(ceiling=ceiling.describe(), ceiling_rate=ceiling.tflops)
            else:
                ceiling = copy_rate
                entry.update(rate=cost.bytes / seconds / 1e9, unit="GB/s")
                if ceiling is not None:
                    entry.update(ceiling=ceiling.describe(), ceiling_rate=ceiling.gbps)
            if entry["ceiling_rate"]:
                entry["pct_of_ceiling"] = 100.0 * entry["rate"] / entry["ceiling_rate"]
        rows.append(entry)
    return rows


SECTION_COLUMNS = ("shape", "dtype", "pass", "peer", "kernel", "launches", "µs/call", "work", "rate", "% ceiling",
                   "ceiling")


def _short_name(name: str, width: int = 48) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def format_kernel_section(records: list[dict], device: str) -> list[str]:
    """The per-kernel section of ``table.txt``: one line per kernel of every record that has them."""
    head = ("per-kernel device time (torch.profiler, mean over 5 calls) against ceilings measured in this run: "
            "matmul kernels in TFLOP/s (FLOPs: swav_kernels.bench.plan's cost model) against torch.mm at the "
            "kernel's own (rows × D) @ (D × K) size; streaming kernels in GB/s (bytes: the same model, each tensor "
            "once) against the device copy (bytes read + written / time: the figure DESIGN §5a's 60 % divides by)")
    if not device.startswith("cuda"):
        return [f"per-kernel times, device-copy bandwidth and torch.mm at the shapes' sizes: not measured on "
                f"{torch.device(device).type} (they need the GPU's profiler and timers)"]
    rows = []
    for r in records:
        for k in r.get("kernel_times") or ():
            work = ("-" if k["flops"] is None else f"{k['flops'] / 1e9:.3g} GFLOP" if k["flops"] else
                    f"{k['bytes'] / 1e6:.3g} MB")
            rate = "-" if k["rate"] is None else f"{k['rate']:.4g} {k['unit']}"
            pct = "-" if k["pct_of_ceiling"] is None else f"{k['pct_of_ceiling']:.1f}"
            rows.append((r["shape"], r["dtype"], r["pass"], r["peer"], _short_name(k["kernel"]), f"{k['launches']:g}",
                         f"{k['us']:.1f}", work, rate, pct, k["ceiling"] or "-"))
    if not rows:
        return [head, "  (no kernel backend's fused or scores row was profiled in this run)"]
    table = [SECTION_COLUMNS] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(SECTION_COLUMNS))]
    lines = [head]
    for n, row in enumerate(table):
        lines.append("  ".join(cell.rjust(w) if 5 <= i <= 9 else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("-" * len(lines[-1]))
    return lines
