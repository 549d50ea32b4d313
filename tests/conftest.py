import os
import pathlib
import sys

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's CPU interpreter; the variable must be set
# before the kernel modules are first imported (their @triton.jit reads it).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Child Pythons (`python -m swav_kernels...`, torchrun) must import the installed package, as
# this process does, not the source tree in the working directory, which lacks the compiled
# extension after a non-editable `pip install .` (Python >= 3.11 honours this variable).
os.environ["PYTHONSAFEPATH"] = "1"

# tests/ helpers (problems.py, transcription.py) import as top-level modules.
sys.path.insert(0, str(pathlib.Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, so a failure reproduces."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory, monkeypatch):
    """Every test runs in its own empty temporary folder (not its ``tmp_path``, which stays
    the test's own), so nothing in the directory pytest was started from (a clone where
    ``swav-train`` left ``swav-run/``) changes a test, and whatever a default relative path
    writes lands there, not in the clone."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
