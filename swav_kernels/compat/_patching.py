"""Swap attributes of a trainer's modules for ours, and put the originals back.

Like Liger-Kernel's ``apply_liger_kernel_to_*``, a patch rebinds module-level names
(functions a trainer imported by name, wherever they were imported) and replaces methods
on the trainer's classes in place, so instances created before the patch use ours too.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterable, Optional

_ABSENT = object()


@dataclass(frozen=True)
class Trainer:
    """What a ``patch()`` error says about the trainer it patches.

    name: as users call it (``"solo-learn"``); distribution: its pip name, for its version;
    works_with: the versions ``patch()`` was tested with and how to install them (``{torch}``
    stands for the installed torch, to pin in a pip command); drop_in: the adapter's import that
    needs no import of the trainer; known_failure: given the installed version and the import's
    exception, advice for a known broken case, or None."""

    name: str
    distribution: str
    works_with: str
    drop_in: str
    known_failure: Callable[[Optional[str], BaseException], Optional[str]] = lambda version, error: None


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of ``distribution`` (pip's name), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _location(package: str) -> Optional[str]:
    """Where ``package`` would be imported from, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # hidden by an import hook, or a None/spec-less entry in sys.modules
        return None
    if spec is None:
        return None
    return (list(spec.submodule_search_locations or []) or [spec.origin or "?"])[0]


def import_trainer(module_name: str, trainer: Trainer) -> ModuleType:
    """The trainer's module, or an ImportError that says what failed: the trainer is not
    installed, or it is installed and its own import fails (the upstream error quoted, advice for
    a known case); then where ``patch()`` works, and the drop-in that needs no trainer."""
    package = module_name.partition(".")[0]
    works_with = trainer.works_with.format(torch=installed_version("torch") or "<your torch version>")
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # an upstream's import can fail with anything (ImportError, AttributeError, ...)
        where = _location(package)
        if where is None or (isinstance(error, ModuleNotFoundError) and error.name == package):
            raise ImportError(
                f"cannot patch {trainer.name}: it is not installed (no module {package!r}). patch() works with "
                f"{works_with}. Without {trainer.name}, use the drop-in: {trainer.drop_in}"
            ) from error
        version = installed_version(trainer.distribution)
        known = trainer.known_failure(version, error)
        raise ImportError(
            f"cannot patch {trainer.name}: {trainer.name} {version or '(version unknown)'} is installed ({where}) but "
            f"its own import fails: import {module_name} raised {type(error).__name__}: {error}. "
            + (f"{known} " if known else "")
            + f"patch() works with {works_with}. Or use the drop-in, which does not import {trainer.name}: "
            f"{trainer.drop_in}"
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
