"""swav-bench's work models, device peaks and derived figures, on numbers checked by hand."""
import pytest
import torch

from swav_kernels.bench.flops import algorithm_flops, matmul_flops, matmul_passes, sinkhorn_bytes, useful_flops
from swav_kernels.bench.hardware import MeasuredRate, device_peaks, matmul_peak, matmul_peak_for
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


def test_matmul_passes_per_peer():
    shape = NAMED_SHAPES["swav-1gpu"]  # V·B = 2048, |A| = 2, L = 3840, B = 256, K = 3000, D = 128
    flop = 2 * 3000 * 128  # one row of one pass
    # the reference, plain, their compiled forms and the scores path: scores once, queue scoring, 2 backward
    for peer in ("reference", "reference-compiled", "plain", "plain-compiled", "triton-scores"):
        rows = [m for _, m in matmul_passes(peer, shape, "loss", "fwd+bwd")]
        assert rows == [2048, 2 * 3840, 2048, 2048]
        assert algorithm_flops(peer, shape, "loss", "fwd+bwd") == useful_flops(shape, "loss", "fwd+bwd")
        assert algorithm_flops(peer, shape, "loss", "fwd") == (2048 + 7680) * flop
    # fused: 2T = 6 Sinkhorn passes over |A|·(L+B) = 8192 rows, the codes' scores and codes·C over
    # |A|·B = 512 (codes·C twice for 16-bit: hi and lo), scores + lse and softmax·C over 2048 (gradients
    # on), ∂C recompute + softmaxᵀ·Z over 2048
    for peer in ("triton", "triton-graph"):
        rows = [m for _, m in matmul_passes(peer, shape, "loss", "fwd+bwd")]
        assert rows == [8192] * 6 + [512, 512, 2048, 2048, 2048, 2048]
        assert algorithm_flops(peer, shape, "loss", "fwd+bwd") == (6 * 8192 + 2 * 512 + 4 * 2048) * flop
        assert algorithm_flops(peer, shape, "loss", "fwd") == (6 * 8192 + 2 * 512 + 2 * 2048) * flop
        assert algorithm_flops(peer, shape, "loss", "fwd", sixteen_bit=True) == (6 * 8192 + 3 * 512 + 2 * 2048) * flop
    assert algorithm_flops("triton", shape, "loss", "fwd+bwd", iterations=0) == (2 * 512 + 4 * 2048) * flop
    # kernels whose accumulator's width is shared by several programs score their rows once per part
    parts = {"codes": 2, "forward": 2, "backward": 3}
    rows = [m for _, m in matmul_passes("triton", shape, "loss", "fwd+bwd", width_splits=parts)]
    assert rows == [8192] * 6 + [512, 512, 512] + [2048] * 3 + [2048] * 4
    assert algorithm_flops("triton", shape, "scores-lse", "fwd+bwd", width_splits=parts) == 7 * 2048 * flop
    # the CUDA backend: Sinkhorn scores of the batch and queue rows once, then scores, ∂Z, ∂C on the library
    # (the gradients' matmuls run in the forward: the same passes for fwd and fwd+bwd, at any T)
    for peer in ("cuda", "cuda-graph"):
        rows = [m for _, m in matmul_passes(peer, shape, "loss", "fwd+bwd")]
        assert rows == [512, 7680, 2048, 2048, 2048]
        assert algorithm_flops(peer, shape, "loss", "fwd") == algorithm_flops(peer, shape, "loss", "fwd+bwd",
                                                                             iterations=0)
        assert algorithm_flops(peer, shape, "loss", "fwd+bwd") == useful_flops(shape, "loss", "fwd+bwd") + 512 * flop
    assert matmul_passes("cuda", shape, "scores-lse", "fwd") is None
    # scores-lse: fused 2 forward (+2 backward), materialised 1 (+2)
    assert algorithm_flops("triton", shape, "scores-lse", "fwd") == 2 * 2048 * flop
    assert algorithm_flops("triton", shape, "scores-lse", "fwd+bwd") == 4 * 2048 * flop
    assert algorithm_flops("plain", shape, "scores-lse", "fwd+bwd") == 3 * 2048 * flop
    assert matmul_passes("triton", shape, "sinkhorn", "fwd") == [] and algorithm_flops("triton", shape, "sinkhorn", "fwd") is None
    assert matmul_passes("triton", shape, "attention", "fwd") is None


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


def test_measured_peak_is_preferred_to_the_datasheet():
    h200 = device_peaks("NVIDIA H200")
    bf16 = MeasuredRate("bfloat16", 8192, 788.0, 1.395, False)
    fp32 = MeasuredRate("float32", 8192, 51.0, 21.6, False)
    measured = {"bfloat16": bf16, "float32": fp32}
    assert matmul_peak_for(torch.bfloat16, False, measured, h200) == (788.0, "measured bfloat16 torch.mm 8192³: 788 TFLOP/s")
    assert matmul_peak_for(torch.float16, False, measured, h200)[0] == 788.0  # the same tensor cores
    assert matmul_peak_for(torch.float32, False, measured, h200)[0] == 51.0
    # a float32 rate measured without TF32 does not stand for a TF32 run: the datasheet's TF32 peak
    assert matmul_peak_for(torch.float32, True, measured, h200) == (494.5, "datasheet H200 SXM tf32 tensor-core 494.5 TFLOP/s")
    assert matmul_peak_for(torch.bfloat16, False, None, h200) == (989.5, "datasheet H200 SXM bf16 tensor-core 989.5 TFLOP/s")
    assert matmul_peak_for(torch.bfloat16, False, None, None) is None


def test_speedups_memory_ratio_and_fraction_of_peak():
    case = Case(NAMED_SHAPES["swav-4096"], "bfloat16", "loss", ("fwd+bwd",))
    medians = {"reference": 4.0, "reference-compiled": 2.0, "plain": 3.0, "plain-compiled": 1.0, "triton": 0.5}
    records = _records(case, medians, {"reference": 400 * 2**20, "reference-compiled": 100 * 2**20,
                                       "plain": 300 * 2**20, "plain-compiled": 50 * 2**20, "triton": 10 * 2**20})
    measured = {"bfloat16": MeasuredRate("bfloat16", 8192, 800.0, 1.37, False)}
    _derive(records, case, Settings(torch.device("cpu"), peaks=device_peaks("NVIDIA H100 80GB HBM3"),
                                    measured_rates=measured))
    by_peer = {r["peer"]: r for r in records}
    triton = by_peer["triton"]
    assert triton["speedup_vs_reference"] == 8.0 and triton["speedup_vs_reference_compiled"] == 4.0
    assert triton["speedup_vs_plain_compiled"] == 2.0
    assert triton["memory_ratio_vs_reference"] == pytest.approx(0.025)
    # useful: 1.179648 GFLOP in 0.5 ms = 2.359296 TFLOP/s, the same count for every peer
    assert triton["flops"] == by_peer["plain"]["flops"] == 1_179_648_000
    assert triton["tflops"] == pytest.approx(2.359296)
    # performed by the fused path at swav-4096 in bf16 (no queue, |A|·B = 128): 6 Sinkhorn passes over 128
    # rows, the codes' scores and codes·C hi and lo over 128, 4 passes over 512 rows = 3200 rows × 2·3000·128
    # = 2.4576 GFLOP in 0.5 ms
    assert triton["algorithm_flops"] == 3200 * 2 * 3000 * 128 == 2_457_600_000
    assert triton["algorithm_tflops"] == pytest.approx(4.9152)
    assert triton["pct_of_peak"] == pytest.approx(100 * 4.9152 / 800.0)  # the measured rate, not 989.5
    assert triton["peak_kind"] == "measured bfloat16 torch.mm 8192³: 800 TFLOP/s"
    plain = by_peer["plain"]
    assert plain["algorithm_flops"] == plain["flops"]
    assert plain["pct_of_peak"] == pytest.approx(100 * (1.179648 / 3.0) / 800.0)
    assert by_peer["reference"]["speedup_vs_reference"] == 1.0
    assert by_peer["reference-compiled"]["speedup_vs_reference"] == 2.0
    assert by_peer["plain-compiled"]["speedup_vs_plain_compiled"] == 1.0
    assert plain["speedup_vs_plain_compiled"] == pytest.approx(1 / 3)


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
    tiny = NAMED_SHAPES["tiny"]  # issue 10's host-overhead probe: B = 4, K = 64
    assert (tiny.batch, tiny.prototypes, tiny.nmb_crops, tiny.dim) == (4, 64, (2, 6), 128)
    with pytest.raises(ValueError, match="sweep must be one of"):
        sweep_shapes("d")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_scores_rows_are_checked_against_the_loss_of_their_own_rounded_scores(dtype):
    # the scores path's input is the user's matmul in the input dtype: its rounding is not the loss's error
    from swav_kernels import swav_loss
    from swav_kernels.bench.accuracy import rel_err, tolerance
    from swav_kernels.bench.problem import make_problem
    from swav_kernels.bench.runner import Settings, case_truth, scores_path_truth

    shape = NAMED_SHAPES["tiny"]
    case = Case(shape, dtype, "loss", ("fwd", "fwd+bwd"))
    settings = Settings(torch.device("cpu"))
    problem = make_problem(shape, settings.device, getattr(torch, dtype), 0, 1.0)
    fused_truth, why = case_truth(case, problem, settings)
    truth, why_scores = scores_path_truth(case, problem, settings)
    assert why is None and why_scores is None and set(truth) == {"fwd", "fwd+bwd"}
    z, c = problem.embeddings, problem.prototypes
    loss = swav_loss(z @ c.t(), nmb_crops=list(shape.nmb_crops), crops_for_assign=shape.crops_for_assign,
                     backend="reference")
    grads = torch.autograd.grad(loss, (z, c))
    limit = tolerance(getattr(torch, dtype), "fwd+bwd", False, 1.0, problem.epsilon)
    assert rel_err(grads, truth["fwd+bwd"]) <= limit
    assert rel_err(grads, truth["fwd+bwd"]) < rel_err(grads, fused_truth["fwd+bwd"])
    assert rel_err((loss,), truth["fwd"]) < 2e-3
    # in float32 the two truths agree (both in float64)
    case32 = Case(shape, "float32", "loss", ("fwd+bwd",))
    problem32 = make_problem(shape, settings.device, torch.float32, 0, 1.0)
    assert rel_err(scores_path_truth(case32, problem32, settings)[0]["fwd+bwd"],
                   case_truth(case32, problem32, settings)[0]["fwd+bwd"]) < 1e-6


def test_fused_width_splits_read_the_tile_tables():
    pytest.importorskip("triton")
    from swav_kernels.bench.flops import fused_width_splits
    from swav_kernels.bench.runner import width_splits_of
    from swav_kernels.triton.tiles import matmul_tiles

    cpu = torch.device("cpu")  # the interpreter reads the sm_90 tables
    parts = fused_width_splits(256, torch.bfloat16, cpu)
    assert parts == {kernel: 256 // matmul_tiles(kernel, 256, torch.bfloat16, "tf32", 0, cpu).out_width
                     for kernel in ("codes", "forward", "backward")}
    assert parts["codes"] == 2  # 16-bit codes at D = 256 hold 128 columns of codes·C per program
    case = Case(NAMED_SHAPES["large-k"], "bfloat16", "loss", ("fwd+bwd",))
    assert width_splits_of("triton-graph", case, torch.bfloat16, cpu) == parts
    assert width_splits_of("triton-scores", case, torch.bfloat16, cpu) is None
    assert width_splits_of("plain-compiled", case, torch.bfloat16, cpu) is None
