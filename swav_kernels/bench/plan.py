"""``swav-bench --plan``: every launch of one forward + backward of the Triton backend as a GPU of a given
architecture and size would run it, read on a machine without one (DESIGN §5a).

In a process where Triton's launch path goes to a CUDA driver that does nothing (``null_driver``, as an
sm_90 with 132 SMs or an sm_80 with 108), one fwd+bwd of ``swav_loss`` runs on the Triton backend for a
shape (``shapes.NAMED_SHAPES``), dtype and path (fused: embeddings and prototypes; scores: given scores);
the plan it prepared (``swav_kernels.loss._PREPARED``: the launches, tiles and grids the host path runs)
is then read launch by launch, forward then backward: kernel, grid, programs and programs per SM, tiles
(the ``BLOCK_*`` constexprs), warps, stages; the compiled kernel's registers, stack, spills, shared memory
and tensor-core instructions (``compiled``); its FLOPs and bytes from the cost model below and its
roofline time against a datasheet's peaks (``hardware``). A kernel that fails to compile for the target
is reported with its error, and the other launches still are.

Cost model (one matmul pass over R rows = 2·R·K·D FLOPs; G = |A| assign crops, N = L + B Sinkhorn rows
per group, M = V·B loss rows, e = bytes per input element, 4 per float32 intermediate):

============  =====================================  ==================================================
kernel        matmul passes (fused path)             bytes (each tensor counted once: compulsory)
============  =====================================  ==================================================
column step   1 over G·N (scores recomputed)         rows G·N·D·e + C K·D·e (fused) or scores G·N·K·e;
                                                     row partials in R·G·N·8; column partials out S·G·K·8
row step      1 over G·N                             rows + C (or scores) as above; column partials in
                                                     S·G·K·8; row partials out R·G·N·8
codes         P over G·B (2P when it sweeps for its  batch rows G·B·D·e + C (or scores G·B·K·e);
              own row sums) + codes·C over G·B: 1    partials in; codes G·B·K·4, mass S·G·B·4 and
              (fp32) or 2 (16-bit, hi + lo)          projection S·G·B·D·4 out
loss forward  P + 1 over M (1 without the output)    z M·D·e + C; mass + projection in; lse M·4 and
                                                     output M·D·4 out; split partials out and back
backward      P + 1 over M (scores again, ∂C)        z, C, codes, mass + projection, lse, output in;
                                                     ∂z M·D·e and ∂C K·D·e out; ∂C partials 2·S·K·D·4
scores loss   none (memory-bound)                    scores M·K·e + codes G·B·K·4 in; lse and weight
                                                     2·M·4 out, a share of the loss per program
scores grad   none (memory-bound)                    scores M·K·e + codes + 2·M·4 in; ∂s M·K·e out
============  =====================================  ==================================================

P is the launch's ``width_splits``: the programs that share the width D of its (rows × D) accumulator,
each scoring the same rows again (``Tiles.block_out``; 1 where a program holds all of D).

Re-reads that the L2 cache may or may not serve (C by every row block, a code row by every crop that
predicts it) are not counted: bytes / time is an effective bandwidth. The roofline time of a launch is
max(FLOPs / matmul peak, bytes / HBM bandwidth) with the peak of the instructions it asks for: bf16
tensor cores for 16-bit inputs, TF32 for fp32 with TF32 allowed, TF32 / 3 for exact fp32 (3×TF32).
A kernel this table does not know is listed with its launch facts and no cost.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch

from .hardware import DevicePeaks, device_peaks
from .shapes import NAMED_SHAPES, Shape

PATHS = ("fused", "scores")
# architecture -> (the datasheet model of the roofline, its SM count)
ARCH_DEVICES = {90: ("H200 SXM", 132), 80: ("A100 80GB SXM", 108)}
# kernel function name -> family of the cost model
FAMILIES = {
    "_column_step_kernel": "column step", "_row_step_kernel": "row step", "_codes_kernel": "codes",
    "_loss_forward_kernel": "loss forward", "_backward_kernel": "backward",
    "_scores_loss_kernel": "scores loss", "_scores_grad_kernel": "scores grad",
}
F32 = 4  # bytes of a float32 intermediate


@dataclass(frozen=True)
class Cost:
    """Work of one launch: its matmul passes ``(what, rows)`` (2·rows·K·D FLOPs each) and the bytes
    it reads and writes."""

    passes: tuple[tuple[str, int], ...]
    flops: int
    bytes: int

    @property
    def rows(self) -> int | None:
        """Rows of its products (the ``(rows × D) @ (D × K)`` torch.mm it compares with); None without."""
        return self.passes[0][1] if self.passes else None


def launch_scalars(launch) -> dict:
    """The plain (non-buffer) arguments of a ``PreparedLaunch`` by parameter name: sizes, split counts."""
    import inspect

    from ..triton.launcher import Buffer

    # a launch holds every non-constexpr parameter in order and every constexpr by name
    names = [name for name in inspect.signature(launch.kernel.fn).parameters if name not in launch.constexprs]
    return {name: value for name, value in zip(names, launch.arguments)
            if type(value) is not Buffer and isinstance(value, (int, float))}


def launch_cost(kernel: str, constexprs: dict, grid: tuple, scalars: dict, shape: Shape,
                dtype: torch.dtype) -> Cost | None:
    """The cost model of the module docstring for one launch of ``kernel`` (function name) with its
    ``constexprs``, ``grid`` and scalar arguments (``launch_scalars``: split counts), at ``shape`` in
    ``dtype``; None for a kernel the model does not know."""
    family = FAMILIES.get(kernel)
    if family is None:
        return None
    e = torch.empty((), dtype=dtype).element_size()
    groups, batch, k, d = len(shape.crops_for_assign), shape.batch, shape.prototypes, shape.dim
    n, m = shape.sinkhorn_rows, shape.rows
    recompute = bool(constexprs.get("RECOMPUTE", True))
    prototypes = k * d * e
    parts = int(scalars.get("width_splits", 1))  # programs sharing one accumulator's width, each scoring again
    passes: list[tuple[str, int]] = []
    if family in ("column step", "row step"):
        read = groups * n * d * e + prototypes if recompute else groups * n * k * e
        if recompute:
            passes.append(("scores", groups * n))
        if family == "column step":
            partials_in = groups * n * 2 * F32 * int(scalars.get("R", 1)) if constexprs.get("HAS_ROW_POTENTIAL") else 0
            partials_out = grid[2] * groups * k * 2 * F32
        else:
            partials_in = int(scalars.get("S", 1)) * groups * k * 2 * F32
            partials_out = grid[2] * groups * n * 2 * F32
        moved = read + partials_in + partials_out
    elif family == "codes":
        own_sweep = bool(constexprs.get("NORMALIZE")) and not constexprs.get("ROW_LSE")
        if recompute:
            passes += [("scores", groups * batch)] * ((2 if own_sweep else 1) * parts)
            passes += [("codes·C", groups * batch)] * (1 if dtype == torch.float32 else 2)
        read = groups * batch * d * e + prototypes if recompute else groups * batch * k * e
        read += int(scalars.get("S", 1)) * groups * k * 2 * F32
        if constexprs.get("ROW_LSE"):
            read += int(scalars.get("R", 1)) * groups * n * 2 * F32
        splits = grid[2] // parts
        written = groups * batch * k * F32 + splits * groups * batch * F32
        if recompute:
            written += splits * groups * batch * d * F32
        moved = read + written
    elif family == "loss forward":
        output = bool(constexprs.get("WITH_OUTPUT", True))
        passes += [("scores", m)] * parts + ([("softmax·C", m)] if output else [])
        code_splits = int(scalars.get("code_splits", 1))
        moved = m * d * e + prototypes + code_splits * groups * batch * (1 + d) * F32 + m * F32
        moved += m * d * F32 if output else 0
        splits = grid[1] // parts
        if splits > 1:  # partial (max, sum[, output]) per range, written and read back by the merging program
            moved += 2 * splits * m * (2 + (d if output else 0)) * F32
    elif family == "backward":
        passes += [("scores", m)] * parts + [("∂C = gradientᵀ·Z", m)]
        code_splits = int(scalars.get("code_splits", 1))
        moved = 2 * (m * d * e + prototypes)  # z and C in, ∂z and ∂C out
        moved += groups * batch * k * F32 + code_splits * groups * batch * (1 + d) * F32 + m * F32 + m * d * F32
        splits = int(scalars.get("splits", 1))
        if splits > 1:
            moved += 2 * splits * k * d * F32
    elif family == "scores loss":  # lse and weight out, one share of the loss per program (added by the last)
        moved = m * k * e + groups * batch * k * F32 + 2 * m * F32 + 2 * grid[0] * F32
    else:  # scores grad
        moved = 2 * m * k * e + groups * batch * k * F32 + 2 * m * F32
    flops = sum(2 * rows * k * d for _, rows in passes)
    return Cost(tuple(passes), flops, moved)


def matmul_peak_tflops(peaks: DevicePeaks, dtype: torch.dtype, allow_tf32: bool) -> float:
    """The tensor-core rate the kernels' products can reach: bf16 (16-bit inputs), TF32 (fp32 with TF32
    allowed), TF32 / 3 (exact fp32: three TF32 products each)."""
    if dtype in (torch.bfloat16, torch.float16):
        return peaks.bf16_tflops
    return peaks.tf32_tflops if allow_tf32 else peaks.tf32_tflops / 3


def roofline_us(cost: Cost, matmul_tflops: float, hbm_tbps: float) -> tuple[float, str]:
    """(µs, "matmul" or "memory"): max(FLOPs / matmul peak, bytes / HBM bandwidth) and which bounds it."""
    compute = cost.flops / (matmul_tflops * 1e12) * 1e6
    memory = cost.bytes / (hbm_tbps * 1e12) * 1e6
    return (compute, "matmul") if compute >= memory else (memory, "memory")


@dataclass
class LaunchReport:
    """One launch of a plan as compiled for the target."""

    index: int
    phase: str  # "forward" or "backward"
    kernel: str
    grid: tuple[int, int, int]
    programs: int
    programs_per_sm: float
    tiles: dict  # the BLOCK_* constexprs
    warps: int
    stages: int | None
    constexprs: dict
    compiled: bool
    error: str | None = None  # why it did not compile
    registers: int | None = None
    ptxas_registers: int | None = None
    stack_bytes: int | None = None
    spill_bytes: int | None = None
    shared_bytes: int | None = None
    shared_limit: int | None = None
    mma: str | None = None  # "wgmma", "mma", "wgmma+mma" or "-"
    mma_precision: str | None = None  # from the PTX: "bf16", "tf32", "3xtf32", "-"
    mma_shapes: list = field(default_factory=list)
    precision: str | None = None  # the PRECISION constexpr (what tl.dot was asked for)
    family: str | None = None
    matmul_passes: list = field(default_factory=list)
    flops: int | None = None
    bytes: int | None = None
    roofline_us: float | None = None
    bound: str | None = None


@dataclass
class PlanReport:
    """Every launch of one fwd+bwd plan, with the call's totals."""

    shape: str
    batch: int
    nmb_crops: list
    prototypes: int
    dim: int
    queue: int
    crops_for_assign: list
    path: str
    dtype: str
    allow_tf32: bool
    arch: int
    sms: int
    device_model: str
    matmul_tflops: float
    hbm_tbps: float
    launches: list = field(default_factory=list)
    error: str | None = None  # no plan was made
    total_flops: int = 0
    total_bytes: int = 0
    total_roofline_us: float = 0.0
    complete_costs: bool = True  # every launch has a cost

    def under_one_program_per_sm(self) -> list:
        """Launches that do work (a non-empty grid) with fewer programs than SMs."""
        return [launch for launch in self.launches if 0 < launch.programs < self.sms]


def _short(error: BaseException) -> str:
    """First and last lines of an error (a Triton CompilationError holds the kernel's source between)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1].strip()}"
    return f"{type(error).__name__}: {text}"[:400]


@contextlib.contextmanager
def _compile_errors():
    """While active, a launch whose kernel fails to compile records its error (``{id(launch): text}``)
    instead of raising, so that every other launch of the call is still compiled and read."""
    from ..triton.launcher import PreparedLaunch

    errors: dict[int, str] = {}
    original = PreparedLaunch.run_tensors

    def run_tensors(self, buffers):
        try:
            original(self, buffers)
        except Exception as error:  # a kernel that does not compile for this target
            errors.setdefault(id(self), _short(error))

    PreparedLaunch.run_tensors = run_tensors
    try:
        yield errors
    finally:
        PreparedLaunch.run_tensors = original


@contextlib.contextmanager
def _tf32(allowed: bool):
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _inputs(shape: Shape, path: str, dtype: torch.dtype):
    """Uninitialised inputs of ``path`` at ``shape`` (the null driver runs no kernel, so their values never
    matter; nothing is computed or touched on the CPU, even at large-k): (leaves, keyword arguments)."""
    groups = len(shape.crops_for_assign)
    width = shape.prototypes if path == "scores" else shape.dim
    queue = torch.empty(groups, shape.queue, width, dtype=dtype) if shape.queue else None
    if path == "scores":
        return (torch.empty(shape.rows, shape.prototypes, dtype=dtype, requires_grad=True),), dict(queue_scores=queue)
    return (torch.empty(shape.rows, shape.dim, dtype=dtype, requires_grad=True),
            torch.empty(shape.prototypes, shape.dim, dtype=dtype, requires_grad=True)), dict(queue=queue)


def _compiled_facts(compiled, arch: int, cache: dict) -> dict:
    """Registers, stack, spills, shared memory and tensor-core instructions of a compiled kernel (once per
    binary: a plan launches the same one several times)."""
    from .compiled import SHARED_MEMORY_LIMIT, matrix_instructions, resources

    key = getattr(compiled, "hash", None) or id(compiled)
    if key not in cache:
        used = resources(compiled, arch)
        matrix = matrix_instructions(compiled.asm["ptx"])
        cache[key] = dict(registers=used.registers, ptxas_registers=used.ptxas_registers,
                          stack_bytes=used.stack_bytes, spill_bytes=used.spill_bytes,
                          shared_bytes=int(compiled.metadata.shared), shared_limit=SHARED_MEMORY_LIMIT.get(arch),
                          mma=matrix.kind, mma_precision=matrix.precision, mma_shapes=list(matrix.shapes))
    return cache[key]


def collect(shape: Shape, path: str, dtype: torch.dtype, allow_tf32: bool, arch: int, sms: int,
            cache: dict | None = None) -> PlanReport:
    """The plan report of one fwd+bwd (the null driver must be active as ``arch`` with ``sms`` SMs)."""
    from .. import loss as loss_module

    model = ARCH_DEVICES.get(arch, ARCH_DEVICES[90])[0]
    peaks = device_peaks(model)
    report = PlanReport(shape.name, shape.batch, list(shape.nmb_crops), shape.prototypes, shape.dim, shape.queue,
                        list(shape.crops_for_assign), path, str(dtype).removeprefix("torch."),
                        bool(allow_tf32 and dtype == torch.float32), arch, sms, peaks.model,
                        matmul_peak_tflops(peaks, dtype, allow_tf32), peaks.hbm_tbps)
    cache = {} if cache is None else cache
    with _tf32(allow_tf32), _compile_errors() as errors:
        loss_module._PREPARED.clear()
        leaves, extra = _inputs(shape, path, dtype)
        try:
            loss = loss_module.swav_loss(*leaves, nmb_crops=list(shape.nmb_crops),
                                         crops_for_assign=shape.crops_for_assign, backend="triton", **extra)
            loss.backward()
        except Exception as error:  # the call itself failed (not a kernel's compile: those are recorded)
            report.error = _short(error)
        plans = list(loss_module._PREPARED.values())
        loss_module._PREPARED.clear()
    if len(plans) != 1 or not hasattr(plans[0], "forward_launches"):
        report.error = report.error or f"expected one Triton plan after the call, found {len(plans)}"
        return report
    plan = plans[0]
    launches = [("forward", launch) for launch in plan.forward_launches]
    launches += [("backward", launch) for launch in plan.backward_launches]
    for index, (phase, launch) in enumerate(launches):
        report.launches.append(_launch_report(index, phase, launch, shape, dtype, report, errors, cache))
    report.complete_costs = all(launch.flops is not None for launch in report.launches)
    report.total_flops = sum(launch.flops or 0 for launch in report.launches)
    report.total_bytes = sum(launch.bytes or 0 for launch in report.launches)
    report.total_roofline_us = sum(launch.roofline_us or 0.0 for launch in report.launches)
    return report


def _launch_report(index: int, phase: str, launch, shape: Shape, dtype: torch.dtype, report: PlanReport,
                   errors: dict, cache: dict) -> LaunchReport:
    constexprs = {k: v for k, v in launch.constexprs.items()}
    grid = tuple(launch.grid)
    programs = grid[0] * grid[1] * grid[2]
    compiled = launch.compiled
    entry = LaunchReport(
        index=index, phase=phase, kernel=launch.name, grid=grid, programs=programs,
        programs_per_sm=programs / report.sms,
        tiles={k: v for k, v in constexprs.items() if k.startswith("BLOCK")},
        warps=int(compiled.metadata.num_warps if compiled is not None else constexprs.get("num_warps", 4)),
        stages=(int(compiled.metadata.num_stages) if compiled is not None else constexprs.get("num_stages")),
        constexprs={k: v for k, v in constexprs.items() if not k.startswith("BLOCK") and not k.startswith("num_")},
        compiled=compiled is not None, precision=constexprs.get("PRECISION"), family=FAMILIES.get(launch.name))
    if compiled is None:
        entry.error = errors.get(id(launch), "not compiled (its grid is empty)" if programs == 0 else
                                 "not compiled: the call stopped before this launch")
    else:
        try:
            for key, value in _compiled_facts(compiled, report.arch, cache).items():
                setattr(entry, key, value)
        except Exception as error:  # ptxas or cuobjdump missing or failing
            entry.error = f"compiled, but not read: {_short(error)}"
    cost = launch_cost(launch.name, constexprs, grid, launch_scalars(launch), shape, dtype)
    if cost is not None:
        entry.matmul_passes = [list(p) for p in cost.passes]
        entry.flops, entry.bytes = cost.flops, cost.bytes
        entry.roofline_us, entry.bound = roofline_us(cost, report.matmul_tflops, report.hbm_tbps)
    return entry


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = ("#", "phase", "kernel", "grid", "progs", "/SM", "tiles", "warps", "stages", "regs", "spill",
           "shared KiB", "mma", "mma prec", "GFLOP", "MB", "roofline µs", "bound")


def _row(launch: LaunchReport) -> tuple[str, ...]:
    tiles = " ".join(f"{k.removeprefix('BLOCK_')}{v}" for k, v in launch.tiles.items())
    phase = {"forward": "fwd", "backward": "bwd"}.get(launch.phase, launch.phase)
    return (str(launch.index), phase, launch.kernel.strip("_").removesuffix("_kernel"),
            "×".join(str(g) for g in launch.grid), str(launch.programs), f"{launch.programs_per_sm:.2f}", tiles,
            str(launch.warps), _fmt(launch.stages, "d"), _fmt(launch.registers, "d"), _fmt(launch.spill_bytes, "d"),
            _fmt(None if launch.shared_bytes is None else launch.shared_bytes / 1024, ".1f"), launch.mma or "-",
            launch.mma_precision or "-", _fmt(None if launch.flops is None else launch.flops / 1e9, ".2f"),
            _fmt(None if launch.bytes is None else launch.bytes / 1e6, ".2f"), _fmt(launch.roofline_us, ".1f"),
            launch.bound or "-")


def format_report(report: PlanReport) -> str:
    """The plan as a table: one row per launch, the totals and what fails DESIGN §5a's kernel rules."""
    head = (f"plan: {report.shape} (B={report.batch}, crops {report.nmb_crops}, K={report.prototypes}, "
            f"D={report.dim}, queue {report.queue}), {report.dtype}"
            + (" (TF32 allowed)" if report.allow_tf32 else " (exact: 3xTF32)" if report.dtype == "float32" else "")
            + f", {report.path} path; sm_{report.arch} with {report.sms} SMs; roofline on {report.device_model} "
              f"datasheet: matmul {report.matmul_tflops:g} TFLOP/s, HBM {report.hbm_tbps:g} TB/s")
    if report.error and not report.launches:
        return f"{head}\n  no plan: {report.error}"
    rows = [COLUMNS] + [_row(launch) for launch in report.launches]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [head]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(w) if i in (0, 3, 4, 5, 7, 8, 9, 10, 11, 14, 15, 16) else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("-" * len(lines[-1]))
    lines.append(f"total: {len(report.launches)} launches, {report.total_flops / 1e9:.2f} GFLOP, "
                 f"{report.total_bytes / 1e6:.2f} MB, roofline {report.total_roofline_us:.1f} µs (launches in "
                 "sequence)" + ("" if report.complete_costs else "; some kernels have no cost model (-)"))
    lines += [f"  {note}" for note in findings(report)]
    return "\n".join(lines)


def findings(report: PlanReport) -> list[str]:
    """What breaks DESIGN §5a's kernel rules in this plan (``kernel_rules``), one line each; a known
    shortfall (``triton.tiles.KNOWN_SHORTFALLS``) is marked so, with its reason."""
    from .kernel_rules import breaches

    notes = []
    if report.error:
        notes.append(f"the call raised: {report.error}")
    for launch in report.launches:
        where = f"#{launch.index} {launch.kernel}"
        if launch.error:
            notes.append(f"{where}: {launch.error}")
        if launch.shared_bytes is not None and launch.shared_limit and launch.shared_bytes > launch.shared_limit:
            notes.append(f"{where}: {launch.shared_bytes} bytes of shared memory, over {launch.shared_limit}")
    for breach in breaches(dataclasses.asdict(report)):
        known = f" (known: {breach.known})" if breach.known else ""
        notes.append(f"#{breach.index} {breach.kernel}: {breach.rule}: {breach.detail}{known}")
    return notes


def to_json(reports: list[PlanReport]) -> str:
    return json.dumps([dataclasses.asdict(r) for r in reports], indent=1)


def main(shapes: list[str], dtypes: list[str], paths: list[str], arch: int, sms: int | None, allow_tf32: bool,
         as_json: bool) -> int:
    """Print the plan reports (``swav-bench --plan``) of every shape × dtype × path; 0 once printed."""
    from . import null_driver

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("--plan compiles the kernels for a GPU through Triton's launch path: unset "
                           "TRITON_INTERPRET")
    sms = ARCH_DEVICES[arch][1] if sms is None else sms
    null_driver.activate((arch // 10, arch % 10), sms)
    cache: dict = {}
    reports = [collect(NAMED_SHAPES[name], path, getattr(torch, dtype), allow_tf32, arch, sms, cache)
               for name in shapes for dtype in dtypes for path in paths]
    print(to_json(reports) if as_json else "\n\n".join(format_report(r) for r in reports))
    return 0
