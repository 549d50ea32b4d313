"""What ``swav-train`` needs besides swav_kernels, and how to install it without replacing torch.

The trainer needs torchvision (crops, ResNets, ImageFolder), timm (LARS), scikit-learn (the
digits, k-NN and linear probe), matplotlib (``loss.png``) and tqdm: the ``train`` extra.

torchvision's compiled operators are made for one torch release, and each torchvision release
pins it (PyPI's metadata: torchvision 0.26.0 requires torch==2.11.0, 0.27.0 2.12.0, 0.27.1
2.12.1, 0.28.0 2.13.0, 0.29.0 2.14.0; 0.29.1 goes with 2.14.1). Its wheels also follow the
torch build: beside the CPU build ``torch 2.13.0+cpu``, PyPI's torchvision 0.28.0 installs but
fails at import (``operator torchvision::nms does not exist``). A plain ``pip install
torchvision`` (or ``pip install '.[train]'``) takes the newest release, whose pin makes pip
replace the user's torch (on torch 2.13.0+cpu: the CUDA build of torch 2.14.1 and its NVIDIA
libraries). So the hint names the torchvision release made for the installed torch, the index
that serves that torch build, and pins torch to the installed version in the same command:
pip then keeps that torch, or stops with a conflict, but never replaces it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import textwrap

# torch release (major, minor) -> torchvision minor version; the patch versions go together
# (torch 2.12.1 <-> torchvision 0.27.1), as PyPI's metadata above shows.
TORCHVISION_MINOR = {(2, 11): 26, (2, 12): 27, (2, 13): 28, (2, 14): 29}

# The index that serves PyTorch's builds whose version carries a local tag (+cpu, +cu130, ...);
# PyPI serves the untagged ones (Linux: CUDA builds).
PYTORCH_INDEX = "https://download.pytorch.org/whl"
_INDEX_TAG = re.compile(r"cpu|cu\d+|rocm\d+(\.\d+)*|xpu")

# import name -> distribution name of the other requirements (any release that imports works)
OTHERS = {"timm": "timm", "sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm"}

NEEDS = ("swav-train needs torchvision built for the installed torch, timm (LARS), scikit-learn (the digits, "
         "k-NN and linear probe), matplotlib (loss.png) and tqdm: the 'train' extra.")


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` as pip sees it, or None when not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_version() -> str:
    """The installed torch as pip sees it: ``2.14.1`` for PyPI's build (whose
    ``torch.__version__`` says ``2.14.1+cu130``), ``2.13.0+cpu`` for PyTorch's CPU build."""
    version = installed_version("torch")
    if version is None:  # torch importable but without metadata (a source tree on the path)
        import torch

        version = torch.__version__
    return version


def torchvision_for(torch_release: str) -> str | None:
    """torchvision's release for ``torch_release`` (``2.13.0+cpu`` -> ``0.28.0``), or None
    outside the table."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", torch_release)
    if match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    vision_minor = TORCHVISION_MINOR.get((major, minor))
    return None if vision_minor is None else f"0.{vision_minor}.{patch}"


def torchvision_command(torch_release: str) -> str | None:
    """The pip command that installs torchvision's release for ``torch_release`` (as pip
    sees the installed torch) and keeps that torch; None where the release or its index is
    not known (a torch outside the table, a source build)."""
    vision = torchvision_for(torch_release)
    if vision is None:
        return None
    tag = torch_release.partition("+")[2]
    command = f"pip install torch=={torch_release} torchvision=={vision}"
    if not tag:
        return command  # PyPI's build
    if _INDEX_TAG.fullmatch(tag):
        return f"{command} --index-url {PYTORCH_INDEX}/{tag}"
    return None


def _torchvision_advice(torch_release: str) -> tuple[str, str | None]:
    """(what to install, the pip command or None) for torchvision beside ``torch_release``."""
    command = torchvision_command(torch_release)
    if command is None:
        return (f"install the torchvision release made for torch {torch_release} (torchvision's README lists the "
                f"pairs) from the index that served this torch, with torch=={torch_release} in the same pip command "
                "so that pip keeps it; not pip install '.[train]', which takes the newest torchvision and replaces "
                "torch to match it"), None
    where = command.rsplit(" ", 1)[1] if "--index-url" in command else "PyPI"
    return (f"install torchvision {torchvision_for(torch_release)}, the release for torch {torch_release}, from "
            f"{where} (torch pinned so that pip keeps it)"), command


def torchvision_problem() -> tuple[str, str | None] | None:
    """None when torchvision imports; else (what is wrong and what to install, the pip command
    that does it or None)."""
    try:
        importlib.import_module("torchvision")
        return None
    except Exception as error:  # ImportError, or a build for another torch (RuntimeError, OSError)
        release = torch_version()
        advice, command = _torchvision_advice(release)
        installed = installed_version("torchvision")
        if installed is None:
            return f"swav-train needs torchvision, which is not installed; {advice}", command
        reason = (f"swav-train needs torchvision built for the installed torch {release}; torchvision {installed} "
                  f"is installed but does not import ({type(error).__name__}: {error}); remove it and {advice}")
        return reason, None if command is None else f"pip uninstall -y torchvision && {command}"


def _findable(module: str) -> bool:
    """Whether ``module`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook refusing it, or a spec-less entry in sys.modules
        return False


def others_problem() -> tuple[str, str] | None:
    """None when timm, scikit-learn, matplotlib and tqdm import; else (which do not, the pip
    command that installs them and keeps the installed torch)."""
    absent = [name for module, name in OTHERS.items() if not _findable(module)]
    if not absent:
        return None
    return (f"swav-train needs {' and '.join(absent)} (torch pinned so that pip keeps it)",
            f"pip install {' '.join(absent)} torch=={torch_version()}")


def _problems() -> list[tuple[str, str | None]]:
    return [problem for problem in (torchvision_problem(), others_problem()) if problem is not None]


def missing_requirements() -> str | None:
    """None when everything the trainer needs imports; else one line: what is missing and the
    pip commands that install it without replacing torch (torchvision first)."""
    problems = _problems()
    if not problems:
        return None
    return "; then ".join(reason if command is None else f"{reason}: {command}" for reason, command in problems)


def help_text() -> str:
    """What the trainer needs, whether this machine has it and, if not, the commands (each on
    its own line, to copy); for the epilog of ``swav-train --help``."""
    problems = _problems()
    if not problems:
        vision = installed_version("torchvision")
        return textwrap.fill(f"{NEEDS} Here: all present (torch {torch_version()}, torchvision {vision}).", 88)
    lines = [textwrap.fill(f"{NEEDS} Here:", 88)]
    for reason, command in problems:
        lines.append(textwrap.fill(reason + ("" if command is None else ":"), 88, initial_indent="- ",
                                   subsequent_indent="  "))
        if command is not None:
            lines.append(f"    {command}")  # one line, to copy
    return "\n".join(lines)
