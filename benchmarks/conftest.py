"""pytest-benchmark suite of the SwAV loss: ``pytest benchmarks/ --benchmark-only``.

It shares shapes, problems and peers with ``swav-bench`` (``swav_kernels.bench``): every case
of the plan × pass × available peer is one benchmark. Which plan:
``--swav-set quick`` (tiny shapes, seconds on a CPU) or ``full`` (DESIGN §5 shapes and the
sweeps); default: ``$SWAV_BENCH_SET``, else full on a CUDA machine and quick without one.
Narrow it further with ``-k`` (ids read ``shape-dtype-op-pass-peer``).
"""
import os

import pytest
import torch

from swav_kernels.bench.peers import available_peer_names
from swav_kernels.bench.shapes import NAMED_SHAPES, OPS, PASSES, QUICK_SHAPES, SWEEPS, plan_cases

DTYPES = ("float32", "bfloat16")


def pytest_addoption(parser):
    group = parser.getgroup("swav-bench")
    group.addoption("--swav-set", choices=("quick", "full"), default=os.environ.get("SWAV_BENCH_SET"),
                    help="quick: tiny shapes; full: DESIGN §5 shapes and sweeps (default: full with CUDA)")
    group.addoption("--swav-device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.addoption("--swav-compile-backend", default=None,
                    help="torch.compile backend of the reference-compiled and plain-compiled peers "
                         "(default: inductor; quick: aot_eager)")


def _device(config) -> torch.device:
    return torch.device(config.getoption("--swav-device") or ("cuda" if torch.cuda.is_available() else "cpu"))


def _quick(config) -> bool:
    chosen = config.getoption("--swav-set")
    return chosen == "quick" if chosen else _device(config).type != "cuda"


@pytest.fixture(scope="session")
def bench_device(request) -> torch.device:
    return _device(request.config)


@pytest.fixture(scope="session")
def bench_settings(request) -> dict:
    """Rounds and compile backend of this session's plan."""
    quick = _quick(request.config)
    backend = request.config.getoption("--swav-compile-backend") or ("aot_eager" if quick else "inductor")
    return {"quick": quick, "compile_backend": backend, "rounds": 3 if quick else 20, "warmup_rounds": 1 if quick else 3}


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    device, quick = _device(config), _quick(config)
    names = list(QUICK_SHAPES if quick else NAMED_SHAPES)
    params, ids = [], []
    for case in plan_cases(names, SWEEPS, OPS, PASSES, DTYPES, quick=quick):
        peers, _ = available_peer_names(device, getattr(torch, case.dtype))
        for pass_ in case.passes:
            for peer in peers:
                params.append((case, pass_, peer))
                ids.append(f"{case.shape.name}-{case.dtype}-{case.op}-{pass_}-{peer}")
    metafunc.parametrize("bench_case", params, ids=ids)
