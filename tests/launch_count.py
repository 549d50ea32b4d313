"""Counting what a call would launch and where it would wait, on a machine without a GPU (and on one).

``DeviceWork`` is a dispatch mode that records every ATen op that reaches it, except those run
inside a Triton kernel launch (the interpreter computes kernels with torch ops of its own), and
counts each Triton launch (interpreted under ``TRITON_INTERPRET=1``, compiled on a GPU) once, and
each launch of a CUDA kernel of csrc/ run by the CPU emulation (tests/cuda_emulation: pybind calls,
not torch ops; the emulated module logs the kernels it launches, read here in order). An ATen op
counts as a device launch unless it only makes a view or allocates memory. Separately it records
what would make the host wait for the device or build host tensors per call: ``.item()`` and
friends, branches on a tensor's value, and tensors made from Python data.
"""
from __future__ import annotations

import contextlib
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

NO_LAUNCH = {  # allocation and metadata only
    aten.empty.memory_format, aten.empty_like.default, aten.new_empty.default, aten.empty_strided.default,
    aten.new_empty_strided.default, aten.sym_size.int, aten.sym_stride.int, aten.sym_numel.default,
    aten.sym_storage_offset.default, aten.is_same_size.default, aten.set_.source_Storage_storage_offset,
    aten._unsafe_view.default,  # a view that autograd does not track
}
SYNCS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default, aten.item.default}
HOST_TENSORS = {aten.lift_fresh.default, aten.lift_fresh_copy.default, aten.scalar_tensor.default}


class DeviceWork:
    """Inside ``with DeviceWork() as work:``: ``work.launches`` (names, in order), ``work.syncs``,
    ``work.host_tensors``."""

    def __init__(self):
        self.launches: list[str] = []
        self.syncs: list[str] = []
        self.host_tensors: list[str] = []
        self._inside_kernel = 0
        self._mode = _Mode(self)

    def _take_emulated_launches(self) -> None:
        """The CUDA kernels the emulation ran since the last look, in order (``cuda:<kernel>``)."""
        module = sys.modules.get("swav_kernels_emulated")
        if module is not None:
            self.launches.extend(f"cuda:{name}" for name in module.emulated_launches())

    def record(self, func, args, kwargs) -> None:
        if self._inside_kernel:
            return
        self._take_emulated_launches()
        name = str(func.overloadpacket.__name__)
        if func in SYNCS:
            self.syncs.append(name)
        elif func in HOST_TENSORS:
            self.host_tensors.append(name)
        elif func in NO_LAUNCH or func.is_view or func is aten.detach.default:
            pass
        elif func in (aten._to_copy.default, aten.copy_.default) and _crosses_to_host(func, args, kwargs):
            self.syncs.append(f"{name} (device to host)")
        else:
            self.launches.append(name)

    @contextlib.contextmanager
    def _kernel(self, name):
        self.launches.append(f"triton:{name}")
        self._inside_kernel += 1
        try:
            yield
        finally:
            self._inside_kernel -= 1

    def __enter__(self):
        self._take_emulated_launches()
        self.launches.clear()  # launched before this block
        self._patched = []
        try:
            from triton.runtime.interpreter import InterpretedFunction
        except ImportError:  # no triton: the CUDA emulation's and ATen's launches are still counted
            self._mode.__enter__()
            return self
        from triton.runtime.jit import JITFunction

        from swav_kernels.triton import launcher

        work = self
        self._patched = [(InterpretedFunction, "run", InterpretedFunction.run), (JITFunction, "run", JITFunction.run),
                         (launcher, "hooks_installed", launcher.hooks_installed)]

        def counting(original):
            def counted_run(function, *args, **kwargs):
                if kwargs.get("warmup"):
                    return original(function, *args, **kwargs)
                with work._kernel(function.fn.__name__):
                    return original(function, *args, **kwargs)
            return counted_run

        InterpretedFunction.run = counting(InterpretedFunction.run)
        JITFunction.run = counting(JITFunction.run)
        # prepared calls take their kernel[grid] path, whose launches are the direct path's
        # (tests/test_null_driver.py holds them equal byte for byte), so that every launch is seen
        launcher.hooks_installed = lambda: True
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._take_emulated_launches()
        for owner, name, original in self._patched:
            setattr(owner, name, original)
        return self._mode.__exit__(*exc)


class _Mode(TorchDispatchMode):
    """Sees every op; runs our custom ops' Python bodies with itself active, so that what they
    launch is seen too (a mode is otherwise off while it handles an op)."""

    def __init__(self, work):
        super().__init__()
        self.work = work

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "swav_kernels" and not self.work._inside_kernel:
            from torch._library.custom_ops import OPDEFS

            with self:
                return OPDEFS[f"{func.namespace}::{func._opname}"]._init_fn(*args, **kwargs)
        self.work.record(func, args, kwargs)
        return func(*args, **kwargs)


def _crosses_to_host(func, args, kwargs) -> bool:
    kwargs = kwargs or {}
    if func is aten._to_copy.default:
        target = kwargs.get("device")
        return target is not None and torch.device(target).type == "cpu" and args[0].device.type != "cpu"
    destination, source = args[0], args[1]
    return destination.device.type == "cpu" and source.device.type != "cpu"
