"""CUDA-graph replay of a timed call: the ``<backend>-graph`` peers (DESIGN §5a: the default
path is capturable, no host synchronisation, so one replay is the call without host overhead).

The call is warmed up on a side stream, captured once with ``torch.cuda.graph`` on its static
inputs (the problem's tensors), and every later call replays the graph and returns the
captured outputs (overwritten in place by each replay). A capture that fails raises
``GraphCaptureError`` with the reason; the runner records it as that peer's status.
"""
from __future__ import annotations

from typing import Callable


class GraphCaptureError(RuntimeError):
    """The call could not be captured into a CUDA graph (the message says why)."""


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def _reason(error: BaseException) -> str:
    """The first error of the chain (what broke the capture), then what ending the capture
    raised on top of it (``torch.cuda.graph``'s exit raises again once a capture is invalid)."""
    chain = [error]
    while chain[-1].__context__ is not None and len(chain) < 5:
        chain.append(chain[-1].__context__)
    return "; then ".join(_short(e) for e in reversed(chain))


def graphed(fn: Callable[[], tuple], warmup: int = 2) -> Callable[[], tuple]:
    """``fn`` captured into a CUDA graph at its first call, replayed at every call."""
    state: dict = {}

    def capture() -> None:
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture stream, as torch's docs do
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                outputs = fn()
        except Exception as error:
            raise GraphCaptureError(f"CUDA graph capture failed: {_reason(error)}") from None
        state.update(graph=graph, outputs=outputs)

    def replay() -> tuple:
        if "graph" not in state:
            capture()
        state["graph"].replay()
        return state["outputs"]

    return replay
