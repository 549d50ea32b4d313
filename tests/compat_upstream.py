"""The trainers' own loss modules, for the compat tests to compare the adapters with.

Each package is installed with ``pip install --no-deps`` (``.ci/run`` does it in its first
leg): lightly 1.6.0, solo-learn 1.0.2, vissl 0.1.6, dinov2 0.0.1.dev2. Their package
``__init__`` files import far more than the loss (solo-learn: pytorch_lightning; VISSL:
every loss, fvcore, iopath), so only the loss files are loaded, by path, under their own
module names; what those files import and is not installed is stubbed while they load:

- lightly ``loss/swav_loss.py``, solo-learn ``losses/swav.py`` and
  ``utils/sinkhorn_knopp.py``, DINOv2 ``loss/dino_clstoken_loss.py`` and
  ``loss/ibot_patch_loss.py``: torch and numpy only, nothing stubbed.
- VISSL ``losses/swav_loss.py`` and ``losses/distibuted_sinkhornknopp.py``: the real
  ``classy_vision.generic.distributed_util`` (the vissl wheel ships classy_vision; torch
  only) and ``vissl.config.AttrDict``; stubbed: ``classy_vision.losses`` (``ClassyLoss`` =
  ``nn.Module``, ``register_loss`` = identity: the real one imports every loss and
  fvcore), ``iopath.common.file_io.g_pathmgr`` (used only to dump tensors on a NaN loss;
  the stub raises if called) and the ``vissl.losses`` package (its ``__init__`` imports
  every loss). Without a GPU, ``classy_vision``'s ``set_cpu_device()`` is called, as VISSL's
  trainer does on a CPU machine.

``upstream(name)`` returns the loaded modules, or skips the calling test with the reason;
with ``SWAV_KERNELS_REQUIRE_UPSTREAM=1`` in the environment (CI) it fails the test instead.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import sys
import types

import pytest
import torch

REQUIRE_ENV = "SWAV_KERNELS_REQUIRE_UPSTREAM"
INSTALL = "pip install --no-deps lightly==1.6.0 solo-learn==1.0.2 vissl==0.1.6 dinov2==0.0.1.dev2"
_ABSENT = object()


def _package_dir(package: str) -> pathlib.Path:
    """Where ``package`` is installed, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def _stub_package(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so submodules resolve through sys.modules
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _load_files(files: dict[str, pathlib.Path], stubs: dict[str, types.ModuleType]) -> dict[str, types.ModuleType]:
    """Execute ``files`` (module name → path, in order) as modules of those names, with
    ``stubs`` in ``sys.modules`` while they load; ``sys.modules`` is left as it was."""
    names = list(stubs) + list(files)
    saved = {name: sys.modules.get(name, _ABSENT) for name in names}
    loaded = {}
    try:
        sys.modules.update(stubs)
        for name, path in files.items():
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded[name] = module
    finally:
        for name, value in saved.items():
            if value is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return loaded


def _lightly():
    root = _package_dir("lightly")
    return _load_files({"lightly.loss.swav_loss": root / "loss" / "swav_loss.py"}, {})


def _solo_learn():
    root = _package_dir("solo")
    return _load_files({"solo.losses.swav": root / "losses" / "swav.py",
                        "solo.utils.sinkhorn_knopp": root / "utils" / "sinkhorn_knopp.py"}, {})


def _dinov2():
    root = _package_dir("dinov2")
    return _load_files({"dinov2.loss.dino_clstoken_loss": root / "loss" / "dino_clstoken_loss.py",
                        "dinov2.loss.ibot_patch_loss": root / "loss" / "ibot_patch_loss.py"}, {})


class _NoPathManager:
    def __getattr__(self, name):
        raise RuntimeError(f"g_pathmgr.{name}: iopath is stubbed in the compat tests (VISSL dumps tensors on NaN)")


def _vissl():
    root = _package_dir("vissl")
    _package_dir("classy_vision")  # shipped in the vissl wheel
    stubs = {
        "classy_vision.losses": _stub_package("classy_vision.losses", ClassyLoss=torch.nn.Module,
                                              register_loss=lambda name: (lambda cls: cls)),
        "iopath": _stub_package("iopath"),
        "iopath.common": _stub_package("iopath.common"),
        "iopath.common.file_io": _stub_package("iopath.common.file_io", g_pathmgr=_NoPathManager()),
        "vissl.losses": _stub_package("vissl.losses"),
    }
    modules = _load_files({"vissl.losses.distibuted_sinkhornknopp": root / "losses" / "distibuted_sinkhornknopp.py",
                           "vissl.losses.swav_loss": root / "losses" / "swav_loss.py"}, stubs)
    if not torch.cuda.is_available():  # what VISSL's trainer does on a CPU machine (else it moves r, c to CUDA)
        importlib.import_module("classy_vision.generic.distributed_util").set_cpu_device()
    return modules


_LOADERS = {"lightly": _lightly, "solo-learn": _solo_learn, "vissl": _vissl, "dinov2": _dinov2}


@functools.lru_cache(maxsize=None)
def _try_load(name: str):
    try:
        return _LOADERS[name](), None
    except Exception as error:  # noqa: BLE001 - the reason is reported by upstream()
        return None, f"{name}'s loss module does not load: {type(error).__name__}: {error}"


def upstream(name: str) -> dict[str, types.ModuleType]:
    """The upstream loss modules of ``name`` (module name → module); skips the test when
    they do not load, or fails it when ``SWAV_KERNELS_REQUIRE_UPSTREAM=1``."""
    modules, reason = _try_load(name)
    if modules is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it ({INSTALL})", pytrace=False)
        pytest.skip(f"{reason} ({INSTALL}; {REQUIRE_ENV}=1 makes this a failure)")
    return modules



def assert_like_upstream(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float, poisoned: bool = True) -> None:
    """``poisoned`` (a non-finite value reached this call's inputs): ``ours`` is NaN in every
    entry. Where the upstream's ``theirs`` is NaN or ±inf, that is what it does too; where it stays
    finite (an exp(−inf) = 0 weight) or gives ±inf, ours is stricter by the project's policy
    (DESIGN.md §3: a non-finite input gives NaN, never a finite number). Otherwise the two are
    equal within ``tolerance`` (max abs error / max abs expected)."""
    ours, theirs = ours.detach().double(), theirs.detach().double()
    assert ours.shape == theirs.shape
    if poisoned:
        assert torch.isnan(ours).all(), f"ours {ours.tolist()}, upstream {theirs.tolist()}"
        return
    assert torch.isfinite(ours).all() and torch.isfinite(theirs).all(), (ours.tolist(), theirs.tolist())
    error = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert error <= tolerance * scale if scale > 0 else error <= tolerance
