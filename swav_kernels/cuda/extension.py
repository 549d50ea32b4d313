"""Loading the compiled extension ``swav_kernels._C`` and saying why it is not there."""
from __future__ import annotations

import importlib
from pathlib import Path


def build_status() -> str:
    """What setup.py recorded: ``"built: …"`` or ``"skipped: …"`` (or that nothing was recorded)."""
    try:
        from .. import _build_info
    except ImportError:
        package = Path(__file__).resolve().parents[1]
        return (f"unknown: no _build_info in {package}: not a copy that setup.py built (a checkout imported ahead of "
                "the installed package? python -m swav_kernels.info tells)")
    return _build_info.CUDA_EXTENSION_STATUS


def _load():
    try:
        return importlib.import_module("swav_kernels._C"), None
    except ImportError as error:
        return None, f"swav_kernels._C is not importable ({error}); build status: {build_status()}"


# Imported once, with swav_kernels: looking it up later is a plain read, which torch.compile
# traces (an import inside a traced region is a graph break).
_MODULE, _REASON = _load()


def _import():
    return _MODULE, _REASON


def extension():
    """The ``_C`` module; raises ImportError with the reason when it is not available."""
    module, reason = _import()
    if module is None:
        raise ImportError(reason)
    return module


def unavailable_reason() -> str | None:
    """None when ``_C`` imports; otherwise why not."""
    return _import()[1]
