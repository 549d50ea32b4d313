"""Swap attributes of a trainer's modules for ours, and put the originals back.

Like Liger-Kernel's ``apply_liger_kernel_to_*``, a patch rebinds module-level names
(functions a trainer imported by name, wherever they were imported) and replaces methods
on the trainer's classes in place, so instances created before the patch use ours too.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any, Iterable

_ABSENT = object()


def import_trainer(module_name: str, install_hint: str) -> ModuleType:
    """The trainer's module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"cannot patch {module_name}: it does not import ({error}); {install_hint}"
        ) from error


def everywhere(original: Any, replacement: Any, package: str) -> list[tuple[Any, str, Any]]:
    """``(module, name, replacement)`` for every loaded module of ``package`` that holds
    ``original`` under some name (``from x import f`` binds ``f`` in the importer too)."""
    found = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == package or module_name.startswith(package + ".")):
            continue
        for name, value in list(vars(module).items()):
            if value is original:
                found.append((module, name, replacement))
    return found


class Patch:
    """A set of ``(owner, attribute, replacement)`` swaps applied together and undone together."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    @property
    def applied(self) -> bool:
        return bool(self._saved)

    def apply(self, swaps: Iterable[tuple[Any, str, Any]]) -> bool:
        """Make the swaps; False (and nothing changed) when this patch is already applied."""
        if self._saved:
            return False
        for owner, name, replacement in swaps:
            self._saved.append((owner, name, vars(owner).get(name, _ABSENT)))
            setattr(owner, name, replacement)
        return True

    def undo(self) -> bool:
        """Restore every original; False when nothing was applied."""
        if not self._saved:
            return False
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        return True
