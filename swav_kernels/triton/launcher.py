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

import torch
from triton import knobs

from .launch import interpreting

_COMPILE_LOCK = threading.Lock()  # Triton's JIT cache and handle loading are not thread-safe
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


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
        """Launch through ``kernel[grid]`` with ``buffers`` as tensors (they fill the placeholders); while
        torch traces (FakeTensors, functional tensors: a Triton op under torch.compile), through
        ``torch.library.wrap_triton``, which records the launch in the graph."""
        arguments = [buffers[a.index] if type(a) is Buffer else a for a in self.arguments]
        if 0 in self.grid:
            return
        if any(type(a) not in _PLAIN_TENSORS for a in arguments if isinstance(a, torch.Tensor)):
            torch.library.wrap_triton(self.kernel)[self.grid](*arguments, **self.constexprs)
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
    """``launch(stream, addresses)`` for ``compiled``, generated once with the fixed arguments bound as
    constants (Inductor builds its launchers the same way); None when the grid is empty or the compiled
    kernel lacks the expected interface.

    Where the launcher object is one of the two known shapes and the kernel needs no scratch memory,
    the call goes one level lower, to the C function it wraps: triton 3.7–3.9's shared ``launch(grid…,
    stream, function, cooperative, pdl, metadata, launch metadata, hooks, scratch, annotations,
    signature, arguments)`` or triton 3.6's per-kernel ``launch(grid…, stream, function, cooperative,
    pdl, scratch, metadata, launch metadata, hooks, *arguments)``; else ``CompiledKernel.run`` (the
    launcher object itself, the same contract in 3.6–3.9) with ``None`` launch hooks."""
    try:
        launcher, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
    except AttributeError:
        return None
    if function is None or 0 in grid:
        return None
    names = {"function": function, "metadata": metadata}
    values = iter(arguments)
    parts = []
    for parameter in kernel.params:
        if parameter.is_constexpr:  # the launchers skip constexpr slots; their value is never read
            parts.append("None")
            continue
        value = next(values)
        if type(value) is Buffer:
            parts.append(f"addresses[{value.index}]")
        else:
            names[f"a{len(names)}"] = value
            parts.append(f"a{len(names) - 1}")
    if next(values, None) is not None:
        raise ValueError(f"{kernel.fn.__name__}: more arguments than non-constexpr parameters")
    head = f"{grid[0]}, {grid[1]}, {grid[2]}, stream, function"
    form = _launcher_form(launcher)
    if form == "shared":  # triton 3.7+
        names.update(launch=launcher.launch, cooperative=launcher.launch_cooperative_grid, pdl=launcher.launch_pdl,
                      annotations=launcher.arg_annotations, signature=launcher.kernel_signature)
        call = (f"launch({head}, cooperative, pdl, metadata, None, None, None, None, None, annotations, signature, "
                f"({', '.join(parts)},))")
    elif form == "per-kernel":  # triton 3.6
        names.update(launch=launcher.launch, cooperative=launcher.launch_cooperative_grid, pdl=launcher.launch_pdl)
        call = f"launch({head}, cooperative, pdl, None, None, metadata, None, None, None, {', '.join(parts)})"
    else:
        names["launch"] = launcher
        call = f"launch({head}, metadata, None, None, None, {', '.join(parts)})"
    source = f"def launch_{kernel.fn.__name__}(stream, addresses):\n    {call}\n"
    exec(compile(source, f"<launch {kernel.fn.__name__}>", "exec"), names)
    return names[f"launch_{kernel.fn.__name__}"]


def _launcher_form(launcher) -> str:
    """Which C call sits under ``CompiledKernel.run`` ("shared", "per-kernel"), or "object" when the
    launcher must be called as is (scratch memory to allocate, tensor descriptors, sanitizers, or a
    Triton this module does not know)."""
    import inspect

    launch = getattr(launcher, "launch", None)
    if type(launch).__name__ != "builtin_function_or_method":
        return "object"
    if getattr(launcher, "global_scratch_size", 1) or getattr(launcher, "profile_scratch_size", 1):
        return "object"
    if getattr(launcher, "gsan_enabled", False) or not hasattr(launcher, "launch_cooperative_grid"):
        return "object"
    if hasattr(launcher, "arg_annotations") and hasattr(launcher, "kernel_signature"):
        return "shared"
    parameters = list(inspect.signature(type(launcher).__call__).parameters)
    if parameters == ["self", "gridX", "gridY", "gridZ", "stream", "function", "args"]:
        return "per-kernel"
    return "object"
