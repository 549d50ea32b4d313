"""Compile Triton kernel variants to GPU binaries without a GPU; run as a script.

Must run in a process without TRITON_INTERPRET (the interpreter replaces @triton.jit
functions); tests/test_triton_compile.py starts it that way. Prints one line per variant
and exits non-zero if any variant fails to compile or overflows shared memory.
"""
import os
import sys
import traceback

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from swav_kernels.triton import cross_entropy, scoring, sinkhorn  # noqa: E402

POINTER = {"float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16"}
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # per block, opt-in maximum (bytes)


def compile_kernel(kernel, arch, pointers, scalars, constexprs):
    signature = {**pointers, **scalars, **{name: "constexpr" for name in constexprs}}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    binary = triton.compile(source, target=GPUTarget("cuda", arch, 32))
    if not binary.asm.get("cubin"):
        raise RuntimeError("no cubin produced")
    if binary.metadata.shared > SHARED_MEMORY_LIMIT[arch]:
        raise RuntimeError(f"needs {binary.metadata.shared} bytes of shared memory")
    return binary.metadata.shared


def variants():
    """(name, thunk) pairs: each tile configuration, dtype and precision at least once, both archs.
    (Each compile costs seconds; the full product runs on a GPU in the GPU tests.)"""
    for arch, dtype, dim, with_output, precision in [
        (80, "float32", 128, True, "ieee"),
        (80, "float32", 256, True, "tf32"),
        (90, "bfloat16", 256, True, "tf32"),
        (80, "bfloat16", 128, True, "tf32"),
        (90, "float16", 64, True, "tf32"),
        (90, "bfloat16", 128, False, "tf32"),
    ]:
        block_m, block_k, block_d, _ = scoring._tiles(dim, 4 if dtype == "float32" else 2)
        p = POINTER[dtype]
        tiles = dict(BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_D=block_d, PRECISION=precision)
        yield f"scores_lse sm{arch} {dtype} D={dim} out={with_output} {precision}", lambda: compile_kernel(
            scoring._scores_lse_kernel, arch,
            dict(z_ptr=p, c_ptr=p, max_ptr="*fp32", sum_ptr="*fp32", acc_ptr="*fp32"),
            dict(M="i32", K="i32", D="i32", scale_log2="fp32", k_per_split="i32"),
            dict(tiles, WITH_OUTPUT=with_output))
        if with_output:
            yield f"prototype_grad sm{arch} {dtype} D={dim} {precision}", lambda: compile_kernel(
                scoring._prototype_grad_kernel, arch,
                dict(z_ptr=p, c_ptr=p, lse_ptr="*fp32", weight_ptr="*fp32", out_ptr="*fp32"),
                dict(M="i32", K="i32", D="i32", scale_log2="fp32", rows_per_split="i32"), tiles)
    for arch, dtype in [(80, "float32"), (90, "bfloat16")]:
        block_n, block_k = sinkhorn._row_tiles(3000)
        p = POINTER[dtype]
        yield f"sinkhorn_column_init sm{arch} {dtype}", lambda: compile_kernel(
            sinkhorn._column_init_kernel, arch, dict(x_ptr=p, max_ptr="*fp32", sum_ptr="*fp32"),
            dict(N="i32", K="i32", scale_log2="fp32", rows_per_split="i32", splits="i32"),
            dict(BLOCK_N=block_n, BLOCK_K=block_k))
        for flags in [(True, True, False), (True, False, True), (False, False, True)]:
            yield f"sinkhorn_row_step sm{arch} {dtype} {flags}", lambda flags=flags: compile_kernel(
                sinkhorn._row_step_kernel, arch,
                dict(x_ptr=p, potential_ptr="*fp32", partial_ptr="*fp32", codes_ptr="*fp32"),
                dict(N="i32", K="i32", scale_log2="fp32", log2_rows_total="fp32", codes_from_row="i32",
                     row_blocks="i32"),
                dict(NORMALIZE=flags[0], COLUMN_SUMS=flags[1], WRITE_CODES=flags[2], BLOCK_N=block_n,
                     BLOCK_K=block_k))
    for arch, dtype in [(80, "float16"), (90, "bfloat16")]:
        p = POINTER[dtype]
        yield f"cross_entropy_forward sm{arch} {dtype}", lambda: compile_kernel(
            cross_entropy._forward_kernel, arch,
            dict(s_ptr=p, codes_ptr="*fp32", assign_ptr="*i32", lse_ptr="*fp32", cross_ptr="*fp32"),
            dict(B="i32", K="i32", n_assign="i32", scale_log2="fp32"), dict(BLOCK_K=1024))
        yield f"cross_entropy_backward sm{arch} {dtype}", lambda: compile_kernel(
            cross_entropy._backward_kernel, arch,
            dict(s_ptr=p, codes_ptr="*fp32", assign_ptr="*i32", lse_ptr="*fp32", weight_ptr="*fp32",
                 scale_ptr="*fp32", grad_ptr=p),
            dict(B="i32", K="i32", n_assign="i32", scale_log2="fp32"), dict(BLOCK_K=1024))


def main() -> int:
    failures = 0
    for name, thunk in variants():
        try:
            print(f"ok   {name}: {thunk()} bytes shared", flush=True)
        except Exception:
            failures += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
