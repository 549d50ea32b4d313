"""swav-bench's launch-plan arithmetic on the CPU: the cost model of each kernel family, the roofline,
the reading of compiled kernels (ptxas -v, cuobjdump, tensor-core instructions in PTX), the per-kernel
rates against measured ceilings and their table, on numbers checked by hand. The plans themselves,
compiled for sm_90 and sm_80 through the null driver, are tests/test_triton_compile.py's."""
import shutil
import subprocess

import pytest
import torch

from swav_kernels.bench.cli import ceilings_line, ceilings_meta, main
from swav_kernels.bench.hardware import CopyRate, MatmulRate, device_peaks
from swav_kernels.bench.kernel_times import format_kernel_section, kernel_rows, sum_kernel_events
from swav_kernels.bench.plan import (Cost, LaunchReport, PlanReport, findings, format_report, launch_cost,
                                     matmul_peak_tflops, roofline_us)
from swav_kernels.bench.shapes import NAMED_SHAPES

SWAV_1GPU = NAMED_SHAPES["swav-1gpu"]  # |A| = 2, L = 3840, B = 256 (N = 4096), V = 8 (M = 2048), K = 3000, D = 128
PASS = 2 * 3000 * 128  # FLOPs of one row of one matmul pass


def test_fused_sinkhorn_costs():
    bf16 = torch.bfloat16
    first = launch_cost("_column_step_kernel", dict(RECOMPUTE=True, HAS_ROW_POTENTIAL=False), (47, 2, 3), {},
                        SWAV_1GPU, bf16)
    assert first.passes == (("scores", 8192),) and first.flops == 8192 * PASS == 6_291_456_000
    # rows 8192·128·2 + C 3000·128·2 + column partials out 3 ranges · 2 groups · 3000 · (max, sum)
    assert first.bytes == 2_097_152 + 768_000 + 3 * 2 * 3000 * 8 == 3_009_152
    later = launch_cost("_column_step_kernel", dict(RECOMPUTE=True, HAS_ROW_POTENTIAL=True), (47, 2, 3), {"R": 3},
                        SWAV_1GPU, bf16)
    assert later.bytes == first.bytes + 3 * 2 * 4096 * 8  # the row step's partials read
    row = launch_cost("_row_step_kernel", dict(RECOMPUTE=True), (64, 2, 3), {"S": 3}, SWAV_1GPU, bf16)
    assert row.flops == first.flops and row.bytes == 2_097_152 + 768_000 + 144_000 + 196_608
    codes = launch_cost("_codes_kernel", dict(RECOMPUTE=True, ROW_LSE=True, NORMALIZE=False), (4, 2, 8),
                        {"S": 3, "R": 3}, SWAV_1GPU, bf16)
    # scores once and codes·C as hi + lo over |A|·B = 512 rows
    assert codes.passes == (("scores", 512), ("codes·C", 512), ("codes·C", 512)) and codes.flops == 3 * 512 * PASS
    written = 2 * 256 * 3000 * 4 + 8 * 2 * 256 * 4 + 8 * 2 * 256 * 128 * 4  # codes, mass and projection partials
    assert codes.bytes == 512 * 128 * 2 + 768_000 + 144_000 + 196_608 + written == 9_497_216
    # fp32: codes·C is one product; a codes kernel that sweeps for its own row sums scores twice
    fp32 = launch_cost("_codes_kernel", dict(RECOMPUTE=True, ROW_LSE=False, NORMALIZE=True), (4, 2, 1), {"S": 3},
                       SWAV_1GPU, torch.float32)
    assert [what for what, _ in fp32.passes] == ["scores", "scores", "codes·C"]
    # the accumulator's width shared by 2 programs (Tiles.block_out): each scores the rows again; the grid's
    # third axis holds ranges × parts, and only the ranges write mass and projection partials
    halves = launch_cost("_codes_kernel", dict(RECOMPUTE=True, ROW_LSE=True, NORMALIZE=False), (4, 2, 16),
                         {"S": 3, "R": 3, "width_splits": 2}, SWAV_1GPU, bf16)
    assert halves.passes == (("scores", 512),) * 2 + (("codes·C", 512),) * 2 and halves.bytes == codes.bytes


def test_loss_and_scores_path_costs():
    bf16 = torch.bfloat16
    forward = launch_cost("_loss_forward_kernel", dict(WITH_OUTPUT=True), (32, 1, 1), {"code_splits": 8},
                          SWAV_1GPU, bf16)
    assert forward.flops == 2 * 2048 * PASS and forward.rows == 2048
    # z + C in, mass and projection partials in, lse and output out
    assert forward.bytes == 2048 * 128 * 2 + 768_000 + 8 * 2 * 256 * 129 * 4 + 2048 * 4 + 2048 * 128 * 4
    split = launch_cost("_loss_forward_kernel", dict(WITH_OUTPUT=False), (32, 8, 1), {"code_splits": 1},
                        SWAV_1GPU, bf16)
    assert split.flops == 2048 * PASS  # no softmax·C without the output
    assert split.bytes == 2048 * 128 * 2 + 768_000 + 2 * 256 * 129 * 4 + 2048 * 4 + 2 * 8 * 2048 * 2 * 4
    backward = launch_cost("_backward_kernel", dict(), (314, 1, 1), {"code_splits": 1, "splits": 6}, SWAV_1GPU, bf16)
    assert backward.flops == 2 * 2048 * PASS
    for kernel, grid in (("_loss_forward_kernel", (32, 16, 1)), ("_backward_kernel", (628, 1, 1))):
        shared = launch_cost(kernel, dict(WITH_OUTPUT=True), grid, {"code_splits": 1, "width_splits": 2, "splits": 1},
                             SWAV_1GPU, bf16)
        assert [what for what, _ in shared.passes][:2] == ["scores", "scores"] and shared.flops == 3 * 2048 * PASS
    assert backward.bytes == (2 * (2048 * 128 * 2 + 768_000) + 2 * 256 * 3000 * 4 + 2 * 256 * 129 * 4 + 2048 * 4
                              + 2048 * 128 * 4 + 2 * 6 * 3000 * 128 * 4)
    # stored scores: memory-bound, no matmul
    column = launch_cost("_column_step_kernel", dict(RECOMPUTE=False), (47, 2, 3), {}, SWAV_1GPU, bf16)
    assert column.flops == 0 and column.passes == () and column.rows is None
    assert column.bytes == 8192 * 3000 * 2 + 3 * 2 * 3000 * 8
    loss = launch_cost("_scores_loss_kernel", {}, (512, 1, 1), {}, SWAV_1GPU, bf16)
    # scores and codes in, lse and weight out, 512 shares of the loss written and read back
    assert loss.bytes == 2048 * 3000 * 2 + 2 * 256 * 3000 * 4 + 2 * 2048 * 4 + 2 * 512 * 4 == 18_452_480
    grad = launch_cost("_scores_grad_kernel", {}, (512, 12, 1), {}, SWAV_1GPU, bf16)
    assert grad.bytes == 2 * 2048 * 3000 * 2 + 2 * 256 * 3000 * 4 + 2 * 2048 * 4
    assert launch_cost("_some_new_kernel", {}, (1, 1, 1), {}, SWAV_1GPU, bf16) is None


def test_roofline_against_the_datasheet():
    h200 = device_peaks("H200 SXM")
    assert matmul_peak_tflops(h200, torch.bfloat16, False) == 989.5
    assert matmul_peak_tflops(h200, torch.float32, True) == 494.5
    assert matmul_peak_tflops(h200, torch.float32, False) == pytest.approx(494.5 / 3)  # 3xTF32
    us, bound = roofline_us(Cost((("scores", 8192),), 6_291_456_000, 3_009_152), 989.5, 4.8)
    assert bound == "matmul" and us == pytest.approx(6_291_456_000 / 989.5e12 * 1e6)  # 6.36 µs
    us, bound = roofline_us(Cost((), 0, 18_456_576), 989.5, 4.8)
    assert bound == "memory" and us == pytest.approx(18_456_576 / 4.8e12 * 1e6)  # 3.85 µs


def _launch(index, kernel, programs, **facts):
    base = dict(index=index, phase="forward", kernel=kernel, grid=(programs, 1, 1), programs=programs,
                programs_per_sm=programs / 132, tiles={"BLOCK_N": 64, "BLOCK_K": 64}, warps=8, stages=3, constexprs={},
                compiled=True, registers=80, ptxas_registers=80, stack_bytes=0, spill_bytes=0, shared_bytes=66048,
                shared_limit=227 * 1024, mma="wgmma", mma_precision="bf16", flops=6_291_456_000, bytes=3_009_152,
                roofline_us=6.36, bound="matmul")
    base.update(facts)
    return LaunchReport(**base)


def test_plan_table_and_findings():
    report = PlanReport("swav-1gpu", 256, [2, 6], 3000, 128, 3840, [0, 1], "fused", "bfloat16", False, 90, 132,
                        "H200 SXM", 989.5, 4.8)
    report.launches = [_launch(0, "_column_step_kernel", 282),
                       _launch(1, "_codes_kernel", 64, mma="wgmma+mma", mma_shapes=["mma m16n8k16"], spill_bytes=24),
                       _launch(2, "_loss_forward_kernel", 256, compiled=False, error="CompilationError: at 53:12",
                               registers=None, spill_bytes=None, shared_bytes=None, mma=None, mma_precision=None)]
    report.total_flops, report.total_bytes, report.total_roofline_us = 3 * 6_291_456_000, 3 * 3_009_152, 19.08
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0].startswith("plan: swav-1gpu (B=256") and "sm_90 with 132 SMs" in lines[0]
    row = lines[3].split()
    assert row[:6] == ["0", "fwd", "column_step", "282×1×1", "282", "2.14"] and "64.5" in row and "6.29" in row
    assert "total: 3 launches, 18.87 GFLOP, 9.03 MB, roofline 19.1 µs" in text
    notes = findings(report)
    assert notes == ["#2 _loss_forward_kernel: CompilationError: at 53:12",
                     "#1 _codes_kernel: spill: 24 bytes spilled (80 registers, 0 bytes of stack)",
                     "#1 _codes_kernel: wgmma: tensor-core instructions 'wgmma+mma' (mma m16n8k16)",
                     "#1 _codes_kernel: grid: 64 programs (grid (64, 1, 1)) on 132 SMs, roofline 6.4 µs"]
    assert [launch.index for launch in report.under_one_program_per_sm()] == [1]


def test_kernel_rules_hold_small_launches_to_no_grid_and_name_known_shortfalls(monkeypatch):
    import dataclasses

    from swav_kernels.bench.kernel_rules import GRID_RULE_MIN_US, breaches
    from swav_kernels.triton.tiles import KNOWN_SHORTFALLS

    # no fused kernel has a documented shortfall today: document one here, as the tables would
    monkeypatch.setitem(KNOWN_SHORTFALLS, (90, "fused", "backward", "tf32x3", 128, "wgmma"),
                        "exact fp32 backward on mma.sync: the reason a table entry would give")

    report = PlanReport("swav-1gpu", 256, [2, 6], 3000, 128, 3840, [0, 1], "fused", "float32", False, 90, 132,
                        "H200 SXM", 329.8, 4.8)
    report.launches = [_launch(0, "_row_step_kernel", 64, roofline_us=GRID_RULE_MIN_US / 2),  # too small to hold
                       _launch(1, "_backward_kernel", 504, mma="mma", mma_shapes=["mma m16n8k8"])]
    found = breaches(dataclasses.asdict(report))
    assert [(b.index, b.rule) for b in found] == [(1, "wgmma")]
    assert found[0].known == KNOWN_SHORTFALLS[(90, "fused", "backward", "tf32x3", 128, "wgmma")]
    assert "known: exact fp32" in findings(report)[-1]
    report.dtype = "bfloat16"  # a 16-bit backward off wgmma is no known shortfall
    assert [b.known for b in breaches(dataclasses.asdict(report))] == [None]


def test_matrix_instructions_of_ptx():
    from swav_kernels.bench.compiled import matrix_instructions

    ptx = """
    wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%f1}, %rd1, %rd2, p, 1, 1, 0, 1;
    wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%f1}, %rd3, %rd4, p, 1, 1, 0, 1;
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f2};
    """
    found = matrix_instructions(ptx)
    assert (found.wgmma, found.mma, found.kind, found.precision) == (2, 1, "wgmma+mma", "bf16")
    assert found.shapes == ("mma m16n8k16", "wgmma m64n64k16")
    exact = matrix_instructions("cvt.rna.tf32.f32 %r1, %f1;\nmma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {};")
    assert (exact.kind, exact.precision) == ("mma", "3xtf32")
    tf32 = matrix_instructions("wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 {};")
    assert (tf32.kind, tf32.precision) == ("wgmma", "tf32")
    none = matrix_instructions("ld.global.f32 %f1, [%rd1];")
    assert (none.kind, none.precision) == ("-", "-")


def test_ptxas_log_parsing():
    from swav_kernels.bench.compiled import parse_ptxas_log

    log = ("ptxas info    : Function properties for _codes_kernel\n"
           "    48 bytes stack frame, 24 bytes spill stores, 16 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers\n")
    assert parse_ptxas_log(log) == (255, 40)
    with pytest.raises(RuntimeError, match="no register count"):
        parse_ptxas_log("ptxas info : nothing")


PTX = """.version 7.0
.target sm_80
.address_size 64
.visible .entry store_one(.param .u64 out)
{
    .reg .b64 %rd<3>;
    .reg .f32 %f<2>;
    ld.param.u64 %rd1, [out];
    cvta.to.global.u64 %rd2, %rd1;
    mov.f32 %f1, 0f3F800000;
    st.global.f32 [%rd2], %f1;
    ret;
}
"""


def test_ptxas_and_cuobjdump_read_a_kernel(tmp_path):
    pytest.importorskip("triton")
    from swav_kernels.bench.compiled import _ptxas_path, cubin_resources, ptxas_report

    registers, spills, command = ptxas_report(PTX, 80)
    assert 1 <= registers < 16 and spills == 0 and "-v" in command and "--gpu-name=sm_80" in command
    source, cubin = tmp_path / "kernel.ptx", tmp_path / "kernel.cubin"
    source.write_text(PTX)
    subprocess.run([_ptxas_path(80), "--gpu-name=sm_80", str(source), "-o", str(cubin)], check=True)
    assert cubin_resources(cubin.read_bytes()) == (registers, 0)


def test_kernel_rates_against_measured_ceilings():
    calls = 5
    events = []
    for _ in range(calls):
        events += [("_column_step_kernel", 80.0)] * 3 + [("_scores_loss_kernel", 9.0), ("Memset (Device)", 1.0)]
    times = sum_kernel_events(events, calls)
    assert times == {"_column_step_kernel": (3, 240.0), "_scores_loss_kernel": (1, 9.0), "Memset (Device)": (1, 1.0)}
    column = Cost((("scores", 8192),) * 3, 3 * 6_291_456_000, 3 * 3_009_152)
    stream = Cost((), 0, 18_456_576)
    costs = {"_column_step_kernel": (3, column), "_scores_loss_kernel": (1, stream)}
    mm = MatmulRate("bfloat16", 8192, 128, 3000, False, 0.0157)
    copy = CopyRate(2**30, 0.55)
    asked = []
    rows = kernel_rows(times, costs, lambda r: asked.append(r) or mm, copy)
    assert asked == [8192]  # the ceiling of a matmul kernel is torch.mm at its own rows
    first, second, third = rows
    assert first["rate"] == pytest.approx(3 * 6_291_456_000 / 240e-6 / 1e12)  # 78.6 TFLOP/s
    assert mm.tflops == pytest.approx(2 * 8192 * 128 * 3000 / 0.0157e-3 / 1e12)  # 400.7
    assert first["pct_of_ceiling"] == pytest.approx(100 * first["rate"] / mm.tflops) and first["unit"] == "TFLOP/s"
    assert copy.gbps == pytest.approx(2 * 2**30 / 0.55e-3 / 1e9)  # 3905 GB/s
    assert second["rate"] == pytest.approx(18_456_576 / 9e-6 / 1e9) and second["unit"] == "GB/s"  # 2051 GB/s
    assert second["pct_of_ceiling"] == pytest.approx(100 * second["rate"] / copy.gbps)
    assert third["flops"] is None and third["rate"] is None and third["us"] == 1.0
    record = dict(shape="swav-1gpu", dtype="bfloat16", peer="triton", kernel_times=rows, **{"pass": "fwd+bwd"})
    lines = format_kernel_section([record], "cuda:0")
    assert lines[0].startswith("per-kernel device time") and "60 %" in lines[0]
    body = [line.split() for line in lines[3:]]
    assert body[0][:7] == ["swav-1gpu", "bfloat16", "fwd+bwd", "triton", "_column_step_kernel", "3", "240.0"]
    assert f"{first['pct_of_ceiling']:.1f}" in body[0] and "18.9" in body[0]
    assert f"{second['pct_of_ceiling']:.1f}" in body[1] and "18.5" in body[1]
    assert format_kernel_section([record], "cpu")[0].endswith("not measured on cpu (they need the GPU's profiler "
                                                              "and timers)")


def test_ceilings_in_the_results():
    cpu = ceilings_meta(torch.device("cpu"), None, None, {})
    assert cpu == {"measured": False, "why": "not measured on cpu"}
    assert ceilings_line({"ceilings": cpu}) == ("ceilings (device copy, torch.mm at the shapes' sizes): not "
                                                "measured on cpu")
    mm = MatmulRate("bfloat16", 2048, 128, 3000, False, 0.005)
    gpu = ceilings_meta(torch.device("cuda"), CopyRate(2**30, 0.55), None, {("bf16", 2048): mm, ("x", 1): None})
    assert gpu["copy"]["gbps"] == pytest.approx(2 * 2**30 / 0.55e-3 / 1e9) and len(gpu["matmul"]) == 1
    line = ceilings_line({"ceilings": gpu})
    assert "device copy 1024 MiB: 3905 GB/s" in line and "torch.mm bfloat16 2048×128×3000: 315 TFLOP/s" in line


def test_plan_refuses_the_interpreter(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit) as exit_:
        main(["--plan", "--shapes", "tiny"])
    assert exit_.value.code == 2
    assert "--plan compiles the kernels for a GPU" in capsys.readouterr().err


def test_plan_refuses_an_unknown_shape(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("--plan refuses a machine with a GPU before looking at the shapes")
    with pytest.raises(SystemExit):
        main(["--plan", "--shapes", "quick-queue"])
    assert "unknown shape(s) ['quick-queue'] for --plan" in capsys.readouterr().err


def test_ptxas_is_where_triton_keeps_it():
    pytest.importorskip("triton")
    from swav_kernels.bench.compiled import _ptxas_path, _tool

    assert shutil.which(_ptxas_path(90)) and shutil.which(_tool("cuobjdump"))


def test_plan_costs_of_a_plan_the_host_path_built():
    # a real plan (Triton's interpreter here): the cost model summed per kernel name, the backward's
    # launches only with backward=True; quick-queue: |A| = 2, N = 10 + 6, B = 6, M = 24, K = 50, D = 16
    pytest.importorskip("triton")
    from swav_kernels import loss as loss_module
    from swav_kernels.bench.host import _step
    from swav_kernels.bench.kernel_times import plan_costs
    from swav_kernels.bench.shapes import QUICK_SHAPES

    shape = QUICK_SHAPES["quick-queue"]
    flop = 2 * 50 * 16
    loss_module._PREPARED.clear()
    try:
        _step(shape, "fused", "cpu", torch.float32)()
        (plan,) = loss_module._PREPARED.values()
    finally:
        loss_module._PREPARED.clear()
    costs = plan_costs(plan, shape, torch.float32, backward=True)
    assert {name: (count, cost.flops) for name, (count, cost) in costs.items()} == {
        "_column_step_kernel": (3, 3 * 32 * flop), "_row_step_kernel": (3, 3 * 32 * flop),
        "_codes_kernel": (1, 2 * 12 * flop),  # scores and codes·C (fp32: one product) over |A|·B rows
        "_loss_forward_kernel": (1, 2 * 24 * flop), "_backward_kernel": (1, 2 * 24 * flop)}
    assert costs["_column_step_kernel"][1].rows == 32 and costs["_codes_kernel"][1].rows == 12
    assert "_backward_kernel" not in plan_costs(plan, shape, torch.float32, backward=False)


def test_kernel_breakdown_finds_the_plan_and_measures_each_ceiling_once(monkeypatch):
    # the GPU glue of runner.kernel_breakdown on the CPU: the plan the call ran (Triton's interpreter),
    # profiler events and torch.mm timings replaced by synthetic ones
    pytest.importorskip("triton")
    from swav_kernels import loss as loss_module
    from swav_kernels.bench import runner
    from swav_kernels.bench.host import _step
    from swav_kernels.bench.shapes import QUICK_SHAPES, Case

    shape = QUICK_SHAPES["quick-queue"]  # |A|·N = 32 Sinkhorn rows, |A|·B = 12, M = 24, K = 50, D = 16
    flop = 2 * 50 * 16
    events = [("_column_step_kernel", 10.0)] * 15 + [("_backward_kernel", 20.0)] * 5 + [("Memset (Device)", 1.0)] * 5
    monkeypatch.setattr(runner, "profile_device_events", lambda fn, device, calls: events)
    measured = []

    def mm(device, dtype, rows, dim, prototypes, warmup_ms, rep_ms):
        measured.append(rows)
        return MatmulRate("float32", rows, dim, prototypes, False, 1e-5)

    monkeypatch.setattr(runner, "measure_mm_rate", mm)
    settings = runner.Settings(device=torch.device("cpu"), copy_rate=CopyRate(2**30, 0.5))
    case = Case(shape, "float32", "loss", ("fwd+bwd",))
    try:
        rows = runner.kernel_breakdown(_step(shape, "fused", "cpu", torch.float32), case, "fwd+bwd", settings)
        runner.kernel_breakdown(_step(shape, "fused", "cpu", torch.float32), case, "fwd+bwd", settings)
    finally:
        loss_module._PREPARED.clear()
    column, backward, memset = rows
    assert (column["kernel"], column["launches"], column["us"]) == ("_column_step_kernel", 3, 30.0)
    assert column["flops"] == 3 * 32 * flop and column["unit"] == "TFLOP/s"
    assert column["ceiling"] == "torch.mm 32×16×50 5 TFLOP/s" and column["ceiling_rate"] == pytest.approx(
        2 * 32 * 16 * 50 / 1e-8 / 1e12)  # 5.12
    assert backward["flops"] == 2 * 24 * flop and backward["rate"] == pytest.approx(2 * 24 * flop / 20e-6 / 1e12)
    assert memset["flops"] is None
    assert measured == [32, 24]  # each size once in a run, however many rows ask for it
