"""swav_kernels.compat.dinov2 against a float64 transcription of DINOv2's
dinov2/loss/dino_clstoken_loss.py and dinov2/loss/ibot_patch_loss.py
(``sinkhorn_knopp_teacher``), one process (their all_reduce calls are identities)."""
import sys
import types

import pytest
import torch

from multiprocess import run_in_processes
from problems import logit_tolerance, rel_err
from swav_kernels.compat import dinov2 as adapter


# ---- transcription ------------------------------------------------------------------------
def transcribed_teacher(teacher_output, teacher_temp, n_iterations=3, n_masked_patches=None):
    """DINOLoss.sinkhorn_knopp_teacher; with ``n_masked_patches`` the iBOT variant (B given)."""
    Q = torch.exp(teacher_output / teacher_temp).t()
    B = Q.shape[1] if n_masked_patches is None else n_masked_patches
    K = Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(n_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def logits(rows, prototypes, scale=1.0, seed=0):
    return torch.randn(rows, prototypes, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("n_iterations", [0, 3])
@pytest.mark.parametrize("rows, prototypes, scale", [(8, 300, 1.0), (6, 65536, 1.0), (8, 300, 10.0), (1, 9, 1.0),
                                                     (5, 1, 1.0)])
def test_teacher_codes_equal_the_transcription(rows, prototypes, scale, n_iterations):
    x = logits(rows, prototypes, scale)  # scale 10 at temp 0.07: DINOv2's float32 exp overflows
    codes = adapter.sinkhorn_knopp_teacher(x, teacher_temp=0.07, n_iterations=n_iterations)
    assert codes.shape == x.shape and codes.dtype == torch.float32 and torch.isfinite(codes).all()
    expected = transcribed_teacher(x.double(), 0.07, n_iterations)
    assert rel_err(codes, expected) <= logit_tolerance(x, 0.07)


def test_teacher_codes_are_float32_for_half_inputs():
    x = logits(4, 50).bfloat16()
    codes = adapter.sinkhorn_knopp_teacher(x, 0.1)
    assert codes.dtype == torch.float32
    assert rel_err(codes, transcribed_teacher(x.double(), 0.1)) <= 1e-5


@pytest.mark.parametrize("n_iterations", [0, 3])
def test_ibot_codes_equal_the_transcription(n_iterations):
    x = logits(7, 40)
    n_masked = torch.tensor([5])  # fewer than the rows: only the n_iterations=0 scale sees it
    codes = adapter.ibot_sinkhorn_knopp_teacher(x, 0.07, n_masked, n_iterations)
    assert codes.dtype == torch.float32 and n_masked.item() == 5  # the caller's count is left alone
    assert rel_err(codes, transcribed_teacher(x.double(), 0.07, n_iterations, n_masked_patches=5)) <= 1e-5


def test_patch_and_unpatch(monkeypatch):
    names = ["dinov2", "dinov2.loss", "dinov2.loss.dino_clstoken_loss", "dinov2.loss.ibot_patch_loss"]
    modules = {name: types.ModuleType(name) for name in names}

    def dino_method(self, teacher_output, teacher_temp, n_iterations=3):
        return transcribed_teacher(teacher_output.float(), teacher_temp, n_iterations)

    def ibot_method(self, teacher_output, teacher_temp, n_masked_patches_tensor, n_iterations=3):
        return transcribed_teacher(teacher_output.float(), teacher_temp, n_iterations, n_masked_patches_tensor)

    DINOLoss = type("DINOLoss", (torch.nn.Module,), {"sinkhorn_knopp_teacher": dino_method})
    iBOTPatchLoss = type("iBOTPatchLoss", (torch.nn.Module,), {"sinkhorn_knopp_teacher": ibot_method})
    modules["dinov2.loss.dino_clstoken_loss"].DINOLoss = DINOLoss
    modules["dinov2.loss.ibot_patch_loss"].iBOTPatchLoss = iBOTPatchLoss
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    dino, ibot = DINOLoss(), iBOTPatchLoss()
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
    assert DINOLoss.sinkhorn_knopp_teacher is dino_method and iBOTPatchLoss.sinkhorn_knopp_teacher is ibot_method


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
        assert rel_err(expected_patches, transcribed_teacher(patches.double(), 0.07, n)) <= 1e-5
