"""Compile every Triton kernel, with the tiles ``swav_kernels/triton/tiles.py`` picks for the
DESIGN.md §5 shapes, to GPU binaries for sm_80 and sm_90, without a GPU; run as a script.

For each variant it checks what the interpreter cannot: the kernel compiles, its shared memory
fits the target, ptxas reports no register spills, and the matmul kernels run their products on
tensor cores (``wgmma`` or ``mma`` in the PTX, the tf32 form for fp32 inputs; no fp32 FFMA loop
stands in for a tl.dot). Must run without TRITON_INTERPRET (the interpreter replaces
@triton.jit functions); tests/test_triton_compile.py starts it that way. Prints one line per
variant, exits non-zero if any fails. ``--list`` prints the variants only.
"""
import os
import re
import subprocess
import sys
import tempfile
import traceback

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from swav_kernels.triton import (embeddings_grad, embeddings_loss, queue_shift, scores_loss,  # noqa: E402
                                 sinkhorn_codes, sinkhorn_column, sinkhorn_row)
from swav_kernels.triton import tiles as T  # noqa: E402

POINTER = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # per block, opt-in maximum (bytes)
SHAPES = {  # name: (Sinkhorn rows per group N, loss rows M, prototypes K, width D, groups)
    "swav-1gpu": (3840 + 256, 8 * 256, 3000, 128, 2),
    "large-k": (1024, 10 * 1024, 65536, 256, 2),
}
H100 = torch.device("cuda", 0)


class FakeDevice:
    """The tile rules ask how many programs fill the device: answer for a 132-SM GPU."""

    def __enter__(self):
        from swav_kernels.triton import launch

        self.original = launch.target_programs
        rule = lambda device: 264  # noqa: E731
        launch.target_programs = rule
        T.target_programs = rule

    def __exit__(self, *exc):
        from swav_kernels.triton import launch

        launch.target_programs = self.original
        T.target_programs = self.original


def ptxas_report(ptx: str, arch: int) -> tuple[int, int]:
    """(registers, spill bytes) of the kernel in ``ptx`` from ptxas -v: Triton's bundled ptxas
    binaries, newest first (triton 3.9 emits PTX 9.4, which only its ptxas-blackwell reads)."""
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    candidates = [os.path.join(folder, name) for name in ("ptxas-blackwell", "ptxas")]
    errors = []
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "kernel.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        target = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
        for ptxas in (c for c in candidates if os.path.exists(c)):
            result = subprocess.run([ptxas, "-v", f"--gpu-name={target}", path, "-o", os.devnull],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                break
            errors.append(f"{os.path.basename(ptxas)}: {result.stderr.strip()[:200]}")
        else:
            raise RuntimeError("no bundled ptxas accepts this PTX: " + "; ".join(errors))
    text = result.stdout + result.stderr
    registers = int(re.search(r"Used (\d+) registers", text).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", text))
    return registers, spills


def compile_kernel(kernel, arch, signature, constexprs, warps, stages, matmul=None, known_spills=None):
    """Compile; return a one-line summary. ``matmul``: the dtype of its tl.dot operands, or None.
    ``known_spills``: the (arch, kernel, operands, width) cell, whose spills are reported, not
    failed, when swav_kernels/triton/tiles.py lists it in KNOWN_SPILLS."""
    full = {**signature, **{name: "constexpr" for name in constexprs}}
    source = ASTSource(fn=kernel, signature=full, constexprs=constexprs)
    options = dict(num_warps=warps, num_stages=stages)
    binary = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    if not binary.asm.get("cubin"):
        raise RuntimeError("no cubin produced")
    shared = binary.metadata.shared
    if shared > SHARED_MEMORY_LIMIT[arch]:
        raise RuntimeError(f"needs {shared} bytes of shared memory (limit {SHARED_MEMORY_LIMIT[arch]})")
    ptx = binary.asm["ptx"]
    registers, spills = ptxas_report(ptx, arch)
    if spills and (known_spills is None or tuple(known_spills) not in T.KNOWN_SPILLS):
        raise RuntimeError(f"{spills} bytes of register spills ({registers} registers)")
    tensor_cores = ""
    if matmul is not None:
        wgmma = len(re.findall(r"\bwgmma\.mma_async", ptx))
        mma = len(re.findall(r"\bmma\.sync\.aligned", ptx))
        if not (wgmma or mma):
            raise RuntimeError("no tensor-core instruction (wgmma/mma) in the PTX of a matmul kernel")
        operand = {torch.float32: "tf32", torch.float16: "f16", torch.bfloat16: "bf16"}[matmul]
        if not re.search(rf"\b(?:wgmma\.mma_async|mma\.sync\.aligned)\S*\.{operand}\b", ptx):
            raise RuntimeError(f"the tensor-core instructions do not take {operand} operands")
        tensor_cores = f", {'wgmma' if wgmma else 'mma'} ×{wgmma or mma} ({operand})"
    spill_note = f"{spills} B spilled (known: tiles.KNOWN_SPILLS)" if spills else "0 spills"
    return f"{shared} B shared, {registers} registers, {spill_note}{tensor_cores}"


def _rows_signature(dtype):
    p = POINTER[dtype]
    return dict(main_ptr=p, queue_ptr=p, c_ptr=p, N="i32", L="i32", B="i32", K="i32", D="i32", crops_packed="i64")


CONFIGS = {  # shape: (arch, dtype, dot precision) triples; every kernel is compiled for each
    "swav-1gpu": [(90, torch.bfloat16, "tf32"), (80, torch.bfloat16, "tf32"), (90, torch.float16, "tf32"),
                  (90, torch.float32, "tf32"), (80, torch.float32, "tf32x3")],
    "large-k": [(90, torch.bfloat16, "tf32"), (80, torch.bfloat16, "tf32"), (90, torch.float32, "tf32x3"),
                (90, torch.float32, "tf32")],
}


def variants():
    """(name, thunk) pairs covering each kernel, each tile rule's outcome at the §5 shapes, each
    dtype and dot precision, on both architectures."""
    with FakeDevice():
        planned = []
        for shape, (n, m, k, d, groups) in SHAPES.items():
            for arch, dtype, precision in CONFIGS[shape]:
                sink = T.sinkhorn_tiles("row", True, d, dtype, precision, groups * n, k, H100, arch)
                codes = T.sinkhorn_tiles("codes", True, d, dtype, precision, groups * n, k, H100, arch)
                column = T.sinkhorn_tiles("column", True, d, dtype, precision, groups * n, k, H100, arch)
                loss = T.matmul_tiles("forward", d, dtype, precision, m, H100, arch)
                grad = T.matmul_tiles("backward", d, dtype, precision, k, H100, arch)
                planned.append((shape, arch, dtype, precision, sink, codes, column, loss, grad))
    for shape, arch, dtype, precision, sink, codes, column, loss, grad in planned:
        tag = f"sm{arch} {shape} {str(dtype)[6:]} {precision}"
        rows_sig = _rows_signature(dtype)
        f32 = "*fp32"
        yield f"column_step {tag} {column}", lambda column=column, arch=arch, dtype=dtype, precision=precision, \
            rows_sig=rows_sig: compile_kernel(
                sinkhorn_column._column_step_kernel, arch,
                {**rows_sig, "b_ptr": f32, "max_ptr": f32, "sum_ptr": f32, "scale_log2": "fp32",
                 "rows_per_split": "i32"},
                dict(HAS_ROW_POTENTIAL=True, RECOMPUTE=True, PRECISION=precision, BLOCK_N=column.block_rows,
                     BLOCK_K=column.block_k, BLOCK_D=column.block_d), column.warps, column.stages, dtype)
        yield f"row_step {tag} {sink}", lambda sink=sink, arch=arch, dtype=dtype, precision=precision, \
            rows_sig=rows_sig: compile_kernel(
                sinkhorn_row._row_step_kernel, arch,
                {**rows_sig, "max_ptr": f32, "sum_ptr": f32, "S": "i32", "b_ptr": f32, "scale_log2": "fp32",
                 "log2_prototypes": "fp32"},
                dict(RECOMPUTE=True, PRECISION=precision, BLOCK_N=sink.block_rows, BLOCK_K=sink.block_k,
                     BLOCK_D=sink.block_d), sink.warps, sink.stages, dtype)
        yield f"codes {tag} {codes}", lambda sink=codes, arch=arch, dtype=dtype, precision=precision, \
            rows_sig=rows_sig: compile_kernel(
                sinkhorn_codes._codes_kernel, arch,
                {**rows_sig, "max_ptr": f32, "sum_ptr": f32, "S": "i32", "codes_ptr": f32, "mass_ptr": f32,
                 "projected_ptr": f32, "scale_log2": "fp32", "log2_prototypes": "fp32"},
                dict(NORMALIZE=True, RECOMPUTE=True, PRECISION=precision, BLOCK_N=sink.block_rows,
                     BLOCK_K=sink.block_k, BLOCK_D=sink.block_d), sink.warps, sink.stages, dtype,
                known_spills=(arch, "codes", T.operands(dtype, precision), T.width(sink.block_d)))
        p = POINTER[dtype]
        loss_sig = dict(mass_ptr=f32, projected_ptr=f32, B="i32", n_assign="i32", crops_packed="i64")
        yield f"loss_forward {tag} {loss}", lambda loss=loss, arch=arch, dtype=dtype, precision=precision, \
            p=p, loss_sig=loss_sig: compile_kernel(
                embeddings_loss._loss_forward_kernel, arch,
                dict(z_ptr=p, c_ptr=p, M="i32", K="i32", D="i32", max_ptr=f32, sum_ptr=f32, acc_ptr=f32,
                     lse_ptr=f32, out_ptr=f32, block_loss_ptr=f32, **loss_sig, scale_log2="fp32", inv_tau="fp32",
                     inv_denom="fp32", k_per_split="i32"),
                dict(WITH_OUTPUT=True, FINAL=True, PRECISION=precision, BLOCK_M=loss.block_rows,
                     BLOCK_K=loss.block_k, BLOCK_D=loss.block_d), loss.warps, loss.stages, dtype,
                known_spills=(arch, "forward", T.operands(dtype, precision), T.width(loss.block_d)))
        yield f"backward {tag} {grad}", lambda loss=grad, arch=arch, dtype=dtype, precision=precision, \
            p=p: compile_kernel(
                embeddings_grad._backward_kernel, arch,
                dict(z_ptr=p, c_ptr=p, M="i32", K="i32", D="i32", codes_ptr=f32, mass_ptr=f32, projected_ptr=f32,
                     B="i32", n_assign="i32", crops_packed="i64", lse_ptr=f32, out_ptr=f32, grad_ptr=f32,
                     grad_z_ptr=p, grad_c_ptr=p, partial_ptr=f32, scale_log2="fp32", coef_scale="fp32",
                     rows_per_split="i32", prototype_programs="i32"),
                dict(FINAL=True, PRECISION=precision, BLOCK_M=loss.block_rows, BLOCK_K=loss.block_k,
                     BLOCK_D=loss.block_d), loss.warps, loss.stages, dtype,
                known_spills=(arch, "backward", T.operands(dtype, precision), T.width(loss.block_d)))
    # memory-bound kernels: streaming tiles, one dtype per architecture
    for arch, dtype in [(80, torch.float32), (90, torch.bfloat16)]:
        p = POINTER[dtype]
        f32 = "*fp32"
        rows_sig = _rows_signature(dtype)
        row_tiles = T.sinkhorn_tiles("row", False, 1, dtype, "tf32", 8192, 3000, H100, arch)
        col_tiles = T.sinkhorn_tiles("column", False, 1, dtype, "tf32", 8192, 3000, H100, arch)
        tag = f"sm{arch} {str(dtype)[6:]} stored scores"
        yield f"column_step {tag}", lambda arch=arch, rows_sig=rows_sig, t=col_tiles: compile_kernel(
            sinkhorn_column._column_step_kernel, arch,
            {**rows_sig, "b_ptr": f32, "max_ptr": f32, "sum_ptr": f32, "scale_log2": "fp32", "rows_per_split": "i32"},
            dict(HAS_ROW_POTENTIAL=True, RECOMPUTE=False, PRECISION="tf32", BLOCK_N=t.block_rows,
                 BLOCK_K=t.block_k, BLOCK_D=t.block_d), t.warps, t.stages)
        yield f"row_step {tag}", lambda arch=arch, rows_sig=rows_sig, t=row_tiles: compile_kernel(
            sinkhorn_row._row_step_kernel, arch,
            {**rows_sig, "max_ptr": f32, "sum_ptr": f32, "S": "i32", "b_ptr": f32, "scale_log2": "fp32",
             "log2_prototypes": "fp32"},
            dict(RECOMPUTE=False, PRECISION="tf32", BLOCK_N=t.block_rows, BLOCK_K=t.block_k, BLOCK_D=t.block_d),
            t.warps, t.stages)
        yield f"codes {tag}", lambda arch=arch, rows_sig=rows_sig, t=row_tiles: compile_kernel(
            sinkhorn_codes._codes_kernel, arch,
            {**rows_sig, "max_ptr": f32, "sum_ptr": f32, "S": "i32", "codes_ptr": f32, "mass_ptr": f32,
             "projected_ptr": f32, "scale_log2": "fp32", "log2_prototypes": "fp32"},
            dict(NORMALIZE=True, RECOMPUTE=False, PRECISION="tf32", BLOCK_N=t.block_rows, BLOCK_K=t.block_k,
                 BLOCK_D=t.block_d), t.warps, t.stages)
        yield f"loss_merge {tag}", lambda arch=arch, p=p: compile_kernel(
            embeddings_loss._loss_merge_kernel, arch,
            dict(z_ptr=p, M="i32", D="i32", max_ptr=f32, sum_ptr=f32, acc_ptr=f32, splits="i32", lse_ptr=f32,
                 out_ptr=f32, block_loss_ptr=f32, mass_ptr=f32, projected_ptr=f32, B="i32", n_assign="i32",
                 crops_packed="i64", inv_tau="fp32", inv_denom="fp32"),
            dict(WITH_OUTPUT=True, BLOCK_M=64, BLOCK_D=128), 4, 2)
        yield f"prototype_grad_merge {tag}", lambda arch=arch, p=p: compile_kernel(
            embeddings_grad._prototype_grad_merge_kernel, arch,
            dict(partial_ptr=f32, grad_ptr=f32, grad_c_ptr=p, size="i32", splits="i32", coef_scale="fp32"),
            dict(BLOCK=1024), 4, 2)
        block_k = scores_loss._block_k(3000)
        yield f"scores_loss {tag}", lambda arch=arch, p=p, block_k=block_k: compile_kernel(
            scores_loss._scores_loss_kernel, arch,
            dict(s_ptr=p, codes_ptr=f32, M="i32", K="i32", B="i32", n_assign="i32", crops_packed="i64",
                 lse_ptr=f32, weight_ptr=f32, share_ptr=f32, scale_log2="fp32", inv_tau="fp32", inv_denom="fp32"),
            dict(BLOCK_R=scores_loss.BLOCK_ROWS, BLOCK_K=block_k), 4, 2)
        yield f"scores_grad {tag}", lambda arch=arch, p=p, block_k=block_k: compile_kernel(
            scores_loss._scores_grad_kernel, arch,
            dict(s_ptr=p, codes_ptr=f32, M="i32", K="i32", B="i32", n_assign="i32", crops_packed="i64",
                 lse_ptr=f32, weight_ptr=f32, grad_ptr=f32, grad_s_ptr=p, scale_log2="fp32", coef_scale="fp32"),
            dict(BLOCK_R=scores_loss.BLOCK_ROWS, BLOCK_K=block_k), 4, 2)
        yield f"queue_shift {tag}", lambda arch=arch, p=p: compile_kernel(
            queue_shift._queue_shift_kernel, arch,
            dict(queue_ptr=p, z_ptr=p, L="i32", B="i32", D="i32", crops_packed="i64", kept_rows="i32"),
            dict(BLOCK_ROWS=64, BLOCK_D=queue_shift.BLOCK_COLUMNS), 4, 2)


def main() -> int:
    if "--list" in sys.argv:
        for name, _ in variants():
            print(name)
        return 0
    failures = 0
    for name, thunk in variants():
        try:
            print(f"ok   {name}: {thunk()}", flush=True)
        except Exception:
            failures += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
