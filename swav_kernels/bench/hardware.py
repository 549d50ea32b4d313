"""Work models of the benchmarked operations and the peak rates of known GPUs.

Peak figures are NVIDIA's datasheet numbers for dense math (the datasheets quote tensor-core
TF32/BF16 "with sparsity"; dense is half of that):
  - H100 SXM5 and H100 PCIe: "NVIDIA H100 Tensor Core GPU" datasheet (2023): SXM FP32 67,
    TF32 989 sparse, BF16 1979 sparse TFLOPS, 3.35 TB/s HBM3; PCIe FP32 51, TF32 756 sparse,
    BF16 1513 sparse TFLOPS, 2.0 TB/s HBM2e; H100 NVL FP32 60, TF32 835, BF16 1671 sparse, 3.9 TB/s.
  - H200 SXM and NVL: "NVIDIA H200 Tensor Core GPU" datasheet (2024): SXM FP32 67, TF32 989
    sparse, BF16 1979 sparse TFLOPS, 4.8 TB/s HBM3e; NVL FP32 60, TF32 835, BF16 1671 sparse, 4.8 TB/s.
  - A100: "NVIDIA A100 Tensor Core GPU" datasheet (2021): FP32 19.5, TF32 156 dense,
    BF16 312 dense TFLOPS; HBM2e 2039 GB/s (80GB SXM), 1935 GB/s (80GB PCIe), 1555 GB/s (40GB).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .shapes import Shape


@dataclass(frozen=True)
class DevicePeaks:
    """Dense peak rates of one GPU model: TFLOP/s per math mode, memory bandwidth in TB/s."""

    model: str
    fp32_tflops: float
    tf32_tflops: float
    bf16_tflops: float
    hbm_tbps: float


# (substrings that must all occur in torch.cuda.get_device_name(), peaks); first match wins,
# so the more specific names come first.
KNOWN_DEVICES = (
    (("H200", "NVL"), DevicePeaks("H200 NVL", 60.0, 417.5, 835.5, 4.8)),
    (("H200",), DevicePeaks("H200 SXM", 67.0, 494.5, 989.5, 4.8)),
    (("H100", "PCIe"), DevicePeaks("H100 PCIe", 51.0, 378.0, 756.5, 2.0)),
    (("H100", "NVL"), DevicePeaks("H100 NVL", 60.0, 417.5, 835.5, 3.9)),
    (("H100",), DevicePeaks("H100 SXM", 67.0, 494.5, 989.5, 3.35)),
    (("A100", "80GB", "PCIe"), DevicePeaks("A100 80GB PCIe", 19.5, 156.0, 312.0, 1.935)),
    (("A100", "80GB"), DevicePeaks("A100 80GB SXM", 19.5, 156.0, 312.0, 2.039)),
    (("A100",), DevicePeaks("A100 40GB", 19.5, 156.0, 312.0, 1.555)),
)


def device_peaks(device_name: str) -> DevicePeaks | None:
    """The peaks of a GPU from its ``torch.cuda.get_device_name()``; None when unknown."""
    lowered = device_name.lower()
    for needles, peaks in KNOWN_DEVICES:
        if all(n.lower() in lowered for n in needles):
            return peaks
    return None


def matmul_peak(peaks: DevicePeaks, dtype: torch.dtype, allow_tf32: bool) -> tuple[float, str]:
    """(TFLOP/s, which unit) of the matmul peak for ``dtype``: bf16/fp16 tensor cores, TF32
    tensor cores when float32 matmuls may use them (``torch.backends.cuda.matmul.allow_tf32``),
    else the FP32 CUDA cores."""
    if dtype in (torch.bfloat16, torch.float16):
        return peaks.bf16_tflops, "bf16 tensor-core"
    if allow_tf32:
        return peaks.tf32_tflops, "tf32 tensor-core"
    return peaks.fp32_tflops, "fp32"


def matmul_flops(shape: Shape, op: str, pass_: str) -> int | None:
    """Lower bound on the matmul FLOPs of ``op`` (DESIGN §5), None for the Sinkhorn alone.

    Scores ``S = Z Cᵀ`` cost 2·(V·B)·D·K; the backward adds ∂Z = ∂S C and ∂C = ∂Sᵀ Z, so
    forward+backward is 6·(V·B)·D·K. The loss also scores the queue: 2·|A|·L·D·K, forward only.
    The Sinkhorn's exp/sum passes are not matmul work and are not counted.
    """
    if op == "sinkhorn":
        return None
    per_pass = 2 * shape.rows * shape.dim * shape.prototypes
    flops = per_pass * (3 if pass_ == "fwd+bwd" else 1)
    if op == "loss":
        flops += 2 * len(shape.crops_for_assign) * shape.queue * shape.dim * shape.prototypes
    return flops


def sinkhorn_bytes(shape: Shape, dtype: torch.dtype) -> int:
    """Lower bound on the memory traffic of the Sinkhorn alone: read the (|A|, L+B, K) scores
    once and write the float32 codes of the same shape once."""
    elements = len(shape.crops_for_assign) * shape.sinkhorn_rows * shape.prototypes
    return elements * (torch.empty((), dtype=dtype).element_size() + 4)
