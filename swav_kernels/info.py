"""``python -m swav_kernels.info``: versions, devices and which backends run here, and why not.

Run from a clone after a (non-editable) ``pip install .``, Python imports the clone's
``swav_kernels`` (the current directory comes first on ``sys.path``), which has neither the
compiled extension nor the build record of the installed package. The report then says so,
with the fix, and describes the installed package as Python sees it from another directory.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

from .cuda.extension import build_status, unavailable_reason
from .registry import backend_status

IMPORTED = Path(__file__).resolve().parent  # the swav_kernels this Python imported
_CHILD = "SWAV_KERNELS_INFO_FROM_ELSEWHERE"  # set for the re-run from another directory (no recursion)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def installed_package_dirs() -> list[Path]:
    """The ``swav_kernels`` directories that pip installed (non-editable) on ``sys.path``."""
    found = []
    for dist in importlib.metadata.distributions(name="swav-kernels"):
        if dist.read_text("RECORD") is None:  # an egg-info a build left in a checkout: not an install
            continue
        for file in dist.files or ():
            if file.as_posix() == "swav_kernels/__init__.py":  # editable installs list a finder instead
                path = Path(dist.locate_file(file)).resolve().parent
                if path.is_dir() and path not in found:
                    found.append(path)
    return found


def shadowing_note() -> str | None:
    """None when the imported ``swav_kernels`` is the installed one (or none is installed);
    otherwise what happened and how to fix it."""
    installed = installed_package_dirs()
    if not installed or IMPORTED in installed:
        return None
    return textwrap.fill(
        f"NOTE: this Python imported swav_kernels from {IMPORTED}, not the installed package at {installed[0]}: "
        "a checkout in the current directory (or on PYTHONPATH) comes first on sys.path. That copy has no compiled "
        "CUDA extension (swav_kernels._C) and no build record, and python -c / python -m run from here import it "
        "too. Fix: run from another directory (cd ..), or install the checkout editable (pip install -e .) so that "
        "both are the same.",
        width=100, break_long_words=False, break_on_hyphens=False,
    )


def report() -> str:
    """A human-readable report of this machine's swav-kernels setup (of the imported package)."""
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


def _report_from_elsewhere() -> str | None:
    """This report as a Python started in another directory gives it (the installed package), or None."""
    env = {**os.environ, _CHILD: "1", "PYTHONSAFEPATH": "1"}
    try:
        child = subprocess.run([sys.executable, "-m", "swav_kernels.info"], cwd=tempfile.gettempdir(), env=env,
                               capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    return child.stdout.rstrip("\n") if child.returncode == 0 else None


def main() -> None:
    note = shadowing_note()
    if note is None:
        print(report())
        return
    print(note)
    installed = None if os.environ.get(_CHILD) else _report_from_elsewhere()
    if installed is not None and "NOTE: this Python imported" not in installed:
        print(f"\nThe installed package, as Python sees it from another directory ({tempfile.gettempdir()}):")
        print(installed)
    else:
        print(f"\nThe copy imported here ({IMPORTED}):")
        print(report())


if __name__ == "__main__":
    main()
