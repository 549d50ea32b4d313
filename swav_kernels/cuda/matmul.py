"""The CUDA backend's matmuls: torch calls (cuBLAS on a GPU, ATen on a CPU) that write float32.

Which products are float32 and how:
- fp32 inputs: ``torch.mm``, which honours ``torch.backends.cuda.matmul.allow_tf32`` (TF32 tensor
  cores when it is on, exact fp32 when off) exactly as a user's ``torch.mm`` does;
- fp16/bf16 inputs on a GPU: ``torch.mm(a, b, out_dtype=torch.float32)``: the tensor-core product
  accumulated and written in fp32 (cuBLAS; the overload exists on CUDA since torch 2.8), and a
  float32 accumulator takes a product in place with ``torch.addmm(acc, a, b,
  out_dtype=torch.float32, out=acc)``, which accepts a float32 ``self`` since torch 2.10
  (pytorch/pytorch#167931; this package needs torch ≥ 2.11). On an older torch the product is
  formed apart and added (``add_``);
- fp16/bf16 inputs on a CPU (the emulation tests): the operands upcast to fp32, then ``torch.mm``
  (ATen has no mixed-precision CPU matmul): two more ops per product, on the CPU only.
"""
from __future__ import annotations

import torch

# torch.addmm(float32 self, 16-bit mat1, mat2, out_dtype=float32): torch >= 2.10 (pytorch/pytorch#167931)
_ADDMM_FLOAT32_SELF = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 10)


def mm_f32(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` for 2-D ``a``, ``b`` of one dtype, accumulated and returned in float32 (into ``out``,
    a float32 tensor of the product's shape whose last dimension is contiguous, when given)."""
    if a.dtype == torch.float32:
        return torch.mm(a, b) if out is None else torch.mm(a, b, out=out)
    if a.device.type == "cuda":
        if out is None:
            return torch.mm(a, b, out_dtype=torch.float32)
        return torch.mm(a, b, out_dtype=torch.float32, out=out)
    a, b = a.float(), b.float()
    return torch.mm(a, b) if out is None else torch.mm(a, b, out=out)


def add_mm_f32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in float32, in place (``acc`` float32, contiguous): one launch on a GPU."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif a.device.type == "cuda" and _ADDMM_FLOAT32_SELF:
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    elif a.device.type == "cuda":
        acc.add_(mm_f32(a, b))
    else:
        acc.addmm_(a.float(), b.float())
