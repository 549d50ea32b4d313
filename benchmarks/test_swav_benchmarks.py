"""One benchmark per (shape, dtype, op, pass, peer) of the shared plan (see conftest.py).

Times come from pytest-benchmark's timer around a call followed by a device synchronisation;
``extra_info`` holds the FLOP count, the bytes of the inputs and the peak memory above them
(CUDA only; None on CPU). A peer that runs out of memory or returns NaN/inf is skipped with
the reason (the plain exp-domain Sinkhorn overflows on large scores), and so is a
``<backend>-graph`` peer whose CUDA-graph capture fails; other errors fail.
"""
import pytest
import torch

from swav_kernels.bench.flops import algorithm_flops, matmul_flops, sinkhorn_bytes
from swav_kernels.bench.graphs import GraphCaptureError
from swav_kernels.bench.peers import Unsupported, make_peer
from swav_kernels.bench.problem import make_problem
from swav_kernels.bench.timing import peak_memory_bytes, synchronize


def test_swav(benchmark, bench_case, bench_device, bench_settings):
    case, pass_, peer_name = bench_case
    dtype = getattr(torch, case.dtype)
    problem = make_problem(case.shape, bench_device, dtype, sinkhorn_scores=case.op == "sinkhorn")
    try:
        fn = make_peer(peer_name, bench_settings["compile_backend"]).functions(case.op, problem)[pass_]
    except Unsupported as why:
        pytest.skip(str(why))
    try:
        outputs = fn()  # compilation, autotuning
        synchronize(bench_device)
        peak = peak_memory_bytes(fn, bench_device)
    except torch.OutOfMemoryError as error:
        pytest.skip(f"{peer_name} failed: out of memory ({str(error).splitlines()[0]})")
    except GraphCaptureError as error:
        pytest.skip(f"{peer_name} failed: {error}")
    if not all(bool(torch.isfinite(t).all()) for t in outputs):
        pytest.skip(f"{peer_name} failed: non-finite output (NaN or inf)")
    del outputs

    def run():
        fn()
        synchronize(bench_device)

    benchmark.group = f"{case.shape.name} {case.dtype} {case.op} {pass_}"
    benchmark.extra_info.update(
        device=str(bench_device), peer=peer_name, flops=matmul_flops(case.shape, case.op, pass_),
        algorithm_flops=algorithm_flops(peer_name, case.shape, case.op, pass_, problem.sinkhorn_iterations,
                                        case.dtype in ("bfloat16", "float16")),
        sinkhorn_bytes=sinkhorn_bytes(case.shape, dtype) if case.op == "sinkhorn" else None,
        input_bytes=problem.input_bytes(case.op), peak_bytes=peak,
    )
    benchmark.pedantic(run, rounds=bench_settings["rounds"], warmup_rounds=bench_settings["warmup_rounds"],
                       iterations=1)
