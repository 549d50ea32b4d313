"""Same versions, same thread count: two ``swav-train`` runs give bit-identical losses and weights.

The README's sample output holds on another machine only as far as its floating-point
reductions do: oneDNN/MKL pick kernels by CPU ISA and split sums by thread count, so another
machine or ``--threads`` may change the last bits and, over 210 steps, the printed digits. On
one machine, with one torch and one thread count, nothing may vary: each run here is its own
process (as two invocations of the command are), with a data-loading worker (the default) and
two intra-op threads (multi-threaded reductions), the queue in use and the prototypes frozen
for the first steps.
"""
import subprocess
import sys

import pytest
import torch

pytest.importorskip("torchvision", reason="swav-train needs torchvision (swav-train --help says which release)")
pytest.importorskip("timm", reason="swav-train's LARS comes from timm (pip install timm)")
pytest.importorskip("sklearn", reason="digits need scikit-learn (pip install scikit-learn)")

from swav_kernels.train import checkpoint as ckpt  # noqa: E402
from swav_kernels.train import report  # noqa: E402

# The digits defaults, shortened: 96 images in batches of 32 (3 steps per epoch), 2 epochs,
# a 64-row queue from epoch 1 (full after its 2 first steps, in use at the third), prototypes
# frozen for 2 steps.
SHORT = ["--size-dataset", "96", "--epochs", "2", "--warmup-epochs", "1", "--queue-length", "64",
         "--epoch-queue-starts", "1", "--freeze-prototypes-niters", "2", "--threads", "2", "--no-eval",
         "--no-progress"]


def run_once(dump_path):
    result = subprocess.run([sys.executable, "-m", "swav_kernels.train", *SHORT, "--dump-path", str(dump_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return report.read_log(str(dump_path / "log.csv")), ckpt.load(str(dump_path / "checkpoint.pt"))


def test_two_runs_are_bitwise_equal(tmp_path):
    first_log, first = run_once(tmp_path / "first")
    second_log, second = run_once(tmp_path / "second")
    losses = [row["loss"] for row in first_log]
    assert len(losses) == 6 and [row["queue_in_use"] for row in first_log] == [0, 0, 0, 0, 0, 1]
    assert losses == [row["loss"] for row in second_log]  # floats read back exactly from the CSV
    assert first["history"]["loss"] == second["history"]["loss"] == losses
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name
    assert torch.equal(first["queues"][0]["queue"], second["queues"][0]["queue"])
    assert not torch.equal(first["model"]["prototypes.weight"], torch.zeros_like(first["model"]["prototypes.weight"]))
