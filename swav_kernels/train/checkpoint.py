"""Checkpoints: written atomically, read back with ``weights_only=True``.

A checkpoint is one file holding everything a run needs to continue as if never stopped:
model, optimiser and scheduler state, the epoch and iteration, every rank's SwAV queue and
random-number-generator states, and the loss history. It is written to a temporary file in
the same directory, flushed to disk, then renamed over the previous checkpoint
(``os.replace`` is atomic on POSIX and Windows), so a run killed while saving leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` such that ``path`` holds either the old or the new file, never a torn one."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


def load(path: str, map_location="cpu") -> dict:
    """A checkpoint written by :func:`atomic_save`, loaded with ``weights_only=True``."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a swav-train checkpoint (format version {FORMAT_VERSION})")
    return checkpoint


def rng_state() -> dict:
    """This process's random generators (torch CPU and CUDA, numpy, Python) as tensors and plain types."""
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
