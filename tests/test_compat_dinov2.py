"""swav_kernels.compat.dinov2 against DINOv2's own ``sinkhorn_knopp_teacher`` methods of
``dinov2/loss/dino_clstoken_loss.py`` (``DINOLoss``) and ``dinov2/loss/ibot_patch_loss.py``
(``iBOTPatchLoss``) (dinov2 0.0.1.dev2, ``pip install --no-deps dinov2==0.0.1.dev2``;
loaded by ``compat_upstream``: skipped without it, a failure in CI), one process.

DINOv2 casts the logits to float32 first; to evaluate its code in float64 too, it is given a
float64 tensor whose ``.float()`` keeps float64 (``in_float64``). Tolerances (``rel_err``:
max abs error / max abs expected): ``logit_tolerance`` (DINOv2's logits are unbounded, and
the float32 rounding of x/ε, a few ulp of max|x|/ε, becomes a relative error of exp), at
least 1e-5, against DINOv2 in float64 and against DINOv2 in float32 where its float32 exp
does not overflow.
"""
import os
import sys
import tempfile
import types

import pytest
import torch
import torch.distributed as dist

from compat_upstream import assert_like_upstream, upstream
from multiprocess import run_in_processes
from problems import logit_tolerance, rel_err
from swav_kernels.compat import dinov2 as adapter


@pytest.fixture
def dinov2():
    """DINOv2's loss classes: ``.DINOLoss``, ``.iBOTPatchLoss``."""
    modules = upstream("dinov2")
    return types.SimpleNamespace(DINOLoss=modules["dinov2.loss.dino_clstoken_loss"].DINOLoss,
                                 iBOTPatchLoss=modules["dinov2.loss.ibot_patch_loss"].iBOTPatchLoss, modules=modules)


@pytest.fixture
def one_rank():
    """A one-rank gloo group: iBOTPatchLoss.sinkhorn_knopp_teacher all-reduces its count
    without checking that torch.distributed is initialised."""
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'init')}", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


class _KeepsFloat64(torch.Tensor):
    def float(self):
        return self


def in_float64(method, teacher_output, *args):
    """DINOv2's ``method`` evaluated in float64 (its first step, ``teacher_output.float()``, keeps float64)."""
    codes = method(teacher_output.double().as_subclass(_KeepsFloat64), *args)
    return codes.as_subclass(torch.Tensor)


def logits(rows, prototypes, scale=1.0, seed=0):
    return torch.randn(rows, prototypes, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("n_iterations", [0, 3])
@pytest.mark.parametrize("rows, prototypes, scale", [(8, 300, 1.0), (6, 65536, 1.0), (8, 300, 10.0), (1, 9, 1.0),
                                                     (5, 1, 1.0)])
def test_teacher_codes_equal_dinov2(dinov2, rows, prototypes, scale, n_iterations):
    x = logits(rows, prototypes, scale)
    codes = adapter.sinkhorn_knopp_teacher(x, teacher_temp=0.07, n_iterations=n_iterations)
    assert codes.shape == x.shape and codes.dtype == torch.float32 and torch.isfinite(codes).all()
    theirs = dinov2.DINOLoss(prototypes)
    tolerance = logit_tolerance(x, 0.07)
    expected = in_float64(theirs.sinkhorn_knopp_teacher, x, 0.07, n_iterations)
    assert expected.dtype == torch.float64 and rel_err(codes, expected) <= tolerance
    expected32 = theirs.sinkhorn_knopp_teacher(x, 0.07, n_iterations)
    assert expected32.dtype == torch.float32
    if scale > 1:  # logits up to ~40 at temp 0.07: DINOv2's float32 exp overflows
        assert torch.isnan(expected32).any()
    else:
        assert rel_err(codes, expected32) <= tolerance


def test_teacher_codes_are_float32_for_half_inputs(dinov2):
    x = logits(4, 50).bfloat16()
    codes = adapter.sinkhorn_knopp_teacher(x, 0.1)
    expected = dinov2.DINOLoss(50).sinkhorn_knopp_teacher(x, 0.1)
    assert codes.dtype == expected.dtype == torch.float32
    assert rel_err(codes, expected) <= 1e-5


@pytest.mark.parametrize("n_iterations", [0, 3])
def test_ibot_codes_equal_dinov2(dinov2, one_rank, n_iterations):
    x = logits(7, 40)
    n_masked = torch.tensor([5])  # fewer than the rows: only the n_iterations=0 scale sees it
    codes = adapter.ibot_sinkhorn_knopp_teacher(x, 0.07, n_masked, n_iterations)
    assert codes.dtype == torch.float32 and n_masked.item() == 5  # the caller's count is left alone
    theirs = dinov2.iBOTPatchLoss(40).sinkhorn_knopp_teacher
    assert rel_err(codes, in_float64(theirs, x, 0.07, n_masked.clone(), n_iterations)) <= 1e-5
    assert rel_err(codes, theirs(x, 0.07, n_masked.clone(), n_iterations)) <= 1e-5


def test_patch_and_unpatch(dinov2, monkeypatch):
    for name, module in dinov2.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    dino_method = dinov2.DINOLoss.sinkhorn_knopp_teacher
    ibot_method = dinov2.iBOTPatchLoss.sinkhorn_knopp_teacher
    dino, ibot = dinov2.DINOLoss(30), dinov2.iBOTPatchLoss(30)
    x = logits(6, 30, scale=10.0)
    assert torch.isnan(dino.sinkhorn_knopp_teacher(x, 0.07)).any()  # DINOv2's code overflows here
    try:
        assert adapter.patch() is True
        assert torch.equal(dino.sinkhorn_knopp_teacher(x, 0.07), adapter.sinkhorn_knopp_teacher(x, 0.07))
        n_masked = torch.tensor([6])
        assert torch.equal(ibot.sinkhorn_knopp_teacher(x, 0.07, n_masked, n_iterations=0),
                           adapter.ibot_sinkhorn_knopp_teacher(x, 0.07, n_masked, 0))
    finally:
        assert adapter.unpatch() is True
    assert dinov2.DINOLoss.sinkhorn_knopp_teacher is dino_method
    assert dinov2.iBOTPatchLoss.sinkhorn_knopp_teacher is ibot_method


# ---- non-finite inputs: non-finite codes, as in DINOv2; check_finite_inputs=True raises ------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_inputs_give_nonfinite_codes_or_raise_when_checked(value):
    x = logits(6, 30)
    x[2, 3] = value
    for n_iterations in (0, 3):
        assert not torch.isfinite(adapter.sinkhorn_knopp_teacher(x, 0.07, n_iterations)).all()
        assert not torch.isfinite(adapter.ibot_sinkhorn_knopp_teacher(x, 0.07, torch.tensor([6]), n_iterations)).all()
        count = torch.tensor([value])  # a floating-point count: DINOv2 divides and multiplies by it
        assert not torch.isfinite(adapter.ibot_sinkhorn_knopp_teacher(logits(6, 30), 0.07, count, n_iterations)).all()
    with pytest.raises(ValueError, match="teacher_output contains NaN or infinite"):
        adapter.sinkhorn_knopp_teacher(x, 0.07, check_finite_inputs=True)
    with pytest.raises(ValueError, match="teacher_output contains NaN or infinite"):
        adapter.ibot_sinkhorn_knopp_teacher(x, 0.07, torch.tensor([6]), check_finite_inputs=True)
    with pytest.raises(ValueError, match="n_masked_patches_tensor contains NaN or infinite"):
        adapter.ibot_sinkhorn_knopp_teacher(logits(6, 30), 0.07, torch.tensor([value]), check_finite_inputs=True)


@pytest.mark.parametrize("n_iterations", [0, 3])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_inputs_like_dinov2(dinov2, one_rank, value, n_iterations):
    """NaN codes where DINOv2's are NaN, ±inf or (a -inf logit is a zero weight) finite: the
    project's policy for non-finite inputs."""
    x = logits(6, 30)
    x[2, 3] = value
    tolerance = logit_tolerance(logits(6, 30), 0.07)
    assert_like_upstream(adapter.sinkhorn_knopp_teacher(x, 0.07, n_iterations),
                         dinov2.DINOLoss(30).sinkhorn_knopp_teacher(x, 0.07, n_iterations), tolerance)
    ibot = dinov2.iBOTPatchLoss(30).sinkhorn_knopp_teacher
    assert_like_upstream(adapter.ibot_sinkhorn_knopp_teacher(x, 0.07, torch.tensor([6]), n_iterations),
                         ibot(x, 0.07, torch.tensor([6]), n_iterations), tolerance)
    clean = logits(6, 30)
    assert_like_upstream(adapter.ibot_sinkhorn_knopp_teacher(clean, 0.07, torch.tensor([value]), n_iterations),
                         ibot(clean, 0.07, torch.tensor([value]), n_iterations), tolerance)


# ---- two gloo ranks equal one process on the concatenated rows ------------------------------
WORLD = 2
CLS_ROWS, PATCH_ROWS = 4, (3, 8)  # CLS rows per rank; masked patches on rank 0 and rank 1


def rank_run(rank, world_size):
    cls = logits(CLS_ROWS * WORLD, 33, seed=1)[rank * CLS_ROWS:(rank + 1) * CLS_ROWS]
    start = sum(PATCH_ROWS[:rank])
    patches = logits(sum(PATCH_ROWS), 17, seed=2)[start:start + PATCH_ROWS[rank]]
    n_masked = torch.tensor([PATCH_ROWS[rank]])
    return {n: (adapter.sinkhorn_knopp_teacher(cls, 0.07, n),
                adapter.ibot_sinkhorn_knopp_teacher(patches, 0.07, n_masked, n),
                n_masked.clone())
            for n in (0, 3)}


def test_two_ranks_equal_one_process():
    ranks = run_in_processes(rank_run, WORLD)
    cls, patches = logits(CLS_ROWS * WORLD, 33, seed=1), logits(sum(PATCH_ROWS), 17, seed=2)
    for n in (0, 3):
        expected_cls = adapter.sinkhorn_knopp_teacher(cls, 0.07, n)
        expected_patches = adapter.ibot_sinkhorn_knopp_teacher(patches, 0.07, torch.tensor([sum(PATCH_ROWS)]), n)
        assert rel_err(torch.cat([r[n][0] for r in ranks]), expected_cls) <= 1e-5
        assert rel_err(torch.cat([r[n][1] for r in ranks]), expected_patches) <= 1e-5
        assert [r[n][2].item() for r in ranks] == list(PATCH_ROWS)
