"""What a compiled Triton kernel is made of, read from its binary and PTX without a GPU: registers,
stack and spills, shared memory, and the matrix instructions its products use.

- Registers and stack frame: ``cuobjdump --dump-resource-usage`` of the cubin Triton built (the binary a
  launch runs); spill stores and loads: ``ptxas -v`` run again on the kernel's PTX with the options Triton
  gave ptxas (Triton keeps no log of its own run). The two register counts are both reported, so a
  mismatch (a ptxas run unlike Triton's) shows.
- Shared memory: the compiled kernel's metadata (what the launch asks the driver for).
- Matrix instructions: ``wgmma.mma_async`` (Hopper warpgroup MMA) and ``mma.sync`` (warp MMA) in the
  PTX, their operand type (bf16, f16, tf32) and shapes; fp32 products split into 3×TF32 round each
  operand to TF32 with ``cvt.rna.tf32.f32`` first (Triton's ``input_precision="tf32x3"``).
"""
from __future__ import annotations

import functools
import inspect
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # bytes per block, the opt-in maximum
# shape, then the operand type after the accumulator's: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16,
# mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
_WGMMA = re.compile(r"\bwgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)\.(?:f32|f16)\.(\w+)\.")
_MMA = re.compile(r"\bmma\.sync\.aligned\.(m\d+n\d+k\d+)\.row\.col\.(?:f32|f16)\.(\w+)\.")


@dataclass(frozen=True)
class MatrixInstructions:
    """The tensor-core instructions in a kernel's PTX."""

    wgmma: int  # wgmma.mma_async instructions
    mma: int  # mma.sync instructions
    operands: tuple[str, ...]  # their operand types, sorted: ("bf16",), ("tf32",), ...
    shapes: tuple[str, ...]  # "wgmma m64n64k16", "mma m16n8k16", ... sorted
    tf32_rounding: bool  # cvt.rna.tf32.f32 present: fp32 operands split for 3×TF32

    @property
    def kind(self) -> str:
        """"wgmma", "mma", "wgmma+mma" (both in one kernel) or "-" (no tensor-core product)."""
        return "+".join(name for name, count in (("wgmma", self.wgmma), ("mma", self.mma)) if count) or "-"

    @property
    def precision(self) -> str:
        """"3xtf32" for split fp32 products, else the operand type(s) ("bf16", "tf32", …), "-" without any."""
        if not self.operands:
            return "-"
        if self.operands == ("tf32",) and self.tf32_rounding:
            return "3xtf32"
        return "+".join(self.operands)


def matrix_instructions(ptx: str) -> MatrixInstructions:
    """The tensor-core instructions of ``ptx``."""
    wgmma = _WGMMA.findall(ptx)
    mma = _MMA.findall(ptx)
    operands = tuple(sorted({kind for _, kind in wgmma + mma}))
    shapes = tuple(sorted({f"wgmma {s}" for s, _ in wgmma} | {f"mma {s}" for s, _ in mma}))
    return MatrixInstructions(len(wgmma), len(mma), operands, shapes, "cvt.rna.tf32.f32" in ptx)


@dataclass(frozen=True)
class Resources:
    """Per-thread resources of one compiled kernel."""

    registers: int  # of the cubin Triton built
    stack_bytes: int  # stack frame of the cubin (where spills go)
    spill_bytes: int  # spill stores + spill loads, ptxas -v
    ptxas_registers: int  # what the ptxas -v run reported (equal to ``registers`` when it ran as Triton's did)
    ptxas_command: tuple[str, ...] = field(default=())


def _tool(name: str) -> str:
    """Path of Triton's own ``ptxas`` or ``cuobjdump`` (bundled, or where TRITON_PTXAS_PATH… point)."""
    from triton import knobs

    tool = getattr(knobs.nvidia, name, None)
    path = getattr(tool, "path", None)
    if path:
        return path
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _ptxas_path(arch: int) -> str:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:
        return _tool("ptxas")
    return get_ptxas(arch).path


@functools.lru_cache(maxsize=None)
def _triton_passes_reg_alloc_level() -> bool:
    """Whether this Triton's ``make_cubin`` runs ptxas with ``--regAllocOptLevel=2`` (3.7 and later)."""
    from triton.backends.nvidia.compiler import CUDABackend

    try:
        return "--regAllocOptLevel=2" in inspect.getsource(CUDABackend.make_cubin)
    except (OSError, TypeError):
        return False


def ptxas_report(ptx: str, arch: int, fp_fusion: bool = True, extra_options: str | None = None
                 ) -> tuple[int, int, tuple[str, ...]]:
    """(registers, spill bytes = stores + loads, the command) of the kernel in ``ptx`` compiled for
    ``sm_<arch>`` (``sm_90a`` for 90) by the ptxas Triton uses, with Triton's options: line info, FP
    fusion as the kernel was compiled, ``extra_options`` (the kernel's ``ptx_options``)."""
    target = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
    options = ["-lineinfo", "-v"] + ([] if fp_fusion else ["--fmad=false"])
    if _triton_passes_reg_alloc_level():
        options.append("--regAllocOptLevel=2")
    options += extra_options.split() if extra_options else []
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "kernel.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        command = [_ptxas_path(arch), *options, f"--gpu-name={target}", path, "-o", os.devnull]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    registers, spills = parse_ptxas_log(done.stdout + done.stderr)
    shown = tuple(os.path.basename(c) if c == path or c == command[0] else c for c in command)
    return registers, spills, shown


def parse_ptxas_log(text: str) -> tuple[int, int]:
    """(registers, spill stores + spill loads in bytes) of the one kernel in a ``ptxas -v`` log."""
    registers = re.search(r"Used (\d+) registers", text)
    if registers is None:
        raise RuntimeError(f"no register count in the ptxas -v output: {text[-400:]}")
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", text))
    return int(registers.group(1)), spills


def cubin_resources(cubin: bytes) -> tuple[int, int]:
    """(registers, stack frame bytes) of the one kernel in ``cubin``, from ``cuobjdump -res-usage``."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "kernel.cubin")
        with open(path, "wb") as handle:
            handle.write(cubin)
        done = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", path], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cuobjdump failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    usage = re.search(r"REG:(\d+)\s+STACK:(\d+)", done.stdout)
    if usage is None:
        raise RuntimeError(f"no resource usage in the cuobjdump output: {done.stdout[-400:]}")
    return int(usage.group(1)), int(usage.group(2))


def resources(compiled, arch: int) -> Resources:
    """Registers, stack and spills of Triton's ``compiled`` kernel (a ``CompiledKernel`` for ``arch``)."""
    metadata = compiled.metadata
    registers, stack = cubin_resources(compiled.asm["cubin"])
    ptxas_registers, spills, command = ptxas_report(compiled.asm["ptx"], arch,
                                                    bool(getattr(metadata, "enable_fp_fusion", True)),
                                                    getattr(metadata, "ptx_options", None))
    return Resources(registers, stack, spills, ptxas_registers, command)
