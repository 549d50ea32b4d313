"""What swav-train needs, said without torchvision too: ``--help`` always works, and the install
hint names torchvision's release for the installed torch, from the index that serves that torch,
with torch pinned so that pip never replaces it. Runs on every install (no torchvision needed)."""
import subprocess
import sys

import pytest

from swav_kernels.train import requirements
from swav_kernels.train.__main__ import main

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize("torch_release, command", [
    ("2.13.0+cpu", f"pip install torch==2.13.0+cpu torchvision==0.28.0 --index-url {CPU_INDEX}"),
    ("2.14.1", "pip install torch==2.14.1 torchvision==0.29.1"),  # PyPI's build (its metadata has no tag)
    ("2.11.0", "pip install torch==2.11.0 torchvision==0.26.0"),
    ("2.12.1+cu128", "pip install torch==2.12.1+cu128 torchvision==0.27.1 --index-url https://download.pytorch.org/whl/cu128"),
    ("2.14.0+rocm6.4", "pip install torch==2.14.0+rocm6.4 torchvision==0.29.0 --index-url https://download.pytorch.org/whl/rocm6.4"),
    ("2.15.0", None),  # outside the table: no guess
    ("2.14.0a0+git1f2e3d4", None),  # a source build: no index serves it
])
def test_torchvision_command_matches_and_keeps_the_installed_torch(torch_release, command):
    assert requirements.torchvision_command(torch_release) == command


def without_torchvision(monkeypatch, torch_release="2.13.0+cpu", installed=None):
    """As on torch 2.13.0+cpu with torchvision absent (``installed=None``) or installed but
    failing at import (``installed="0.28.0"``, PyPI's build beside the CPU torch)."""
    class FailingImport:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "torchvision":
                raise RuntimeError("operator torchvision::nms does not exist")
            return None

    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [FailingImport(), *sys.meta_path])
    monkeypatch.setattr(requirements, "torch_version", lambda: torch_release)
    real_installed = requirements.installed_version
    monkeypatch.setattr(requirements, "installed_version",
                        lambda dist: installed if dist == "torchvision" else real_installed(dist))


@pytest.mark.parametrize("installed", [None, "0.28.0"])
def test_help_works_without_torchvision_and_says_what_to_install(installed, monkeypatch, capsys):
    without_torchvision(monkeypatch, installed=installed)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: swav-train")
    lines, text = out.splitlines(), " ".join(out.split())  # the epilog's prose is wrapped, commands are not
    assert "swav-train needs torchvision built for the installed torch, timm (LARS), scikit-learn" in text
    command = f"pip install torch==2.13.0+cpu torchvision==0.28.0 --index-url {CPU_INDEX}"
    if installed is None:
        assert "which is not installed" in text and f"    {command}" in lines
    else:
        assert "torchvision 0.28.0 is installed but does not import (RuntimeError: operator torchvision::nms" in text
        assert f"    pip uninstall -y torchvision && {command}" in lines
    assert "'.[train]'" not in out


def test_a_run_without_torchvision_is_one_line_with_the_matching_release(monkeypatch, capsys):
    without_torchvision(monkeypatch, installed=None)
    with pytest.raises(SystemExit) as exit_info:
        main(["--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("swav-train: error: swav-train needs torchvision, which is not installed; install "
                          "torchvision 0.28.0, the release for torch 2.13.0+cpu, from " + CPU_INDEX)
    assert f"pip install torch==2.13.0+cpu torchvision==0.28.0 --index-url {CPU_INDEX}" in err
    assert "'.[train]'" not in err and "Traceback" not in err


def test_a_torch_outside_the_table_gets_no_guessed_command(monkeypatch, capsys):
    without_torchvision(monkeypatch, torch_release="2.15.0")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "install the torchvision release made for torch 2.15.0" in err and "torch==2.15.0 in the same pip" in err
    assert "pip install torch" not in err


def test_other_requirements_are_installed_beside_the_installed_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setattr(requirements, "torch_version", lambda: "2.13.0+cpu")
    monkeypatch.setattr(requirements, "torchvision_problem", lambda: None)
    assert requirements.missing_requirements() == (
        "swav-train needs timm and scikit-learn (torch pinned so that pip keeps it): "
        "pip install timm scikit-learn torch==2.13.0+cpu")


def test_help_in_a_fresh_process():
    """The installed command as a user types it, with whatever this install has."""
    result = subprocess.run([sys.executable, "-m", "swav_kernels.train", "--help"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "swav-train needs torchvision built for the installed torch" in text
    assert "Here:" in text and "Traceback" not in result.stderr
