"""The printed table, the run's metadata and the JSON file."""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import pathlib
import platform
import subprocess

import torch

from .peers import BUILTIN_PEERS

SCHEMA = "swav-bench/1"
COLUMNS = ("shape", "dtype", "op", "pass", "peer", "median ms", "IQR ms", "x ref", "x compiled",
           "peak MiB", "mem/ref", "throughput", "% peak", "err vs ref", "status")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> dict | None:
    """{"commit", "dirty"} of the checkout holding this package, or None if it is not one."""
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def device_name(device: torch.device) -> str:
    """The GPU's marketing name, or the CPU's processor string."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def environment(device: torch.device) -> dict:
    """Where and with what this run was measured."""
    info = {
        "device": str(device),
        "device_name": device_name(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "swav_kernels": _version("swav-kernels"),
        "git": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_threads": torch.get_num_threads(),
        "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        info["capability"] = list(torch.cuda.get_device_capability(device))
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return info


def write_json(path: pathlib.Path, meta: dict, records: list[dict]) -> None:
    """``{"schema", **meta, "results": records}`` to ``path`` (written whole, then renamed)."""
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps({"schema": SCHEMA, **meta, "results": records}, indent=1))
    partial.replace(path)


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _throughput(r: dict) -> str:
    if r["tflops"] is not None:
        return f"{r['tflops']:.3g} TFLOP/s"
    if r["tbps"] is not None:
        return f"{r['tbps']:.3g} TB/s"
    return "-"


def _row(r: dict) -> tuple[str, ...]:
    memory = "n/a" if r["status"] == "ok" and r["peak_bytes"] is None else _fmt(
        None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20, ".1f")
    status = r["status"] if r["reason"] is None else f"{r['status']}: {r['reason']}"
    return (r["shape"], r["dtype"], r["op"], r["pass"], r["peer"], _fmt(r["median_ms"], ".4g"),
            _fmt(r["iqr_ms"], ".2g"), _fmt(r["speedup_vs_reference"], ".2f"), _fmt(r["speedup_vs_compiled"], ".2f"),
            memory, _fmt(r["memory_ratio_vs_reference"], ".3f"), _throughput(r), _fmt(r["pct_of_peak"], ".1f"),
            _fmt(r["max_rel_err_vs_reference"], ".1e"), status)


def format_table(records: list[dict]) -> str:
    """One row per record, aligned columns; failures carry their reason in the last column."""
    rows = [COLUMNS] + [_row(r) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i < 5 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def target_lines(records: list[dict]) -> list[str]:
    """How the best kernel backend compares with the issue's targets, from what was measured:
    at swav-1gpu fwd+bwd ≥ 10× eager and ≥ 3× compiled; at large-k peak memory ≤ 10% of the
    reference's; ≥ 50% of the bf16 tensor-core peak at the largest shapes."""
    kernels = [r for r in records if r["status"] == "ok" and r["peer"] not in BUILTIN_PEERS]
    if not kernels:
        return ["targets: no kernel backend was measured in this run"]
    lines = []

    def best(shape, dtype, key, largest=True):
        rows = [r for r in kernels if r["shape"] == shape and r["dtype"] == dtype and r["op"] == "loss"
                and r["pass"] == "fwd+bwd" and r[key] is not None]
        return max(rows, key=lambda r: r[key] if largest else -r[key]) if rows else None

    for dtype in sorted({r["dtype"] for r in kernels}):
        r = best("swav-1gpu", dtype, "speedup_vs_reference")
        if r:
            lines.append(f"swav-1gpu loss fwd+bwd {dtype}: {r['peer']} {r['speedup_vs_reference']:.2f}x eager "
                         f"(target >= 10x), {_fmt(r['speedup_vs_compiled'], '.2f')}x compiled (target >= 3x)")
        r = best("large-k", dtype, "memory_ratio_vs_reference", largest=False)
        if r:
            lines.append(f"large-k loss fwd+bwd {dtype}: {r['peer']} peak memory "
                         f"{100 * r['memory_ratio_vs_reference']:.1f}% of the reference's (target <= 10%)")
    bf16 = [r for r in kernels if r["dtype"] == "bfloat16" and r["op"] == "loss" and r["pct_of_peak"] is not None]
    if bf16:
        largest = max(r["flops"] for r in bf16)
        r = max((r for r in bf16 if r["flops"] == largest), key=lambda r: r["pct_of_peak"])
        lines.append(f"largest bf16 loss ({r['shape']} {r['pass']}): {r['peer']} {r['pct_of_peak']:.1f}% "
                     f"of the {r['peak_kind']} peak (target >= 50%)")
    return lines or ["targets: the target shapes (swav-1gpu, large-k) were not measured in this run"]
