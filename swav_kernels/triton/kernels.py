"""``TritonKernels``: the kernel contract (swav_kernels.kernels) on the Triton kernels of this folder.

Every primitive checks its tensors with the shared checks of ``swav_kernels.kernel_checks``
(device, dtype, contiguity, shapes) before any launch, so bad input raises a TypeError or
ValueError naming the argument instead of faulting inside a kernel. Triton itself is imported
only when a kernel first runs.
"""
from __future__ import annotations

import importlib.util

import torch

from .. import kernel_checks as checks
from ..kernel_checks import KERNEL_DTYPES
from .launch import crops_fit, interpreting, kernel_device_type

# Looked up once at import (without importing triton), never inside a torch.compile trace.
_TRITON_MISSING = None if importlib.util.find_spec("triton") is not None else "triton is not installed"

# Triton's interpreter stores bfloat16 as its uint16 bits and its tl.dot multiplies those bits as
# integers (triton/runtime/interpreter.py, create_dot; Triton's debugging guide: the interpreter
# "does not support operations on bfloat16"): the fused path's losses come out near 1e11. float16
# and float32 are computed correctly there (tests/test_triton_backend.py checks them). The scores
# path's kernels use no tl.dot and are right in bfloat16 too, but availability is decided per dtype
# (``unavailable_reason(device, dtype)``), so bfloat16 is refused for both paths.
INTERPRETER_BF16 = ("Triton's interpreter (TRITON_INTERPRET=1) computes tl.dot on bfloat16 operands from their raw "
                    "bits, which gives wrong results; under the interpreter use float32 or float16 inputs, or run "
                    "bfloat16 on a CUDA GPU (without TRITON_INTERPRET)")


class TritonKernels:
    """Triton implementation of ``swav_kernels.kernels.Kernels``."""

    name = "triton"

    @property
    def traceable(self) -> bool:
        """Whether the ops on these kernels can be Triton ops that torch.compile traces into (not under
        the interpreter, whose kernels torch cannot wrap)."""
        return not interpreting()

    @property
    def device_type(self) -> str:
        return kernel_device_type()

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        if _TRITON_MISSING is not None:
            return _TRITON_MISSING
        if dtype not in KERNEL_DTYPES:
            return f"the Triton kernels take float32, float16 or bfloat16, not {dtype}"
        if device.type != kernel_device_type():
            return f"Triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1), not on {device.type}"
        if dtype == torch.bfloat16 and interpreting():
            return INTERPRETER_BF16
        return None

    def _rows(self, rows):
        checks.check_sinkhorn_rows(rows, self.device_type, "Triton")
        if not crops_fit(rows.crops):
            raise ValueError(f"the Triton kernels take at most 7 assign crops with indices below 256, "
                             f"got {list(rows.crops)}")
        return rows

    # ---- whole calls (prepared once per signature: swav_kernels.triton.prepared_loss) ------------

    def check_fused_call(self, rows) -> None:
        """The checks of every primitive of a fused call, made once when its plan is prepared."""
        self._rows(rows)
        checks.check_embeddings_and_prototypes(rows.main, rows.prototypes, self.device_type, "Triton")

    def check_scores_call(self, rows) -> None:
        """The checks of every primitive of a scores-path call, made once when its plan is prepared."""
        self._rows(rows)

    # ---- split counts the ops' fakes need (fixed rules of the shapes, swav_kernels.triton.tiles) ----

    def row_splits(self, rows) -> int:
        """R, the prototype ranges ``sinkhorn_row_step`` writes for ``rows``."""
        from .rows import RowShape
        from .sinkhorn_row import row_split_count

        return row_split_count(RowShape.of(rows))

    def code_splits(self, rows, row_lse: bool) -> int:
        """S, the prototype ranges ``sinkhorn_codes`` writes mass and projection partials for."""
        from .rows import RowShape
        from .sinkhorn_codes import code_split_count

        return code_split_count(RowShape.of(rows), row_lse)

    # ---- family 2: Sinkhorn ------------------------------------------------------------------

    def sinkhorn_column_step(self, rows, inv_eps, row_stats):
        from .sinkhorn_column import column_step

        self._rows(rows)
        checks.check_row_stats(row_stats, rows)
        return column_step(rows, checks.check_finite_float("inv_eps", inv_eps, positive=True), row_stats)

    def sinkhorn_row_step(self, rows, inv_eps, columns):
        from .sinkhorn_row import row_step

        self._rows(rows)
        checks.check_column_stats(columns, rows)
        return row_step(rows, checks.check_finite_float("inv_eps", inv_eps, positive=True), columns)

    def sinkhorn_codes(self, rows, inv_eps, columns, row_stats, normalize_rows):
        from .sinkhorn_codes import codes

        self._rows(rows)
        checks.check_column_stats(columns, rows)
        checks.check_row_stats(row_stats, rows)
        if row_stats is not None and not normalize_rows:
            raise ValueError("row_stats give the codes' row normalisation: pass normalize_rows=True with them")
        return codes(rows, checks.check_finite_float("inv_eps", inv_eps, positive=True), columns, row_stats,
                     bool(normalize_rows))

    # ---- families 1 and 3: the loss ------------------------------------------------------------

    def _loss_crops(self, crops):
        if not crops_fit(crops):
            raise ValueError(f"the Triton kernels take at most 7 assign crops with indices below 256, got {crops}")
        return crops

    def embeddings_loss(self, z, c, codes, crops, inv_tau, with_output):
        from .embeddings_loss import embeddings_loss

        z, c = checks.check_embeddings_and_prototypes(z, c, self.device_type, "Triton")
        crops = self._loss_crops(checks.check_codes_bundle(codes, z, c.shape[0], crops))
        return embeddings_loss(z, c, codes, crops, checks.check_finite_float("inv_tau", inv_tau, positive=True),
                               bool(with_output))

    def embeddings_loss_backward(self, grad, z, c, codes, crops, inv_tau, lse, out):
        from .embeddings_grad import embeddings_loss_backward

        z, c = checks.check_embeddings_and_prototypes(z, c, self.device_type, "Triton")
        crops = self._loss_crops(checks.check_codes_bundle(codes, z, c.shape[0], crops))
        checks.check_grad_scalar(grad, z)
        checks.check_loss_vector("lse", lse, z.shape[0], z)
        checks.check_input("out", out, 2, torch.float32, like=z, device_type=self.device_type)
        checks.check_shape("out", out, tuple(z.shape))
        return embeddings_loss_backward(grad.reshape(()), z, c, codes, crops,
                                        checks.check_finite_float("inv_tau", inv_tau, positive=True), lse, out)

    def _scores(self, s, codes, crops):
        s = checks.check_input("s", s, 2, device_type=self.device_type, kernels="Triton")
        checks._nonempty("s", s)
        return s, self._loss_crops(checks.check_codes("codes", codes, s.shape[0], s.shape[1], crops, s))

    def scores_loss(self, s, codes, crops, inv_tau):
        from .scores_loss import scores_loss

        s, crops = self._scores(s, codes, crops)
        return scores_loss(s, codes, crops, checks.check_finite_float("inv_tau", inv_tau, positive=True))

    def scores_loss_backward(self, grad, s, codes, crops, inv_tau, lse, weight):
        from .scores_loss import scores_loss_backward

        s, crops = self._scores(s, codes, crops)
        checks.check_grad_scalar(grad, s)
        checks.check_loss_vector("lse", lse, s.shape[0], s)
        checks.check_loss_vector("weight", weight, s.shape[0], s)
        return scores_loss_backward(grad.reshape(()), s, codes, crops,
                                    checks.check_finite_float("inv_tau", inv_tau, positive=True), lse, weight)
