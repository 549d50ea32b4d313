"""Peak rates of the GPU: the datasheet figures of known models, and a matmul rate measured
on the device at start-up (what "% of peak" divides by where it could be measured).

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

import statistics
from dataclasses import dataclass

import torch



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


@dataclass(frozen=True)
class MeasuredRate:
    """A matmul rate measured on the device: ``n×n @ n×n`` in ``dtype``, median of the samples."""

    dtype: str
    n: int
    tflops: float
    median_ms: float
    allow_tf32: bool

    def describe(self) -> str:
        mode = " (TF32 allowed)" if self.dtype == "float32" and self.allow_tf32 else ""
        return f"measured {self.dtype} torch.mm {self.n}³{mode}: {self.tflops:.0f} TFLOP/s"


def measure_matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 8192, warmup_ms: float = 25.0,
                        rep_ms: float = 100.0) -> MeasuredRate | None:
    """The rate of ``torch.mm`` on two random ``n×n`` matrices in ``dtype``, timed with the same
    timer as the benchmark (``timing.cuda_samples``); None on a CPU (not measured there)."""
    if device.type != "cuda":
        return None
    median = _mm_median_ms(device, dtype, n, n, n, warmup_ms, rep_ms, max_samples=100)
    torch.cuda.empty_cache()
    return MeasuredRate(str(dtype).removeprefix("torch."), n, 2 * n**3 / (median / 1e3) / 1e12, median,
                        bool(torch.backends.cuda.matmul.allow_tf32))


def matmul_peak_for(dtype: torch.dtype, allow_tf32: bool, measured: dict | None,
                    datasheet: DevicePeaks | None) -> tuple[float, str] | None:
    """(TFLOP/s, description) of the peak that "% of peak" divides by for ``dtype``: the rate
    measured on the device where there is one for the dtype's matrix unit (``measured`` maps
    "bfloat16"/"float32" to a ``MeasuredRate``; float16 uses the bf16 rate, the same tensor
    cores; a float32 rate counts only if measured with the same TF32 setting), else the
    datasheet's dense peak; None with neither."""
    rate = None
    if measured:
        if dtype in (torch.bfloat16, torch.float16):
            rate = measured.get("bfloat16")
        elif dtype == torch.float32:
            rate = measured.get("float32")
            if rate is not None and rate.allow_tf32 != allow_tf32:
                rate = None
    if rate is not None:
        return rate.tflops, rate.describe()
    if datasheet is not None:
        peak, kind = matmul_peak(datasheet, dtype, allow_tf32)
        return peak, f"datasheet {datasheet.model} {kind} {peak:g} TFLOP/s"
    return None


@dataclass(frozen=True)
class MatmulRate:
    """``torch.mm`` of ``(rows × dim) @ (dim × prototypes)`` in ``dtype`` on the device: a shape's own
    product sizes, the ceiling its matmul kernels are held to."""

    dtype: str
    rows: int
    dim: int
    prototypes: int
    allow_tf32: bool
    median_ms: float

    @property
    def tflops(self) -> float:
        return 2 * self.rows * self.dim * self.prototypes / (self.median_ms / 1e3) / 1e12

    def describe(self) -> str:
        mode = " TF32" if self.dtype == "float32" and self.allow_tf32 else ""
        return f"torch.mm {self.rows}×{self.dim}×{self.prototypes}{mode} {self.tflops:.0f} TFLOP/s"


@dataclass(frozen=True)
class CopyRate:
    """A device-to-device copy of ``size`` bytes: ``2·size`` bytes moved (read + written) per ``median_ms``;
    what DESIGN §5a's streaming target (≥ 60 %) divides by."""

    size: int
    median_ms: float

    @property
    def gbps(self) -> float:
        return 2 * self.size / (self.median_ms / 1e3) / 1e9

    def describe(self) -> str:
        return f"device copy of {self.size / 2**20:.0f} MiB {self.gbps:.0f} GB/s (read + written)"


def measure_mm_rate(device: torch.device, dtype: torch.dtype, rows: int, dim: int, prototypes: int,
                    warmup_ms: float = 25.0, rep_ms: float = 100.0) -> MatmulRate | None:
    """The median time of ``torch.mm`` on random ``(rows × dim)`` and ``(dim × prototypes)`` matrices in
    ``dtype`` (the benchmark's timer, ``timing.cuda_samples``), with the current TF32 setting; None on a CPU."""
    if device.type != "cuda":
        return None
    return MatmulRate(str(dtype).removeprefix("torch."), rows, dim, prototypes,
                      bool(torch.backends.cuda.matmul.allow_tf32),
                      _mm_median_ms(device, dtype, rows, dim, prototypes, warmup_ms, rep_ms, max_samples=200))


def _mm_median_ms(device: torch.device, dtype: torch.dtype, rows: int, dim: int, cols: int, warmup_ms: float,
                  rep_ms: float, max_samples: int) -> float:
    """Median ms of ``torch.mm`` on seeded random ``(rows × dim)`` and ``(dim × cols)`` matrices in ``dtype``,
    timed with the benchmark's timer (``timing.cuda_samples``)."""
    from .timing import cuda_samples

    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(rows, dim, device=device, dtype=dtype, generator=g)
    b = torch.randn(dim, cols, device=device, dtype=dtype, generator=g)
    samples = cuda_samples(lambda: torch.mm(a, b), device, warmup_ms, rep_ms, min_samples=10, max_samples=max_samples)
    del a, b
    return statistics.median(samples)


def measure_copy_rate(device: torch.device, size: int = 2**30, warmup_ms: float = 25.0,
                      rep_ms: float = 100.0) -> CopyRate | None:
    """The median time of copying ``size`` bytes from one device buffer to another (far larger than the L2
    cache); None on a CPU."""
    from .timing import cuda_samples

    if device.type != "cuda":
        return None
    source = torch.empty(size // 4, device=device, dtype=torch.float32).fill_(1.0)
    target = torch.empty_like(source)
    samples = cuda_samples(lambda: target.copy_(source), device, warmup_ms, rep_ms, min_samples=10, max_samples=100)
    del source, target
    torch.cuda.empty_cache()
    return CopyRate(size, statistics.median(samples))
