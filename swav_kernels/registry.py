"""Backend registry: names → lazily constructed backends, and the ``"auto"`` choice.

Kernel backends register a loader (so importing ``swav_kernels`` never imports triton or
the CUDA extension) and a rank for ``"auto"``: on a device where registered backends apply,
each call runs on the one the rule table of ``swav_kernels.auto_rules`` picks for its shape
(the others by rank); elsewhere ``"auto"`` falls back to the reference and says so once per
reason.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Callable

import torch

from .auto_rules import AutoBackend
from .backend import Backend

_LOADERS: dict[str, Callable[[], Backend]] = {"reference": Backend}
_AUTO_RANK: dict[str, int] = {}
_INSTANCES: dict[str, Backend] = {}
_LOAD_ERRORS: dict[str, str] = {}
_WARNED: set[str] = set()
_RESOLVED: dict[tuple, Backend] = {}  # (name, device, dtype) -> backend: one lookup per call


def register_backend(name: str, loader: Callable[[], Backend] | str, auto_rank: int | None = None) -> None:
    """Make ``backend=name`` available.

    Args:
        loader: a callable returning the backend, or ``"module:Class"`` imported on first use.
        auto_rank: position in ``"auto"``'s order of preference (lower first); None keeps the
            backend out of ``"auto"``.
    """
    if isinstance(loader, str):
        module_name, _, attr = loader.partition(":")

        def loader(module_name=module_name, attr=attr):
            return getattr(importlib.import_module(module_name), attr)()

    _LOADERS[name] = loader
    _forget_resolutions()
    _INSTANCES.pop(name, None)
    _LOAD_ERRORS.pop(name, None)
    if auto_rank is None:
        _AUTO_RANK.pop(name, None)
    else:
        _AUTO_RANK[name] = auto_rank


def unregister_backend(name: str) -> None:
    """Forget backend ``name`` (the reference stays)."""
    if name == "reference":
        raise ValueError("the reference backend cannot be unregistered")
    for table in (_LOADERS, _AUTO_RANK, _INSTANCES, _LOAD_ERRORS):
        table.pop(name, None)
    _forget_resolutions()


def _forget_resolutions() -> None:
    """Drop every cached resolution, swav_loss's prepared calls included (they hold a backend)."""
    from . import loss

    _RESOLVED.clear()
    loss._PREPARED.clear()


def backend_names() -> tuple[str, ...]:
    """Every accepted value of ``backend=``."""
    return ("auto", *sorted(_LOADERS))


def _load(name: str) -> Backend | None:
    if name not in _INSTANCES and name not in _LOAD_ERRORS:
        try:
            _INSTANCES[name] = _LOADERS[name]()
        except Exception as error:  # an optional dependency is missing or broken
            _LOAD_ERRORS[name] = f"{type(error).__name__}: {error}"
    return _INSTANCES.get(name)


def _load_backends(*names: str) -> None:
    """Load ``names`` now rather than at first use (their loaders are cheap): a torch.compile trace that
    found them unloaded would load them and then fail its own guard on the registry."""
    for name in names:
        _load(name)


def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when backend ``name`` runs on ``device`` with ``dtype``; else the reason why not."""
    backend = _load(name)
    if backend is None:
        return f"could not be loaded ({_LOAD_ERRORS[name]})"
    return backend.unavailable_reason(torch.device(device), dtype)


def check_backend_name(name) -> str:
    """``name`` if it is an accepted value of ``backend=`` (``backend_names()``); otherwise a
    TypeError (not a string) or ValueError (unknown) that lists the accepted names."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, one of {backend_names()}, got {type(name).__name__} {name!r}")
    if name != "auto" and name not in _LOADERS:
        raise ValueError(f"backend must be one of {backend_names()}, got {name!r}")
    return name


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend that will run tensors of ``dtype`` on ``device`` for ``backend=name``;
    resolved (and ``name`` checked) once per (name, device, dtype) and cached (not while torch.compile
    traces: the cache growing under a compiled function would fail its guard and compile it again)."""
    key = (name, device, dtype)
    try:
        backend = _RESOLVED.get(key)
    except TypeError:  # an unhashable name (a list, ...): say what backend= accepts
        check_backend_name(name)
        raise
    if backend is None:
        backend = _resolve(name, device, dtype)
        if not torch.compiler.is_compiling():
            _RESOLVED[key] = backend
    return backend


# Frames in these folders are the library's (and nn.Module.__call__'s), not the user's line
_LIBRARY_DIRS = (os.path.dirname(__file__) + os.sep, os.path.dirname(torch.__file__) + os.sep)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function point at the
    first frame outside swav_kernels and torch: the user's line, whichever entry point it called
    (``swav_loss``, ``SwAVLoss`` through ``nn.Module.__call__``, a compat adapter, ...)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def _resolve(name: str, device: torch.device, dtype: torch.dtype) -> Backend:
    check_backend_name(name)
    if name != "auto":
        reason = unavailable_reason(name, device, dtype)
        if reason is not None:
            raise RuntimeError(f"backend={name!r} cannot run {dtype} tensors on {device}: {reason}")
        return _INSTANCES[name]
    if device.type != "cuda":  # interpreters (TRITON_INTERPRET=1) run on CPU, but only on request
        message = (f"swav_kernels: kernel backends run on CUDA tensors; using the pure-PyTorch reference "
                   f"for {device.type} tensors")
    else:
        reasons, available = [], {}
        for candidate in sorted(_AUTO_RANK, key=_AUTO_RANK.get):
            reason = unavailable_reason(candidate, device, dtype)
            if reason is None:
                available[candidate] = _INSTANCES[candidate]
            else:
                reasons.append(f"{candidate}: {reason}")
        if available:  # the backend of each call is chosen by its shape (swav_kernels/auto_rules.py)
            return AutoBackend(available)
        message = (f"swav_kernels: no kernel backend applies to {dtype} tensors on {device}; using the "
                   "pure-PyTorch reference" + (f" ({'; '.join(reasons)})" if reasons else ""))
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=_user_stacklevel())
    return _load("reference")


def backend_status(device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict[str, str | None]:
    """``{name: None if usable else reason}`` for every registered backend."""
    return {name: unavailable_reason(name, torch.device(device), dtype) for name in sorted(_LOADERS)}
