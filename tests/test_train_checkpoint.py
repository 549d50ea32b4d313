"""swav-train checkpoints: atomic writes survive a kill mid-save; RNG state round-trips."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from swav_kernels.train import checkpoint as ckpt


def make_state(value: float, size: int = 1000) -> dict:
    return {"format_version": ckpt.FORMAT_VERSION, "weights": torch.full((size,), value), "epoch": int(value)}


def test_atomic_save_round_trip(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    ckpt.atomic_save(make_state(3.0), path)
    loaded = ckpt.load(path)
    assert loaded["epoch"] == 3
    torch.testing.assert_close(loaded["weights"], torch.full((1000,), 3.0))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


def test_failure_midway_through_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    ckpt.atomic_save(make_state(1.0), path)
    real_save = torch.save

    def torn_save(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)  # bytes of the new checkpoint are written ...
        file.seek(file.tell() // 2)
        file.truncate()  # ... half of them survive ...
        raise OSError("disk full")  # ... and the writer dies

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_save(make_state(2.0), path)
    monkeypatch.undo()
    assert ckpt.load(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]  # the temporary file is gone


def test_process_killed_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    """A child process saves 40 MB checkpoints in a loop and is SIGKILLed mid-write."""
    path = str(tmp_path / "checkpoint.pt")
    child = textwrap.dedent(
        f"""
        import sys, torch
        from swav_kernels.train import checkpoint as ckpt
        epoch = 0
        while True:
            ckpt.atomic_save({{"format_version": ckpt.FORMAT_VERSION, "epoch": epoch,
                              "weights": torch.full((10_000_000,), float(epoch))}}, {path!r})
            print(epoch, flush=True)
            epoch += 1
        """
    )
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):  # at least two checkpoints written: the kill lands during a later save
            assert process.stdout.readline(), "the child stopped before writing two checkpoints"
        time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    state = ckpt.load(path)
    assert state["epoch"] >= 1
    assert torch.equal(state["weights"], torch.full((10_000_000,), float(state["epoch"])))


def test_load_rejects_foreign_files(tmp_path):
    path = str(tmp_path / "other.pt")
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not a swav-train checkpoint"):
        ckpt.load(path)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.normal()  # a cached Gaussian is part of numpy's state
    path = str(tmp_path / "rng.pt")
    ckpt.atomic_save({"format_version": ckpt.FORMAT_VERSION, "rng": ckpt.rng_state()}, path)
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.normal())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    ckpt.set_rng_state(ckpt.load(path)["rng"])
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.normal())
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]
