"""Prepared launches: a Triton kernel whose grid, scalar arguments and launch options are fixed once
per call signature, so that each call supplies only its buffers and the stream.

``kernel[grid](...)`` binds and specialises every argument and builds a cache key at every launch:
7–15 µs of host time per launch, most of an eager SwAV step at the paper's shapes (DESIGN §5a).
A ``PreparedLaunch`` pays that once: its first run goes through ``kernel[grid]`` with tensors, which
compiles (or finds) exactly the binary Triton picks for these arguments and returns it; every later
run calls that compiled kernel's launcher directly (``CompiledKernel.run``, the call ``JITFunction.run``
itself makes after a cache hit, the same in triton 3.6 to 3.9) with the buffers' addresses as plain
integers. The binary stays the right one because the plan owning the launch is keyed by everything
Triton specialises on: each input's dtype and 16-byte alignment (workspace buffers are aligned by
construction), every integer argument (== 1 and % 16 classes included), every constexpr.

Runs stay on ``kernel[grid]`` under the interpreter, when a launch hook is installed (profilers such
as proton see every launch), and on a Triton whose compiled kernels lack that interface.
"""
from __future__ import annotations

import threading
from typing import Any, NamedTuple, Sequence

from triton import knobs

from .launch import interpreting

_COMPILE_LOCK = threading.Lock()  # Triton's JIT cache and handle loading are not thread-safe


class Buffer(NamedTuple):
    """An argument filled at each run: entry ``index`` of the run's buffers (a tensor on the first run
    and under the interpreter, its address afterwards)."""

    index: int


def hooks_installed() -> bool:
    """True when a Triton launch hook is registered (a profiler wants to see every launch)."""
    runtime = knobs.runtime
    return bool(getattr(runtime.launch_enter_hook, "calls", True) or getattr(runtime.launch_exit_hook, "calls", True))


class PreparedLaunch:
    """One launch of ``kernel`` over ``grid`` with ``arguments`` (every non-constexpr parameter in
    declaration order: values, or ``Buffer`` placeholders) and ``constexprs`` (by name, launch options
    such as ``num_warps`` included)."""

    def __init__(self, kernel, grid: Sequence[int], arguments: Sequence[Any], constexprs: dict[str, Any]):
        self.kernel = kernel
        self.grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        self.arguments = tuple(arguments)
        self.constexprs = dict(constexprs)
        self.compiled = None  # the CompiledKernel of the first run
        self.direct = None  # launch(stream, addresses): the compiled kernel's launcher, bound

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    def run_tensors(self, buffers: Sequence) -> None:
        """Launch through ``kernel[grid]`` with ``buffers`` as tensors (they fill the placeholders)."""
        arguments = [buffers[a.index] if type(a) is Buffer else a for a in self.arguments]
        if 0 in self.grid:
            return
        compiled = self.kernel[self.grid](*arguments, **self.constexprs)
        if self.compiled is None and not interpreting():
            with _COMPILE_LOCK:
                self.compiled = compiled
                self.direct = _direct_launcher(self.kernel, compiled, self.grid, self.arguments, self.constexprs)

    @property
    def ready(self) -> bool:
        """True when later runs can go straight to the compiled kernel."""
        return self.direct is not None


def _direct_launcher(kernel, compiled, grid, arguments, constexprs):
    """``launch(stream, addresses)``: ``compiled.run(grid…, stream, function, metadata, None, None, None,
    *every parameter)``, generated once with the fixed arguments bound as constants (Inductor's launchers
    are built the same way); None when the compiled kernel lacks that interface or the grid is empty."""
    try:
        run, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
    except AttributeError:
        return None
    if function is None or 0 in grid:
        return None
    names = {"run": run, "function": function, "metadata": metadata}
    values = iter(arguments)
    parts = []
    for position, parameter in enumerate(kernel.params):
        if parameter.is_constexpr:  # the launcher skips constexpr slots; their value is never read
            parts.append("None")
            continue
        value = next(values)
        if type(value) is Buffer:
            parts.append(f"addresses[{value.index}]")
        else:
            names[f"a{position}"] = value
            parts.append(f"a{position}")
    if next(values, None) is not None:
        raise ValueError(f"{kernel.fn.__name__}: more arguments than non-constexpr parameters")
    source = (f"def launch(stream, addresses):\n"
              f"    run({grid[0]}, {grid[1]}, {grid[2]}, stream, function, metadata, None, None, None, "
              f"{', '.join(parts)})\n")
    exec(compile(source, f"<launch {kernel.fn.__name__}>", "exec"), names)
    return names["launch"]
