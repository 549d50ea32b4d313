"""``python -m swav_kernels`` (the built-in example) and ``python -m swav_kernels.info``."""
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
