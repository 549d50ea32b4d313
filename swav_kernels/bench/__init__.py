"""Benchmarks of the SwAV loss: the ``swav-bench`` command and what the pytest-benchmark suite
in ``benchmarks/`` shares with it (shapes, problems, peers, timing, device peaks).

    swav-bench --quick                       # tiny shapes, CPU is enough, seconds
    swav-bench --shapes swav-1gpu --sweeps   # one DESIGN §5 shape, every peer, on the GPU
"""
from .cli import main

__all__ = ["main"]
