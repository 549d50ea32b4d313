"""``python -m swav_kernels`` (the built-in example) and ``python -m swav_kernels.info``."""
import os
import pathlib
import subprocess
import sys

import pytest

from swav_kernels.__main__ import main


def test_builtin_example_reports_agreement_with_float64(capsys):
    main(["--batch", "4", "--prototypes", "50", "--feat-dim", "16", "--backend", "reference"])
    out = capsys.readouterr().out
    assert "backend=reference" in out
    errors = out.split("vs float64")[1].split("(relative)")[0].split()
    loss_err, z_err, c_err = float(errors[1]), float(errors[3]), float(errors[5])
    assert loss_err <= 1e-6 and z_err <= 1e-5 and c_err <= 1e-5


def test_builtin_example_rejects_bad_sizes():
    with pytest.raises(SystemExit) as exit_info:
        main(["--batch", "0"])
    assert exit_info.value.code == 2


def test_info_lists_backends():
    result = subprocess.run([sys.executable, "-m", "swav_kernels.info"], capture_output=True, text=True, check=True)
    assert "reference  available" in result.stdout
    assert "triton" in result.stdout


def _copy_as_source_tree(root):
    """A checkout-like copy of the installed package under ``root``: the Python files only, no
    compiled extension and no build record (what a clone holds after a non-editable install)."""
    import shutil

    import swav_kernels

    installed = pathlib.Path(swav_kernels.__file__).parent
    shutil.copytree(installed, root / "swav_kernels",
                    ignore=shutil.ignore_patterns("_C*.so", "_build_info.py", "__pycache__"))
    # the egg-info a setuptools build leaves in the checkout: importlib.metadata finds it first too
    egg_info = root / "swav_kernels.egg-info"
    egg_info.mkdir()
    (egg_info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: swav-kernels\nVersion: 0.1.0\n")
    (egg_info / "SOURCES.txt").write_text("swav_kernels/__init__.py\nswav_kernels/info.py\n")
    return installed


def test_info_run_from_a_source_tree_says_it_shadows_the_installed_package(tmp_path):
    from swav_kernels.cuda import extension

    installed = _copy_as_source_tree(tmp_path)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    result = subprocess.run([sys.executable, "-m", "swav_kernels.info"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert f"imported swav_kernels from {tmp_path / 'swav_kernels'}" in out
    assert f"not the installed package at {installed.resolve()}" in out
    assert "cd" in out and "pip install -e ." in out
    # and then the truth about the installed package, not "unknown ... (no _build_info)"
    assert f"CUDA extension: {extension.build_status()}" in result.stdout
    assert "no _build_info" not in result.stdout


def test_info_from_elsewhere_has_no_shadowing_note():
    result = subprocess.run([sys.executable, "-m", "swav_kernels.info"], capture_output=True, text=True, check=True)
    assert "installed package" not in result.stdout
