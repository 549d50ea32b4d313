"""swav-bench's report parts that a CPU run cannot exercise end to end: the target lines, the
device line, the kernel-count classification, the CUDA-graph capture failure path and the commit
recorded in a copied tree."""
import shutil
import subprocess

import pytest
import torch

import swav_kernels.bench.graphs as graphs
from swav_kernels.bench.launches import DeviceWork, classify_device_events
from swav_kernels.bench.report import device_line, git_commit
from swav_kernels.bench.runner import _base_record
from swav_kernels.bench.shapes import NAMED_SHAPES, Case
from swav_kernels.bench.targets import peer_path, target_lines


def _record(shape, dtype, peer, median_ms=None, peak_mib=None, kernels=None, status="ok", reason=None):
    r = _base_record(Case(NAMED_SHAPES[shape], dtype, "loss", ("fwd+bwd",)), "fwd+bwd", peer)
    r.update(median_ms=median_ms, peak_bytes=None if peak_mib is None else int(peak_mib * 2**20), kernels=kernels,
             status=status, reason=reason)
    return r


def test_peer_paths():
    assert [peer_path(p) for p in ("reference", "plain-compiled", "triton", "cuda-scores", "triton-graph")] == [
        None, None, "fused", "scores", "graph"]
    assert peer_path("compiled") is None  # schema-1 results' name of reference-compiled


def test_target_lines_say_measured_target_and_met_or_missed():
    records = [
        _record("swav-1gpu", "bfloat16", "triton", 1.05, kernels=12),
        _record("swav-1gpu", "bfloat16", "triton-graph", 1.03),
        _record("swav-1gpu", "bfloat16", "triton-scores", 0.5, kernels=14),
        _record("swav-1gpu", "bfloat16", "cuda", 4.2, kernels=95),
        _record("swav-1gpu", "bfloat16", "cuda-graph", status="failed",
                reason="GraphCaptureError: CUDA graph capture failed: RuntimeError: Cannot copy between CPU and CUDA"),
        _record("large-k", "bfloat16", "triton", 5.5, peak_mib=1063.0),
        _record("large-k", "bfloat16", "cuda", 4.9, peak_mib=600.0),
        _record("large-k", "float32", "cuda", 221.5, peak_mib=1000.0),
        _record("tiny", "bfloat16", "triton", 0.24),
        _record("tiny", "bfloat16", "cuda", 0.4),
    ]
    lines = target_lines(records)
    text = "\n".join(lines)
    assert ("target: [triton] swav-1gpu bf16 fwd+bwd eager, over its captured replay <= captured + 0.15 ms: "
            "triton 1.05 ms = captured 1.03 ms + 0.02 ms met") in lines
    assert "target: [triton] tiny bf16 fwd+bwd eager <= 0.25 ms: triton 0.24 ms met" in lines
    assert "target: [triton] swav-1gpu bf16 fwd+bwd captured (CUDA graph) <= 0.25 ms: triton-graph 1.03 ms MISSED" in lines
    assert ("target: [triton] kernels per fwd+bwd (scores path) <= 10 kernels: triton-scores bfloat16 14 kernels "
            "MISSED") in lines
    assert "target: [triton] large-k bf16 fwd+bwd <= 6 ms: triton 5.5 ms met" in lines
    assert "target: [triton] large-k bf16 fwd+bwd peak extra memory <= 700 MiB: triton 1063 MiB MISSED" in lines
    assert "target: [cuda] large-k bf16 fwd+bwd <= 5 ms: cuda 4.9 ms met" in lines
    assert "target: [cuda] large-k fp32 exact fwd+bwd <= 30 ms: cuda 221.5 ms MISSED" in lines
    assert "target: [cuda] large-k fp32 exact fwd+bwd peak extra memory <= 1536 MiB: cuda 1000 MiB met" in lines
    assert "target: [cuda] swav-1gpu bf16 fwd+bwd eager <= 0.6 ms: cuda 4.2 ms MISSED" in lines
    assert "target: [cuda] tiny bf16 fwd+bwd eager <= 0.3 ms: cuda 0.4 ms MISSED" in lines
    # a backend's target never reads another backend's peers
    assert "target: [cuda] large-k bf16 fwd+bwd <= 5 ms: triton" not in text
    assert "vs plain" not in text  # the old targets are gone
    # a run that allowed TF32 cannot speak for the exact-fp32 target
    assert ("target: [triton] large-k fp32 exact fwd+bwd <= 30 ms: not measured (this run let float32 matmuls use "
            "TF32: not exact)") in target_lines(records, allow_tf32=True)


def test_target_lines_without_kernel_backends_or_counts():
    lines = target_lines([_record("swav-1gpu", "float32", "reference", 5.0),
                          _record("swav-1gpu", "float32", "triton", 9.8)])
    assert ("target: [triton] tiny bf16 fwd+bwd eager <= 0.25 ms: not measured in this run "
            "(no triton fused peer on tiny bfloat16)") in lines
    assert ("target: [triton] kernels per fwd+bwd (fused path) <= 12 kernels: triton float32 n/a "
            "(not counted on this device)") in lines
    assert len(lines) == 14  # one line per target at least


def test_device_line_names_the_device_that_ran():
    env = {"device": "cpu", "device_name": "x86_64", "cpu_threads": 2, "torch": "2.14.1+cu130", "cuda": "13.0",
           "triton": "3.8.0", "date": "2026-11-30T00:00:00+00:00", "git": {"commit": "0123456789abcdef", "dirty": True}}
    line = device_line(env)
    assert line.startswith("device: cpu (x86_64, torch threads: 2); torch 2.14.1+cu130 (built with CUDA 13.0, unused)")
    assert "commit 0123456789ab (dirty)" in line and "; CUDA 13.0" not in line
    gpu = {**env, "device": "cuda", "device_name": "NVIDIA H200", "capability": [9, 0], "torch": "2.11.0+cu130",
           "triton": "3.6.0", "git": None}
    assert device_line(gpu) == ("device: cuda (NVIDIA H200, sm_90); torch 2.11.0+cu130; CUDA 13.0; triton 3.6.0; "
                                "2026-11-30T00:00:00+00:00")


def test_device_events_are_kernels_copies_or_fills():
    names = ["void at::native::vectorized_elementwise_kernel<4, FillFunctor<float>>", "_scores_lse_kernel",
             "Memcpy HtoD (Pageable -> Device)", "Memset (Device)", "Memcpy DtoD (Device -> Device)",
             "swav::score_tile_kernel<__nv_bfloat16, (swav::TileMode)2>"]
    assert classify_device_events(names) == DeviceWork(kernels=3, memcpy=2, memset=1)
    assert classify_device_events([]) == DeviceWork(0, 0, 0)


class _FakeCuda:
    """Just enough of torch.cuda for graphs.graphed on a CPU: capture raises as a real one does
    on a host copy, then ending the invalid capture raises again."""

    class Stream:
        def wait_stream(self, other):
            pass

    class CUDAGraph:
        def replay(self):
            pass

    class graph:
        def __init__(self, g):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            if exc[0] is not None:
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
            return False

    @staticmethod
    def stream(s):
        import contextlib

        return contextlib.nullcontext()

    @staticmethod
    def current_stream():
        return _FakeCuda.Stream()

    @staticmethod
    def synchronize():
        pass


def test_graph_capture_failure_names_its_first_cause(monkeypatch):
    for name in ("Stream", "CUDAGraph", "graph", "stream", "current_stream", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, getattr(_FakeCuda, name))
    calls = []

    def call():
        calls.append(len(calls))
        if len(calls) > 2:  # the two warm-up calls pass, the captured one copies to the host
            raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture")
        return (torch.zeros(1),)

    replay = graphs.graphed(call)
    with pytest.raises(graphs.GraphCaptureError) as info:
        replay()
    assert str(info.value) == (
        "CUDA graph capture failed: RuntimeError: Cannot copy between CPU and CUDA tensors during CUDA graph "
        "capture; then RuntimeError: CUDA error: operation failed due to a previous error during capture")


def test_graph_replays_the_captured_outputs(monkeypatch):
    for name in ("Stream", "CUDAGraph", "graph", "stream", "current_stream", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, getattr(_FakeCuda, name))
    outputs = []

    def call():
        outputs.append((torch.full((1,), float(len(outputs))),))
        return outputs[-1]

    replay = graphs.graphed(call, warmup=2)
    first = replay()
    assert first is outputs[2] and len(outputs) == 3  # 2 warm-up calls + the captured one
    assert replay() is first and len(outputs) == 3  # replays do not call the function again


def _git(folder, *args) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def _repository(folder):
    """A git repository at ``folder`` with one commit; its HEAD."""
    folder.mkdir(parents=True, exist_ok=True)
    _git(folder, "init", "-q")
    (folder / "README").write_text("x\n")
    _git(folder, "add", "README")
    _git(folder, "commit", "-q", "-m", "first")
    return _git(folder, "rev-parse", "HEAD")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_commit_comes_from_the_project_never_from_an_enclosing_repository(tmp_path):
    enclosing = _repository(tmp_path)  # the device copy sat inside another repository (issue 17)
    project = tmp_path / "copy"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'swav-kernels'\n")
    assert git_commit(project) is None  # no .gpu-commit: none recorded, not the enclosing repository's
    recorded = "0123456789abcdef0123456789abcdef01234567"
    (project / ".gpu-commit").write_text(recorded + "\n")
    assert git_commit(project) == {"commit": recorded, "dirty": None, "source": ".gpu-commit"}
    (project / ".gpu-commit").write_text("not a commit\n")
    assert git_commit(project) is None
    assert enclosing not in str(git_commit(project))
    # the project's own checkout: its HEAD (a leftover .gpu-commit may be stale), and whether it is dirty
    own = _repository(project)
    assert git_commit(project) == {"commit": own, "dirty": False, "source": "git"}
    (project / "README").write_text("changed\n")
    assert git_commit(project)["dirty"] is True
    # a dirty tree beside a .gpu-commit is a device copy over an older base: the recorded commit
    (project / ".gpu-commit").write_text(recorded + "\n")
    assert git_commit(project) == {"commit": recorded, "dirty": None, "source": ".gpu-commit"}
    _git(project, "checkout", "-q", "README")
    assert git_commit(project) == {"commit": own, "dirty": False, "source": "git"}  # clean: a stale leftover
    assert git_commit(tmp_path / "copy" / "..") is None  # a folder that is not the project (no pyproject.toml)
