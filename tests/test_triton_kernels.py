"""Each Triton primitive against its plain-PyTorch transcription (tests/kernel_oracle.py).

On CPU these run in Triton's interpreter, where tl.dot on bfloat16 operands is wrong (it multiplies
their bit patterns, so the backend refuses bfloat16 there): the kernels that multiply on tensor
cores are checked there in fp32 and fp16, and their bfloat16 cases are marked gpu (skipped with the
backend's reason without one); kernels that only stream scores run bfloat16 everywhere.
"""
import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from kernel_oracle import OracleKernels, column_potential, row_potential, sinkhorn_scores  # noqa: E402
from problems import logit_tolerance, rel_err  # noqa: E402
from swav_kernels.kernels import Codes, ColumnStats, RowStats, SinkhornRows  # noqa: E402
from swav_kernels.triton import embeddings_grad, embeddings_loss, scores_loss, sinkhorn_codes  # noqa: E402
from swav_kernels.triton import sinkhorn_column, sinkhorn_row  # noqa: E402
from swav_kernels.triton.kernels import TritonKernels  # noqa: E402

ORACLE = OracleKernels()
KERNELS = TritonKernels()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# skipped with the backend's own reason where it refuses bfloat16 (the interpreter's tl.dot)
_BF16_REFUSED = KERNELS.unavailable_reason(torch.device(DEVICE), torch.bfloat16)
GPU_BF16 = pytest.param(torch.bfloat16, id="bfloat16", marks=[
    pytest.mark.gpu, pytest.mark.skipif(_BF16_REFUSED is not None, reason=str(_BF16_REFUSED))])
DOT_DTYPES = [torch.float32, torch.float16, GPU_BF16]  # kernels with tl.dot
ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def unit(*shape, dtype=torch.float32, scale=1.0):
    return (F.normalize(torch.randn(*shape), dim=-1) * scale).to(DEVICE, dtype)


def problem(dtype, fused, queue, crops=(2, 0), n_crops=4, batch=5, prototypes=37, dim=9, scale=1.0):
    """SinkhornRows of a small problem; scores bounded by ``scale``."""
    z = unit(n_crops * batch, dim, dtype=dtype)
    c = unit(prototypes, dim, dtype=dtype, scale=scale)
    q = unit(len(crops), queue, dim, dtype=dtype) if queue else None
    if fused:
        return SinkhornRows(z, q, crops, batch, c)
    s = (z.float() @ c.float().t()).to(dtype)
    qs = None if q is None else (q.float() @ c.float().t()).to(dtype)
    return SinkhornRows(s, qs, crops, batch, None)


def to_cpu(rows):
    return SinkhornRows(*(t.cpu() if isinstance(t, torch.Tensor) else t for t in rows))


SINKHORN_CASES = [  # (fused, queue, crops, dtypes)
    (True, 7, (2, 0), DOT_DTYPES),
    (True, 0, (1,), DOT_DTYPES),
    (False, 6, (3, 1), ALL_DTYPES),
    (False, 0, (0, 1), ALL_DTYPES),
]


def sinkhorn_params():
    for fused, queue, crops, dtypes in SINKHORN_CASES:
        for dtype in dtypes:
            values = dtype.values if hasattr(dtype, "values") else (dtype,)
            marks = dtype.marks if hasattr(dtype, "marks") else ()
            yield pytest.param(fused, queue, crops, values[0], marks=marks,
                               id=f"{'fused' if fused else 'scores'}-L{queue}-A{''.join(map(str, crops))}-{values[0]}")


@pytest.mark.parametrize("fused, queue, crops, dtype", list(sinkhorn_params()))
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_column_step(fused, queue, crops, dtype, splits, scale):
    rows = problem(dtype, fused, queue, crops, scale=scale, batch=40)
    # the row step's statistics as R = 2 partials: the column step merges them as it loads them
    stats = RowStats(torch.randn(2, rows.groups, rows.rows) * 5, torch.rand(2, rows.groups, rows.rows) + 0.5)
    for row_stats in (None, stats):
        device_stats = None if row_stats is None else RowStats(*(t.to(DEVICE) for t in row_stats))
        columns = sinkhorn_column.column_step(rows, 20.0, device_stats, splits=splits)
        assert columns.max.shape[1:] == (rows.groups, 37) and 1 <= columns.max.shape[0] <= splits
        expected = ORACLE.sinkhorn_column_step(to_cpu(rows), 20.0, row_stats)
        assert rel_err(column_potential(ColumnStats(columns.max.cpu(), columns.sumexp.cpu())),
                       column_potential(expected)) <= 2e-6 * (1 + scale)


@pytest.mark.parametrize("fused, queue, crops, dtype", list(sinkhorn_params()))
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_row_step_and_codes(fused, queue, crops, dtype, scale):
    rows = problem(dtype, fused, queue, crops, scale=scale, prototypes=150 if fused else 600)  # several tiles
    oracle_stats = RowStats(torch.randn(1, rows.groups, rows.rows), torch.ones(1, rows.groups, rows.rows))
    columns = ORACLE.sinkhorn_column_step(to_cpu(rows), 20.0, oracle_stats)
    device_columns = ColumnStats(columns.max.to(DEVICE), columns.sumexp.to(DEVICE))
    x = sinkhorn_scores(to_cpu(rows))
    tolerance = logit_tolerance(x, 1 / 20.0)
    expected_potential = row_potential(ORACLE.sinkhorn_row_step(to_cpu(rows), 20.0, columns))
    for splits in (1, 3):  # prototype ranges: the readers merge the partials
        stats = sinkhorn_row.row_step(rows, 20.0, device_columns, splits=splits)
        assert stats.max.shape == (splits, rows.groups, rows.rows)
        potential = row_potential(RowStats(stats.max.cpu(), stats.sumexp.cpu()))
        assert (potential - expected_potential).abs().max() <= tolerance * expected_potential.abs().max()
    # codes: the row's log-sum-exp from the row step (any number of ranges), or from their own sweep
    for row_stats, normalize, splits in ((stats, True, 3), (stats, True, 1), (None, True, None), (None, False, 2)):
        codes = sinkhorn_codes.codes(rows, 20.0, device_columns, row_stats, normalize, splits=splits)
        expected = ORACLE.sinkhorn_codes(to_cpu(rows), 20.0, columns, None, normalize)
        assert torch.isfinite(codes.codes).all()
        assert codes.mass.shape[0] == (splits or 1)
        assert rel_err(codes.codes.cpu(), expected.codes) <= tolerance
        assert rel_err(codes.mass.cpu().sum(dim=0), expected.mass[0]) <= tolerance
        if fused:
            assert codes.projected.shape[0] == codes.mass.shape[0]
            assert rel_err(codes.projected.cpu().sum(dim=0), expected.projected[0]) <= max(tolerance,
                                                                                          TOLERANCE[dtype] / 10)
        else:
            assert codes.projected is None
        if normalize:  # the precision rule: each row sums to 1 within fp32 rounding
            assert torch.allclose(codes.codes.sum(dim=2).cpu(), torch.ones(rows.groups, rows.batch), atol=1e-5)
            assert torch.allclose(codes.mass.sum(dim=0).cpu(), torch.ones(rows.groups, rows.batch), atol=1e-5)


def test_codes_rows_sum_to_one_when_scores_dwarf_epsilon():
    # the case the CUDA row step failed on an H200: (1, 700, 65) scores × 30, 1/ε = 20
    x = (torch.randn(700, 65) * 30.0).to(DEVICE)
    rows = SinkhornRows(x, None, (0,), 700, None)
    columns = sinkhorn_column.column_step(rows, 20.0, None)
    codes = sinkhorn_codes.codes(rows, 20.0, columns, None, True)
    assert torch.isfinite(codes.codes).all()
    assert torch.allclose(codes.codes.sum(dim=2).cpu(), torch.ones(1, 700), atol=1e-5)


@pytest.mark.parametrize("dtype", DOT_DTYPES)
@pytest.mark.parametrize("rows, prototypes, dim, crops", [(4 * 9, 53, 5, (0, 1)), (3 * 40, 300, 16, (2,)),
                                                          (2 * 1, 1, 1, (1, 0)), (5 * 14, 129, 33, (4, 1, 2))])
@pytest.mark.parametrize("splits", [None, 1, 3])
def test_embeddings_loss_forward_and_backward(dtype, rows, prototypes, dim, crops, splits):
    n_crops = {36: 4, 120: 3, 2: 2, 70: 5}[rows]
    batch = rows // n_crops
    z = unit(rows, dim, dtype=dtype)
    c = unit(prototypes, dim, dtype=dtype)
    codes = torch.softmax(torch.randn(len(crops), batch, prototypes) * 3, dim=-1)
    half = prototypes // 2  # the codes' mass and projection as two partials over prototype ranges
    parts = (codes[:, :, :half], codes[:, :, half:])
    c_parts = (c.cpu().float()[:half], c.cpu().float()[half:])
    bundle = Codes(codes, torch.stack([p.sum(dim=2) for p in parts]),
                   torch.stack([p @ cp for p, cp in zip(parts, c_parts)]))
    device_bundle = Codes(*(t.to(DEVICE) for t in bundle))
    loss, lse, out = embeddings_loss.embeddings_loss(z, c, device_bundle, crops, 10.0, True, splits=splits)
    expected = ORACLE.embeddings_loss(z.cpu(), c.cpu(), bundle, crops, 10.0, True)
    for actual, wanted in zip((loss, lse, out), expected):
        assert rel_err(actual.cpu(), wanted) <= TOLERANCE[dtype]
    loss_only, lse_only, empty = embeddings_loss.embeddings_loss(z, c, device_bundle, crops, 10.0, False,
                                                                 splits=splits)
    # Without the output the kernel is compiled without softmax·C: the same sums, scheduled differently
    # (on sm_90 the last bit of lse and of the loss can move), so the two agree within float32 rounding.
    assert empty.shape == (0, dim)
    torch.testing.assert_close(lse_only, lse, rtol=4 * torch.finfo(torch.float32).eps, atol=0)
    torch.testing.assert_close(loss_only, loss, rtol=16 * torch.finfo(torch.float32).eps, atol=0)
    grad = torch.tensor(0.37, device=DEVICE)
    grad_z, grad_c = embeddings_grad.embeddings_loss_backward(grad, z, c, device_bundle, crops, 10.0, lse, out,
                                                              splits=splits)
    expected_z, expected_c = ORACLE.embeddings_loss_backward(grad.cpu(), z.cpu(), c.cpu(), bundle, crops, 10.0,
                                                             expected[1], expected[2])
    assert grad_z.dtype == dtype and grad_c.dtype == dtype
    assert rel_err(grad_z.cpu().float(), expected_z.float()) <= 5 * TOLERANCE[dtype]
    assert rel_err(grad_c.cpu().float(), expected_c.float()) <= 5 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("crops", [(0, 1), (2,), (3, 0, 1)])
@pytest.mark.parametrize("prototypes", [1, 29, 1500])
def test_scores_loss_forward_and_backward(dtype, crops, prototypes):
    n_crops, batch = 4, 3
    s = torch.randn(n_crops * batch, prototypes).to(DEVICE, dtype)
    codes = torch.rand(len(crops), batch, prototypes).to(DEVICE)  # any codes: rows need not sum to 1
    loss, lse, weight = scores_loss.scores_loss(s, codes, crops, 10.0)
    expected = ORACLE.scores_loss(s.cpu(), codes.cpu(), crops, 10.0)
    # with K = 1 the loss is 0 up to rounding: compare against the size of its terms
    assert abs(loss.item() - expected[0].item()) <= 1e-5 * (abs(expected[0].item()) + expected[1].abs().max().item())
    assert rel_err(lse.cpu(), expected[1]) <= 1e-6
    assert rel_err(weight.cpu(), expected[2]) <= 1e-6
    grad = torch.tensor(0.37, device=DEVICE)
    grad_s = scores_loss.scores_loss_backward(grad, s, codes, crops, 10.0, lse, weight)
    wanted = ORACLE.scores_loss_backward(grad.cpu(), s.cpu(), codes.cpu(), crops, 10.0, expected[1], expected[2])
    assert grad_s.dtype == dtype
    assert rel_err(grad_s.cpu().float(), wanted.float()) <= TOLERANCE[dtype]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["batch", "queue", "prototypes"])
@pytest.mark.parametrize("fused", [True, False])
def test_sinkhorn_codes_are_nan_for_non_finite_inputs(value, where, fused):
    if where == "prototypes" and not fused:
        pytest.skip("the scores path has no prototypes")
    rows = problem(torch.float32, fused, 4, (0, 1))
    tensor = {"batch": rows.main, "queue": rows.queue, "prototypes": rows.prototypes}[where]
    tensor.view(-1)[3] = value  # a row of group 0 (crop 0, or its queue), or a prototype
    columns = sinkhorn_column.column_step(rows, 20.0, None)
    stats = sinkhorn_row.row_step(rows, 20.0, columns)
    columns = sinkhorn_column.column_step(rows, 20.0, stats)
    codes = sinkhorn_codes.codes(rows, 20.0, columns, sinkhorn_row.row_step(rows, 20.0, columns) if fused else None,
                                 True)
    poisoned = slice(None) if where == "prototypes" else slice(0, 1)  # the groups are separate problems
    assert torch.isnan(codes.codes[poisoned]).all() and torch.isnan(codes.mass[:, poisoned]).all()
    if where != "prototypes":
        assert torch.isfinite(codes.codes[1:]).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_losses_are_nan_for_non_finite_inputs(value):
    z, c = unit(8, 6), unit(11, 6)
    codes = torch.softmax(torch.randn(2, 2, 11), dim=-1).to(DEVICE)
    bundle = Codes(codes, codes.sum(dim=2)[None], (codes @ c)[None])
    bad_z = z.clone()
    bad_z[5, 2] = value  # a row no codes come from (crop 2)
    assert torch.isnan(embeddings_loss.embeddings_loss(bad_z, c, bundle, (0, 1), 10.0, True)[0])
    s = z @ c.t()
    for bad in ("scores", "codes"):
        s_bad, codes_bad = s.clone(), codes.clone()
        (s_bad if bad == "scores" else codes_bad).view(-1)[5] = value
        assert torch.isnan(scores_loss.scores_loss(s_bad, codes_bad, (0, 1), 10.0)[0])


def zeros(*shape, **kwargs):
    return torch.zeros(*shape, device=DEVICE, **kwargs)


ROWS = SinkhornRows(zeros(6, 7), None, (0, 1), 3, None)
FUSED = SinkhornRows(zeros(6, 4), zeros(2, 2, 4), (0, 1), 3, zeros(7, 4))
STATS = ColumnStats(zeros(1, 2, 7), zeros(1, 2, 7))
BUNDLE = Codes(zeros(2, 3, 5), zeros(1, 2, 3), zeros(1, 2, 3, 4))


@pytest.mark.parametrize("call, error, message", [
    (lambda: KERNELS.sinkhorn_column_step(ROWS._replace(main=ROWS.main.double()), 1.0, None), TypeError,
     "rows.main must be float32, float16 or bfloat16 for the Triton kernels, got torch.float64"),
    (lambda: KERNELS.sinkhorn_column_step(ROWS._replace(main=zeros(7, 6).t()), 1.0, None), ValueError,
     "rows.main must be contiguous"),
    (lambda: KERNELS.sinkhorn_column_step(ROWS._replace(batch=4), 1.0, None), ValueError,
     "rows.batch must be >= 1 and divide the 6 rows"),
    (lambda: KERNELS.sinkhorn_column_step(ROWS._replace(crops=(0, 2)), 1.0, None), ValueError,
     r"crops must list distinct crop indices in \[0, 2\)"),
    (lambda: KERNELS.sinkhorn_column_step(ROWS._replace(main=zeros(27, 7), batch=3, crops=tuple(range(8, 0, -1))),
                                          1.0, None), ValueError, "at most 7 assign crops"),
    (lambda: KERNELS.sinkhorn_column_step(FUSED._replace(queue=zeros(2, 2, 5)), 1.0, None), ValueError,
     r"rows.queue must have shape \(2, 2, 4\)"),
    (lambda: KERNELS.sinkhorn_column_step(FUSED._replace(prototypes=zeros(7, 4).half()), 1.0, None), TypeError,
     "rows.prototypes must be torch.float32"),
    (lambda: KERNELS.sinkhorn_column_step(ROWS, 1.0, RowStats(zeros(1, 2, 4), zeros(1, 2, 4))), ValueError,
     r"row_stats.max must have shape \(1, 2, 3\)"),
    (lambda: KERNELS.sinkhorn_column_step(ROWS, 0.0, None), ValueError, "inv_eps must be a finite number > 0"),
    (lambda: KERNELS.sinkhorn_row_step(ROWS, 1.0, ColumnStats(zeros(1, 2, 6), zeros(1, 2, 6))), ValueError,
     r"columns.max must have shape \(1, 2, 7\)"),
    (lambda: KERNELS.sinkhorn_codes(ROWS, 1.0, ColumnStats(STATS.max, zeros(1, 2, 7).half()), None, True), TypeError,
     "columns.sumexp must be torch.float32"),
    (lambda: KERNELS.sinkhorn_codes(ROWS, 1.0, STATS, RowStats(zeros(1, 2, 3), zeros(1, 2, 3)), False), ValueError,
     "pass normalize_rows=True"),
    (lambda: KERNELS.embeddings_loss(zeros(6, 4), zeros(5, 4).half(), BUNDLE, (0, 1), 1.0, True), TypeError,
     "c must be torch.float32"),
    (lambda: KERNELS.embeddings_loss(zeros(6, 4), zeros(5, 3), BUNDLE, (0, 1), 1.0, True), ValueError,
     r"c must have shape \(K, D=4\)"),
    (lambda: KERNELS.embeddings_loss(zeros(6, 4), zeros(5, 4), BUNDLE._replace(mass=zeros(1, 2, 2)), (0, 1), 1.0,
                                     True), ValueError, r"codes.mass must have shape \(1, 2, 3\)"),
    (lambda: KERNELS.embeddings_loss(zeros(6, 4), zeros(5, 4), BUNDLE._replace(projected=zeros(2, 2, 3, 4)), (0, 1),
                                     1.0, True), ValueError, r"codes.projected must have shape \(1, 2, 3, 4\)"),
    (lambda: KERNELS.embeddings_loss(zeros(6, 4), zeros(5, 4), BUNDLE, (0,), 1.0, True), ValueError,
     "crops names 1 crops but codes.codes holds 2"),
    (lambda: KERNELS.embeddings_loss_backward(zeros(2), zeros(6, 4), zeros(5, 4), BUNDLE, (0, 1), 1.0, zeros(6),
                                              zeros(6, 4)), TypeError, "grad must be a one-element float32 tensor"),
    (lambda: KERNELS.embeddings_loss_backward(zeros(()), zeros(6, 4), zeros(5, 4), BUNDLE, (0, 1), 1.0, zeros(5),
                                              zeros(6, 4)), ValueError, r"lse must have shape \(6,\)"),
    (lambda: KERNELS.scores_loss(zeros(6, 5), zeros(2, 4, 5), (0, 1), 1.0), ValueError, "codes must have shape"),
    (lambda: KERNELS.scores_loss(zeros(6, 5), zeros(2, 3, 5), (0, 3), 1.0), ValueError,
     r"crops must list distinct crop indices in \[0, 2\)"),
    (lambda: KERNELS.scores_loss(zeros(0, 5), zeros(2, 3, 5), (0, 1), 1.0), ValueError, "s must not be empty"),
    (lambda: KERNELS.scores_loss_backward(zeros(()), zeros(6, 5), zeros(2, 3, 5), (0, 1), 1.0, zeros(6), zeros(5)),
     ValueError, r"weight must have shape \(6,\)"),
])
def test_kernels_reject_bad_tensors_before_launch(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_unavailable_reasons():
    from swav_kernels.triton.launch import interpreting

    assert "float64" in KERNELS.unavailable_reason(torch.device(DEVICE), torch.float64)
    assert KERNELS.unavailable_reason(torch.device(DEVICE), torch.float32) is None
    assert KERNELS.unavailable_reason(torch.device(DEVICE), torch.float16) is None
    bf16 = KERNELS.unavailable_reason(torch.device(DEVICE), torch.bfloat16)
    if interpreting():  # the interpreter's tl.dot multiplies bfloat16 bit patterns: refused, with what works
        assert "TRITON_INTERPRET=1" in bf16 and "tl.dot on bfloat16" in bf16
        assert "float32 or float16" in bf16 and "CUDA GPU" in bf16
    else:
        assert bf16 is None


def test_the_interpreter_still_gets_bfloat16_dots_wrong():
    """Why the backend refuses bfloat16 under the interpreter (the reason above): the fused column
    step, whose scores come from tl.dot, is far off in bfloat16 and right in float16 on the same
    values. When this fails, Triton's interpreter has learnt bfloat16 dots: lift the refusal."""
    from swav_kernels.triton.launch import interpreting

    if not interpreting():
        pytest.skip("checks Triton's interpreter (TRITON_INTERPRET=1)")
    bf16 = problem(torch.bfloat16, True, 7, (2, 0))  # bfloat16 values of unit rows: exact in float16 too
    as_dtype = {dtype: bf16._replace(main=bf16.main.to(dtype), queue=bf16.queue.to(dtype),
                                     prototypes=bf16.prototypes.to(dtype))
                for dtype in (torch.float32, torch.float16, torch.bfloat16)}
    expected = column_potential(ORACLE.sinkhorn_column_step(to_cpu(as_dtype[torch.float32]), 20.0, None))
    errors = {dtype: rel_err(column_potential(sinkhorn_column.column_step(as_dtype[dtype], 20.0, None)), expected)
              for dtype in (torch.float16, torch.bfloat16)}
    assert errors[torch.float16] <= 1e-5, errors
    assert errors[torch.bfloat16] > 1.0, errors


def test_column_potential_merges_partials_exactly():
    rows = problem(torch.float32, False, 0, (0, 1), batch=200)
    one = sinkhorn_column.column_step(rows, 20.0, None, splits=1)
    four = sinkhorn_column.column_step(rows, 20.0, None, splits=4)
    assert four.max.shape[0] > 1
    assert rel_err(column_potential(four), column_potential(one)) <= 1e-6
    assert math.isclose(row_potential(sinkhorn_row.row_step(rows, 20.0, four))[0, 0].item(),
                        row_potential(sinkhorn_row.row_step(rows, 20.0, one))[0, 0].item(), rel_tol=1e-6)


@pytest.mark.parametrize("length, batch, crops", [(7, 3, (0, 2)), (8, 4, (1, 0)), (2, 5, (3,)), (64, 16, (0, 1))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_queue_shift_equals_the_reference_shift(length, batch, crops, dtype):
    from swav_kernels.backend import Backend
    from swav_kernels.triton.queue_shift import shift_queue

    embeddings = torch.randn(4 * batch, 40).to(DEVICE, dtype)
    queue = torch.randn(len(crops), length, 40).to(DEVICE, dtype)
    expected = queue.clone()
    Backend().shift_queue(expected, embeddings, crops, batch)  # facebookresearch/swav's two-step update
    shift_queue(queue, embeddings, crops, batch)
    assert torch.equal(queue, expected)


@pytest.fixture
def narrow_accumulators(monkeypatch):
    """Tile tables whose codes, loss-forward and backward programs each hold 16 columns of their (rows × D)
    accumulator (``Tiles.block_out``): a D = 33 problem splits its width over 4 programs, the last all padding."""
    from swav_kernels.triton import tiles

    for table in (tiles.SM80, tiles.SM90):
        for key, entry in list(table.items()):
            if key[0] in ("codes", "forward", "backward"):
                monkeypatch.setitem(table, key, (*entry[:4], 16))


@pytest.fixture
def chunked_scores(monkeypatch):
    """Tile tables whose Sinkhorn steps, codes, loss forward and backward take the scores product 16 columns of D
    at a time (``Tiles.block_dk``): a D = 33 problem in 4 chunks, the last all padding."""
    from swav_kernels.triton import tiles

    for table, chunks in ((tiles.SM80, tiles.SM80_SCORES_CHUNK), (tiles.SM90, tiles.SM90_SCORES_CHUNK)):
        for key in table:
            if key[0] in ("column", "row", "codes", "forward", "backward"):
                monkeypatch.setitem(chunks, key, 16)


@pytest.fixture
def transposed_backward(monkeypatch):
    """Tile tables whose backward scores (prototypes × rows) in every mode (``Tiles.transposed``)."""
    from swav_kernels.triton import tiles

    for table, transposed in ((tiles.SM80, tiles.SM80_TRANSPOSED), (tiles.SM90, tiles.SM90_TRANSPOSED)):
        monkeypatch.setattr(tiles, "SM80_TRANSPOSED" if table is tiles.SM80 else "SM90_TRANSPOSED",
                            transposed | {key for key in table if key[0] == "backward"})


@pytest.mark.parametrize("dtype", DOT_DTYPES)
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("tables", [["narrow_accumulators"], ["chunked_scores"], ["transposed_backward"],
                                    ["narrow_accumulators", "chunked_scores", "transposed_backward"]])
def test_accumulators_split_across_the_width(dtype, splits, tables, request):
    z, c = unit(5 * 14, 33, dtype=dtype), unit(129, 33, dtype=dtype)
    crops = (4, 1, 2)
    rows = SinkhornRows(z, None, crops, 14, c)
    columns = sinkhorn_column.column_step(rows, 20.0, None)
    stats = sinkhorn_row.row_step(rows, 20.0, columns)
    whole = [sinkhorn_codes.codes(rows, 20.0, columns, stats, True, splits=splits)]
    whole += embeddings_loss.embeddings_loss(z, c, whole[0], crops, 10.0, True, splits=splits)
    grad = torch.tensor(0.37, device=DEVICE)
    whole += embeddings_grad.embeddings_loss_backward(grad, z, c, whole[0], crops, 10.0, *whole[2:4], splits=splits)

    for fixture in tables:
        request.getfixturevalue(fixture)
    tiles = embeddings_loss.LossForwardShape.of(70, 33, 129, 3, 14, dtype, z.device, True).tiles
    assert (tiles.width_splits, tiles.scores_chunk) == ((4 if "narrow_accumulators" in tables else 1),
                                                         (16 if "chunked_scores" in tables else 64))
    chunked = "chunked_scores" in tables
    if "transposed_backward" in tables:
        assert embeddings_grad.BackwardShape.of(70, 33, 129, 3, 14, dtype, z.device).tiles.transposed
    again = sinkhorn_column.column_step(rows, 20.0, None)
    assert rel_err(column_potential(again), column_potential(columns)) <= (1e-6 if chunked else 0.0)
    stats = sinkhorn_row.row_step(rows, 20.0, columns)
    codes = sinkhorn_codes.codes(rows, 20.0, columns, stats, True, splits=splits)
    # the scores of every part are the same tile products: codes and mass are the unsplit ones, bit for bit
    # (with the scores in chunks, the same within float32 rounding)
    close = 1e-5 if chunked else 1e-6  # accumulators: another order of the same products
    same = (lambda a, b: rel_err(a.cpu(), b.cpu()) <= close) if chunked else torch.equal
    assert same(codes.codes, whole[0].codes) and same(codes.mass, whole[0].mass)
    assert rel_err(codes.projected.cpu(), whole[0].projected.cpu()) <= close
    assert torch.allclose(codes.codes.sum(dim=2).cpu(), torch.ones(rows.groups, rows.batch), atol=1e-5)
    loss, lse, out = embeddings_loss.embeddings_loss(z, c, codes, crops, 10.0, True, splits=splits)
    assert same(lse, whole[2])
    assert rel_err(out.cpu(), whole[3].cpu()) <= close and rel_err(loss.cpu(), whole[1].cpu()) <= close
    grad_z, grad_c = embeddings_grad.embeddings_loss_backward(grad, z, c, codes, crops, 10.0, lse, out, splits=splits)
    expected = ORACLE.embeddings_loss_backward(grad.cpu(), z.cpu(), c.cpu(), to_cpu_codes(codes), crops, 10.0,
                                               lse.cpu(), out.cpu())
    assert rel_err(grad_c.cpu().float(), whole[5].cpu().float()) <= 1e-3 * (dtype != torch.float32) + close
    assert rel_err(grad_c.cpu().float(), expected[1].float()) <= 5 * TOLERANCE[dtype]
    assert rel_err(grad_z.cpu().float(), expected[0].float()) <= 5 * TOLERANCE[dtype]


def to_cpu_codes(codes):
    return Codes(*(t.cpu() for t in codes))


def test_row_step_and_codes_score_in_the_same_chunks():
    # DESIGN's precision rule: the codes recompute the row step's u by the same instructions
    from swav_kernels.triton import tiles

    for chunks in (tiles.SM80_SCORES_CHUNK, tiles.SM90_SCORES_CHUNK):
        for operands in ("16bit", "tf32", "tf32x3"):
            for width in (128, 256):
                assert chunks.get(("row", operands, width), 0) == chunks.get(("codes", operands, width), 0)
