"""Triton's real launch path on a machine without a GPU, through a CUDA driver that does nothing.

``activate()`` builds ``null_libcuda.c`` (beside this file) into a ``libcuda.so.1`` with gcc, makes
Triton's active driver use it as one device of the given architecture and multiprocessor count, and
tells the Triton backend (``swav_kernels.triton.launch``) to treat CPU tensors as that device's.
Everything above the driver is real: ``JITFunction.run`` (binding, specialisation, its cache), the
compile for sm_90 or sm_80 (ptxas), the compiled kernel's C launcher, and the library's own host path.
No kernel runs, so no result means anything: this is for host time per call, launch counts and the
launches' grids and arguments (``launches()``), never for values.

It must be activated before the first Triton kernel is launched or compiled, in a process where
``TRITON_INTERPRET`` is not ``1`` (the interpreter replaces the kernels when they are defined).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from typing import NamedTuple

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "null_libcuda.c")
_LIBRARY = None


class Launch(NamedTuple):
    """One launch as the driver saw it; ``parameters``: the bytes of its kernel parameters, in order,
    for kernels named to ``expect_parameters`` (else empty)."""

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_bytes: int
    parameters: bytes


class _Record(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_bytes", ctypes.c_uint),
                ("name", ctypes.c_char * 96), ("param_bytes", ctypes.c_uint), ("params", ctypes.c_ubyte * 512)]


_SIZES = {"i1": 1, "u1": 1, "i8": 1, "u8": 1, "i16": 2, "u16": 2, "fp16": 2, "bf16": 2, "i32": 4, "u32": 4,
          "fp32": 4, "f32": 4, "i64": 8, "u64": 8, "fp64": 8, "f64": 8}


def expect_parameters(compiled) -> None:
    """Record the parameter bytes of every later launch of Triton's ``compiled`` kernel: its
    non-constexpr arguments as compiled (pointers 8 bytes, scalars by type), then the two scratch
    pointers Triton's launchers append."""
    sizes = [8 if kind.startswith("*") else _SIZES[kind]
             for kind in compiled.src.signature.values() if kind != "constexpr"] + [8, 8]
    _LIBRARY.null_expect_parameters(compiled.function, len(sizes), bytes(sizes))


def _build(directory: str) -> str:
    library = os.path.join(directory, "libcuda.so.1")
    if not os.path.exists(library) or os.path.getmtime(library) < os.path.getmtime(_SOURCE):
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise RuntimeError("the null CUDA driver needs a C compiler (gcc or cc) on PATH")
        os.makedirs(directory, exist_ok=True)
        partial = library + f".{os.getpid()}"
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", partial, _SOURCE],
                       check=True)
        os.replace(partial, library)  # atomic: concurrent builders never see half a library
        link = os.path.join(directory, "libcuda.so")
        if not os.path.lexists(link):
            os.symlink("libcuda.so.1", link)
    return library


def activate(capability: tuple[int, int] = (9, 0), multiprocessors: int = 132) -> None:
    """Make Triton launch through the null driver, as a device of ``capability`` with
    ``multiprocessors`` SMs (default: an H100/H200, sm_90 with 132), and let the Triton backend
    take CPU tensors as that device's. Idempotent for the same device."""
    global _LIBRARY
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("the null driver needs TRITON_INTERPRET unset: the interpreter replaces Triton's "
                           "launch path when the kernels are defined")
    from ..triton import launch

    if _LIBRARY is None:
        directory = os.environ.get("SWAV_NULL_CUDA_DIR",
                                   os.path.join(tempfile.gettempdir(), f"swav-null-cuda-{os.getuid()}"))
        library = _build(directory)
        os.environ["TRITON_LIBCUDA_PATH"] = directory
        # cubins built for the null device stay apart from a real device's cache
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(directory, "triton-cache"))
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)  # Triton's later dlopen("libcuda.so.1") finds this one
        _LIBRARY = ctypes.CDLL(library)
        _LIBRARY.null_launch_count.restype = ctypes.c_long
        _LIBRARY.null_launch_record.restype = ctypes.POINTER(_Record)
        _LIBRARY.null_launch_record.argtypes = [ctypes.c_long]
        _LIBRARY.null_expect_parameters.argtypes = [ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        _install_triton_driver(capability)
    _LIBRARY.null_set_device(capability[0], capability[1], multiprocessors)
    _DEVICE[0] = tuple(capability)
    launch.use_null_device(launch.NullDevice(capability=10 * capability[0] + capability[1],
                                             multiprocessors=multiprocessors))


_DEVICE = [None]  # (major, minor) of the device the driver reports


def _install_triton_driver(capability: tuple[int, int]) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.driver import CudaDriver

    class NullCudaDriver(CudaDriver):
        """Triton's CUDA driver over the null libcuda: device 0, stream 0."""

        def __init__(self):
            super().__init__()  # builds Triton's driver.c against the null libcuda
            self.get_current_device = lambda: 0
            self.get_current_stream = lambda device=None: 0
            self.get_device_capability = lambda device=0: _DEVICE[0]

        def get_current_target(self):
            major, minor = _DEVICE[0]
            return GPUTarget("cuda", 10 * major + minor, 32)

        @staticmethod
        def is_active():
            return True

    triton.runtime.driver.set_active(NullCudaDriver())


def launch_count() -> int:
    """Launches that reached the driver since the process started."""
    return 0 if _LIBRARY is None else int(_LIBRARY.null_launch_count())


def launches(since: int = 0) -> list[Launch]:
    """The launches with index ``since`` … ``launch_count() − 1`` (the last 4096 at most)."""
    found = []
    for index in range(since, launch_count()):
        record = _LIBRARY.null_launch_record(index)
        if record:
            r = record.contents
            found.append(Launch(r.name.decode(), tuple(r.grid), tuple(r.block), int(r.shared_bytes),
                                bytes(r.params[:r.param_bytes])))
    return found
