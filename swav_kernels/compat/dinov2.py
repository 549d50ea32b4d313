"""Drop-in for DINOv2's Sinkhorn-Knopp centring (``dinov2/loss/dino_clstoken_loss.py``,
``dinov2/loss/ibot_patch_loss.py``).

- ``sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations=3)``: ``DINOLoss``'s
  method; one joint Sinkhorn over the rows of both global crops ``(2·B, K)`` with
  ``ε = teacher_temp``; K up to 131072 and logits not bounded (the original's
  ``exp(logits/teacher_temp)`` overflows float32 once a logit exceeds ~88·teacher_temp,
  e.g. 6.2 at 0.07; this one cannot).
- ``ibot_sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_masked_patches_tensor,
  n_iterations=3)``: ``iBOTPatchLoss``'s method over the masked patches; every rank may hold
  a different number of rows. ``n_masked_patches_tensor`` (this rank's count) only scales
  the codes when ``n_iterations=0`` (with iterations the rows sum to 1 whatever it is).

Both return float32 codes ``(N, K)`` and reduce over every rank when torch.distributed is
initialised. NaN or ±inf in ``teacher_output`` (or in a floating-point
``n_masked_patches_tensor``) gives non-finite codes, as in DINOv2 (no check, no host sync);
``check_finite_inputs=True`` (keyword only) raises ValueError naming the input instead (one
host sync per call). Differences, deliberate: ``n_masked_patches_tensor`` is not all-reduced in
place (the original sums the caller's tensor over ranks as a side effect), and without
torch.distributed no collective is called (the original's iBOT method fails there).

``patch()`` makes DINOv2's ``DINOLoss.sinkhorn_knopp_teacher`` and
``iBOTPatchLoss.sinkhorn_knopp_teacher`` run through swav_kernels; ``unpatch()`` restores them.

Where each entry point works, and what it was tested against (torch 2.14.1):

- The drop-ins work everywhere (they import nothing of DINOv2). They are compared with DINOv2
  0.0.1.dev2's own ``dinov2/loss/dino_clstoken_loss.py`` and ``ibot_patch_loss.py``, loaded
  directly as files from the installed package (tests/compat_upstream.py).
- ``patch()`` imports DINOv2's package (``dinov2.loss.*``). Tested with dinov2 0.0.1.dev2
  installed by ``pip install --no-deps dinov2==0.0.1.dev2``: its loss package imports torch only
  and the patched ``DINOLoss`` gives the drop-in's codes (within 2.4e-7 of DINOv2's own on
  16 × 64 logits). With its requirements pip would replace torch (they pin torch 2.0.0 and
  xformers 0.0.18). Its errors say whether DINOv2 is missing or installed with a failing import
  (quoting that import's error), and name the drop-ins.
"""
from __future__ import annotations

import torch

from ..distributed import all_reduce_sum_, global_row_count
from ..loss import sinkhorn
from ..validation import check_iterations, check_positive_float, check_tensor
from ._common import check_inputs_finite, check_scores, default_process_group
from ._patching import Patch, Trainer, import_trainer

__all__ = ["sinkhorn_knopp_teacher", "ibot_sinkhorn_knopp_teacher", "patch", "unpatch"]


def _check_arguments(teacher_output, teacher_temp, n_iterations) -> None:
    """DINOv2's arguments, named as in its methods."""
    check_scores("teacher_output", teacher_output)
    check_positive_float("teacher_temp", teacher_temp)
    check_iterations("n_iterations", n_iterations)


@torch.no_grad()
def sinkhorn_knopp_teacher(
    teacher_output: torch.Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    *,
    process_group=None,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> torch.Tensor:
    """Codes ``(N, K)`` float32 of the teacher's ``(N, K)`` logits, ``ε = teacher_temp``.

    ``process_group``: None reduces over the default group when torch.distributed is
    initialised. ``check_finite_inputs``: raise ValueError if ``teacher_output`` holds NaN
    or ±inf (one host sync); by default the codes are then non-finite, as in DINOv2."""
    _check_arguments(teacher_output, teacher_temp, n_iterations)
    check_inputs_finite(check_finite_inputs, {"teacher_output": teacher_output})
    return sinkhorn(teacher_output.float(), epsilon=teacher_temp, iterations=n_iterations,
                    process_group=default_process_group(process_group), backend=backend,
                    check_finite_inputs=False)


@torch.no_grad()
def ibot_sinkhorn_knopp_teacher(
    teacher_output: torch.Tensor,
    teacher_temp: float,
    n_masked_patches_tensor: torch.Tensor,
    n_iterations: int = 3,
    *,
    process_group=None,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> torch.Tensor:
    """Codes ``(M, K)`` float32 of this rank's ``(M, K)`` masked-patch logits (M may differ
    per rank). With ``n_iterations=0`` the codes are ``exp(x/ε) / Σ exp(x/ε)`` summed over
    ranks, times the sum over ranks of ``n_masked_patches_tensor``, as in DINOv2.
    ``check_finite_inputs``: raise ValueError if ``teacher_output`` or
    ``n_masked_patches_tensor`` holds NaN or ±inf (one host sync); by default the codes are
    then NaN (DINOv2's are NaN or ±inf, or finite for a -inf logit)."""
    _check_arguments(teacher_output, teacher_temp, n_iterations)
    if not isinstance(n_masked_patches_tensor, torch.Tensor) or n_masked_patches_tensor.dtype == torch.bool \
            or n_masked_patches_tensor.is_complex():
        raise TypeError("n_masked_patches_tensor must be a real torch.Tensor holding this rank's count of masked "
                        f"patches, got {type(n_masked_patches_tensor).__name__}"
                        + (f" of {n_masked_patches_tensor.dtype}" if isinstance(n_masked_patches_tensor, torch.Tensor)
                           else ""))
    if check_finite_inputs:  # one stack of flags, so the count joins the logits' device
        check_inputs_finite(True, {"teacher_output": teacher_output,
                                   "n_masked_patches_tensor": n_masked_patches_tensor.to(teacher_output.device)})
    group = default_process_group(process_group)
    codes = sinkhorn(teacher_output.float(), epsilon=teacher_temp, iterations=n_iterations,
                     process_group=group, backend=backend, check_finite_inputs=False)
    if n_masked_patches_tensor.is_floating_point():  # a NaN or ±inf count gives NaN codes
        codes = codes + 0 * n_masked_patches_tensor.detach().to(codes.device, codes.dtype).sum()
    if n_iterations == 0:  # the sinkhorn scaled by the global row count; DINOv2 scales by Σ n_masked
        check_tensor("n_masked_patches_tensor", n_masked_patches_tensor.to(torch.float64), (0, 1))
        masked = all_reduce_sum_(n_masked_patches_tensor.detach().to(codes.device, torch.float64).sum(), group)
        rows = global_row_count(teacher_output.shape[0], group, codes.device, torch.float64)
        codes = codes * (masked / rows).to(codes.dtype)
    return codes


def _dino_method(self, teacher_output, teacher_temp, n_iterations=3):
    return sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations)


def _ibot_method(self, teacher_output, teacher_temp, n_masked_patches_tensor, n_iterations=3):
    return ibot_sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_masked_patches_tensor, n_iterations)


_PATCH = Patch()

DINOV2 = Trainer(
    name="DINOv2",
    distribution="dinov2",
    works_with=("dinov2 0.0.1.dev2 (tested on torch 2.14.1), installed without its requirements, which pin torch "
                "2.0.0: pip install --no-deps dinov2==0.0.1.dev2"),
    drop_in=("from swav_kernels.compat.dinov2 import sinkhorn_knopp_teacher, ibot_sinkhorn_knopp_teacher (DINOv2's "
             "signatures, without self)"),
)


def patch() -> bool:
    """Make DINOv2's two ``sinkhorn_knopp_teacher`` methods run through swav_kernels.
    Returns False if already patched. ImportError where DINOv2 does not import, saying what
    failed and naming the drop-ins."""
    dino = import_trainer("dinov2.loss.dino_clstoken_loss", DINOV2)
    ibot = import_trainer("dinov2.loss.ibot_patch_loss", DINOV2)
    return _PATCH.apply([
        (dino.DINOLoss, "sinkhorn_knopp_teacher", _dino_method),
        (ibot.iBOTPatchLoss, "sinkhorn_knopp_teacher", _ibot_method),
    ])


def unpatch() -> bool:
    """Undo ``patch()``; False when nothing was patched."""
    return _PATCH.undo()
