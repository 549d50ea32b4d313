"""``python -m swav_kernels.info``: versions, devices and which backends run here, and why not."""
from __future__ import annotations

import importlib.metadata
import platform

import torch

from .cuda.extension import build_status, unavailable_reason
from .registry import backend_status


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> str:
    """A human-readable report of this machine's swav-kernels setup."""
    lines = [
        f"swav-kernels {_version('swav-kernels')}  python {platform.python_version()}",
        f"torch {torch.__version__} (CUDA {torch.version.cuda})  triton {_version('triton')}",
        f"CUDA extension: {build_status()}",
        f"CUDA extension import: {unavailable_reason() or 'ok'}",
    ]
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        for i in range(torch.cuda.device_count()):
            lines.append(f"cuda:{i}: {torch.cuda.get_device_name(i)}")
    else:
        lines.append("GPU: none visible to torch")
    for device in devices:
        for dtype in (torch.float32, torch.bfloat16):
            lines.append(f"backends on {device} for {dtype}:")
            for name, reason in backend_status(device, dtype).items():
                lines.append(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
