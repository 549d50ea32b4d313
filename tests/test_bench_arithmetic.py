"""swav-bench's work models, device peaks and derived figures, on numbers checked by hand."""
import pytest
import torch

from swav_kernels.bench.hardware import device_peaks, matmul_flops, matmul_peak, sinkhorn_bytes
from swav_kernels.bench.runner import Settings, _base_record, _derive
from swav_kernels.bench.shapes import NAMED_SHAPES, Case, plan_cases, sweep_shapes


def test_flop_counts_of_the_design_shapes():
    swav_4096 = NAMED_SHAPES["swav-4096"]  # V·B = 8·64 = 512 rows, D = 128, K = 3000
    assert matmul_flops(swav_4096, "loss", "fwd") == 2 * 512 * 128 * 3000 == 393_216_000
    assert matmul_flops(swav_4096, "loss", "fwd+bwd") == 6 * 512 * 128 * 3000 == 1_179_648_000
    assert matmul_flops(swav_4096, "scores-lse", "fwd+bwd") == 1_179_648_000
    assert matmul_flops(swav_4096, "sinkhorn", "fwd") is None
    # swav-1gpu scores its queue too: 2 assign crops × 3840 rows, forward only
    swav_1gpu = NAMED_SHAPES["swav-1gpu"]
    assert matmul_flops(swav_1gpu, "loss", "fwd+bwd") == 6 * 2048 * 128 * 3000 + 2 * 2 * 3840 * 128 * 3000
    assert matmul_flops(swav_1gpu, "scores-lse", "fwd") == 2 * 2048 * 128 * 3000
    # large-k: 10 crops × 1024 images, D = 256, K = 65536
    assert matmul_flops(NAMED_SHAPES["large-k"], "loss", "fwd+bwd") == 6 * 10240 * 256 * 65536 == 1_030_792_151_040


def test_sinkhorn_traffic():
    # swav-smallbatch: 2 assign crops × (480 + 32) rows × 3000 prototypes, read once and codes written once
    shape = NAMED_SHAPES["swav-smallbatch"]
    assert sinkhorn_bytes(shape, torch.bfloat16) == 2 * 512 * 3000 * (2 + 4) == 18_432_000
    assert sinkhorn_bytes(shape, torch.float32) == 2 * 512 * 3000 * 8


@pytest.mark.parametrize("name, model, bf16, hbm", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5, 3.35),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.5, 2.0),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5, 3.9),
    ("NVIDIA H200", "H200 SXM", 989.5, 4.8),
    ("NVIDIA H200 NVL", "H200 NVL", 835.5, 4.8),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM", 312.0, 2.039),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe", 312.0, 1.935),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB", 312.0, 1.555),
])
def test_known_devices(name, model, bf16, hbm):
    peaks = device_peaks(name)
    assert (peaks.model, peaks.bf16_tflops, peaks.hbm_tbps) == (model, bf16, hbm)


def test_unknown_device_and_peak_by_dtype():
    assert device_peaks("NVIDIA GeForce RTX 4090") is None
    h100 = device_peaks("NVIDIA H100 80GB HBM3")
    assert matmul_peak(h100, torch.bfloat16, False) == (989.5, "bf16 tensor-core")
    assert matmul_peak(h100, torch.float32, False) == (67.0, "fp32")
    assert matmul_peak(h100, torch.float32, True) == (494.5, "tf32 tensor-core")


def _records(case, medians_ms, peaks_bytes):
    records = []
    for peer, median in medians_ms.items():
        r = _base_record(case, "fwd+bwd", peer)
        r.update(median_ms=median, peak_bytes=peaks_bytes[peer])
        records.append(r)
    return records


def test_speedups_memory_ratio_and_fraction_of_peak():
    case = Case(NAMED_SHAPES["swav-4096"], "bfloat16", "loss", ("fwd+bwd",))
    records = _records(case, {"reference": 4.0, "compiled": 2.0, "triton": 0.5},
                       {"reference": 400 * 2**20, "compiled": 100 * 2**20, "triton": 10 * 2**20})
    _derive(records, case, Settings(torch.device("cpu"), peaks=device_peaks("NVIDIA H100 80GB HBM3")))
    by_peer = {r["peer"]: r for r in records}
    triton = by_peer["triton"]
    assert triton["speedup_vs_reference"] == 8.0 and triton["speedup_vs_compiled"] == 4.0
    assert triton["memory_ratio_vs_reference"] == pytest.approx(0.025)
    # 1.179648 GFLOP in 0.5 ms = 2.359296 TFLOP/s = 0.23843% of 989.5
    assert triton["flops"] == 1_179_648_000
    assert triton["tflops"] == pytest.approx(2.359296)
    assert triton["pct_of_peak"] == pytest.approx(100 * 2.359296 / 989.5)
    assert by_peer["reference"]["speedup_vs_reference"] == 1.0
    assert by_peer["compiled"]["speedup_vs_reference"] == 2.0


def test_sinkhorn_fraction_of_bandwidth_and_no_peak_on_cpu():
    case = Case(NAMED_SHAPES["swav-smallbatch"], "bfloat16", "sinkhorn", ("fwd",))
    record = _base_record(case, "fwd", "reference")
    record.update(median_ms=0.01, peak_bytes=None)
    _derive([record], case, Settings(torch.device("cuda"), peaks=device_peaks("NVIDIA H200")))
    assert record["tbps"] == pytest.approx(18_432_000 / 1e-5 / 1e12)  # 1.8432 TB/s
    assert record["pct_of_peak"] == pytest.approx(100 * 1.8432 / 4.8)
    assert record["memory_ratio_vs_reference"] is None  # no memory figure, no ratio
    _derive([record], case, Settings(torch.device("cpu")))
    assert record["tflops"] is None


def test_sweeps_and_plan():
    ks = [s.prototypes for s in sweep_shapes("k")]
    assert ks[0] == 1024 and ks[-1] == 131072 and len(ks) == 8
    rows = [s.rows for s in sweep_shapes("rows")]
    assert rows[0] == 512 and rows[-1] == 16384
    assert [s.queue for s in sweep_shapes("queue")] == [0, 3840]
    cases = plan_cases(["swav-4096"], ["rows"], ["loss", "sinkhorn"], ["fwd+bwd"], ["float32"])
    names = [(c.shape.name, c.op, c.passes) for c in cases]
    # swav-4096 is the rows sweep's first point: it runs once, under its own name
    assert names[0] == ("swav-4096", "loss", ("fwd+bwd",)) and cases[0].sweeps == ("rows",)
    assert [n for n in names if n[0] == "swav-4096"] == [("swav-4096", "loss", ("fwd+bwd",)),
                                                        ("swav-4096", "sinkhorn", ("fwd",))]
    assert len(cases) == 1 + 5 + 1
    with pytest.raises(ValueError, match="sweep must be one of"):
        sweep_shapes("d")
