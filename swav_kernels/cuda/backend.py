"""``backend="cuda"``: every matmul on the library torch uses (cuBLAS), the memory-bound rest on the
CUDA kernels of csrc/ (DESIGN.md §2; the formulas in ``contract.py``).

- Sinkhorn (``sinkhorn.py``): scores from torch matmuls (fp32), stored (the queue's recomputed per
  pass when they exceed the budget), then 2·T kernel steps; on several ranks the per-prototype
  statistics are all-reduced between steps.
- Loss (``losses.py``): per chunk of images, scores matmul → one kernel (loss terms and ∂loss/∂S)
  → the ∂Z and ∂C matmuls; the backward scales by the upstream gradient in one launch.
- Queue update: one launch.

No call waits for the device, and a call can be captured in a CUDA graph. Eager calls go through
``functions.py`` (one autograd Function per loss) on plans cached per call signature
(``plans.py``), ``swav_loss``'s calls through ``prepared.py`` (plans bound once per signature);
while torch.compile traces, through the custom ops of ``compile_ops.py``.
Constructing the backend is cheap and never fails: without a GPU or the compiled extension it says
why through ``unavailable_reason``.
"""
from __future__ import annotations

import contextlib

import torch

from ..backend import Backend, LossSpec
from ..distributed import is_distributed
from ..kernel_checks import KERNEL_DTYPES
from ..kernels import Codes, SinkhornRows
from . import extension
from .compile_ops import TracedSinkhornSteps, register_ops
from .functions import EmbeddingsLoss, ScoresLoss
from .launchers import KernelLaunchers
from .losses import embeddings_loss_backward, embeddings_loss_forward, scores_loss_backward, scores_loss_forward
from .plans import (Budget, PlanCache, embeddings_loss_plan, fused_loss_plan, given_scores_loss_plan, layout,
                    scores_loss_plan, sinkhorn_plan)
from .prepared import PreparedCall
from .sinkhorn import SinkhornRun, distributed_codes, local_codes


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _on(device: torch.device):
    """Make ``device`` the current CUDA device while the kernels launch (their streams belong to it),
    unless it already is (the usual case: one process per GPU)."""
    if device.type != "cuda" or device.index is None or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def _contiguous_rows(rows: SinkhornRows) -> SinkhornRows:
    return rows._replace(main=rows.main.contiguous(),
                         queue=None if rows.queue is None else rows.queue.contiguous(),
                         prototypes=None if rows.prototypes is None else rows.prototypes.contiguous())


class CudaBackend(Backend):
    """The CUDA backend. ``launchers``: the kernels to run (default: the compiled extension
    ``swav_kernels._C`` on the current CUDA stream; the tests pass the CPU emulation with
    ``device_type="cpu"``). ``budget``: the byte budgets the plans are chosen by."""

    def __init__(self, launchers: KernelLaunchers | None = None, device_type: str = "cuda", name: str = "cuda",
                 budget: Budget = Budget()) -> None:
        self.name, self.device_type, self.budget = name, device_type, budget
        self._launchers = launchers
        self._plans = PlanCache()
        self.ops = register_ops(self)

    @property
    def launchers(self) -> KernelLaunchers:
        if self._launchers is None:
            self._launchers = KernelLaunchers(extension.extension())
        return self._launchers

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        device = torch.device(device)
        if self._launchers is None:
            reason = extension.unavailable_reason()
            if reason is not None:
                return reason
        if dtype not in KERNEL_DTYPES:
            return f"no CUDA kernels for {dtype} (float32, float16 and bfloat16 only)"
        if device.type != self.device_type:
            reason = f"the CUDA kernels run on {self.device_type.upper()} tensors, not on {device.type} tensors"
            if self.device_type == "cuda" and not torch.cuda.is_available():
                reason += "; no CUDA GPU is visible to torch on this machine"
            return reason
        if self.device_type != "cuda":
            return None
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible to torch on this machine"
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return f"the CUDA kernels need compute capability >= 8.0; {device} has {major}.{minor}"
        return None

    # ---- plans ----------------------------------------------------------------------------------

    def sinkhorn_plan(self, rows: SinkhornRows, epsilon: float, iterations: int):
        key = ("sinkhorn", layout(rows.main), layout(rows.queue), layout(rows.prototypes), tuple(rows.crops),
               rows.batch, epsilon, iterations)
        return self._plans.get(key, lambda: sinkhorn_plan(rows, epsilon, iterations, self.budget, self.device_type))

    def sinkhorn_run(self, rows: SinkhornRows, epsilon: float, iterations: int = 1) -> SinkhornRun:
        """The scores and buffers of one Sinkhorn call, ready for its steps."""
        return SinkhornRun(self.launchers, self.sinkhorn_plan(rows, epsilon, iterations), rows)

    def embeddings_plan(self, z, c, codes, crops, temperature):
        key = ("embeddings", layout(z), layout(c), layout(codes), crops, temperature)
        return self._plans.get(key, lambda: embeddings_loss_plan(z, c, codes, crops, temperature, self.budget,
                                                                 self.device_type))

    def scores_plan(self, s, codes, crops, temperature):
        key = ("scores", layout(s), layout(codes), crops, temperature)
        return self._plans.get(key, lambda: scores_loss_plan(s, codes, crops, temperature, self.device_type))

    # ---- eager bodies (also the bodies of the custom ops) ----------------------------------------

    def eager_codes(self, rows: SinkhornRows, epsilon: float, iterations: int, process_group) -> torch.Tensor:
        plan = self.sinkhorn_plan(rows, epsilon, iterations)
        with _on(rows.main.device):
            run = SinkhornRun(self.launchers, plan, rows)
            if is_distributed(process_group):
                return distributed_codes(run, plan.prototypes, plan.rows, iterations, process_group)
            return local_codes(run, iterations)

    def eager_embeddings_loss(self, z, c, codes, crops, temperature, need_dz: bool, need_dc: bool):
        plan = self.embeddings_plan(z, c, codes, crops, temperature)
        with _on(z.device):
            return embeddings_loss_forward(self.launchers, plan, z, c, codes, need_dz, need_dc)

    def eager_embeddings_loss_backward(self, grad, dz, dc, dtypes, coef: float, n_crops: int, chunk: int):
        with _on(grad.device):
            return embeddings_loss_backward(self.launchers, grad, dz, dc, dtypes, coef, n_crops, chunk)

    def eager_scores_loss(self, s, codes, crops, temperature, need_grad: bool):
        plan = self.scores_plan(s, codes, crops, temperature)
        with _on(s.device):
            return scores_loss_forward(self.launchers, plan, s, codes, need_grad)

    def eager_scores_loss_backward(self, grad, ds, coef: float):
        with _on(grad.device):
            return scores_loss_backward(self.launchers, grad, ds, coef)

    # ---- the Backend interface ---------------------------------------------------------------------

    def _preparable(self, main, queue, spec) -> bool:
        """Whether a whole call can be prepared: one process, contiguous inputs, the queue (if any) in
        the inputs' dtype."""
        return (spec.process_group is None and main.is_contiguous()
                and (queue is None or (queue.is_contiguous() and queue.dtype == main.dtype)))

    def prepare_embeddings_loss(self, embeddings, prototypes, queue, spec: LossSpec, with_grad: bool):
        """``Backend.prepare_embeddings_loss``: the plans of this signature bound in a ``PreparedCall``."""
        if not (self._preparable(embeddings, queue, spec) and prototypes.is_contiguous()):
            return None
        batch = embeddings.shape[0] // spec.n_crops
        rows = SinkhornRows(embeddings, queue, spec.crops_for_assign, batch, prototypes)
        sinkhorn = self.sinkhorn_plan(rows, spec.epsilon, spec.sinkhorn_iterations)  # the Triton path's checks
        loss = fused_loss_plan(embeddings, prototypes, batch, sinkhorn.crops, spec.temperature, self.budget)
        need_grads = (with_grad and embeddings.requires_grad, with_grad and prototypes.requires_grad)
        return PreparedCall(self.launchers, _on, sinkhorn, loss, spec.sinkhorn_iterations, queue is not None,
                            need_grads)

    def prepare_scores_loss(self, scores, queue_scores, spec: LossSpec, with_grad: bool):
        """``Backend.prepare_scores_loss``: as ``prepare_embeddings_loss`` for given scores."""
        if not self._preparable(scores, queue_scores, spec):
            return None
        batch = scores.shape[0] // spec.n_crops
        rows = SinkhornRows(scores, queue_scores, spec.crops_for_assign, batch, None)
        sinkhorn = self.sinkhorn_plan(rows, spec.epsilon, spec.sinkhorn_iterations)
        loss = given_scores_loss_plan(scores, batch, sinkhorn.crops, spec.temperature)
        return PreparedCall(self.launchers, _on, sinkhorn, loss, spec.sinkhorn_iterations, queue_scores is not None,
                            (with_grad,))

    def assignment_codes(self, rows: SinkhornRows, epsilon: float, iterations: int, process_group) -> Codes:
        rows = _contiguous_rows(rows)
        if not _compiling():
            return Codes(self.eager_codes(rows, epsilon, iterations, process_group), None, None)
        if is_distributed(process_group):
            steps = TracedSinkhornSteps(self.ops, rows, epsilon)
            return Codes(distributed_codes(steps, rows.prototype_count, rows.rows, iterations, process_group), None,
                         None)
        return Codes(self.ops.sinkhorn(rows.main, rows.queue, rows.prototypes, list(rows.crops), rows.batch, epsilon,
                                       iterations), None, None)

    def loss_from_scores(self, scores: torch.Tensor, codes: Codes, spec: LossSpec) -> torch.Tensor:
        s, q = scores.contiguous(), codes.codes.float().contiguous()
        crops = tuple(spec.crops_for_assign)
        need_grad = torch.is_grad_enabled() and s.requires_grad
        if _compiling():
            return self.ops.scores_loss(s, q, list(crops), spec.temperature, need_grad)[0]
        plan = self.scores_plan(s, q, crops, spec.temperature)
        with _on(s.device):
            return ScoresLoss.apply(s, q, self.launchers, plan, need_grad)

    def loss_from_embeddings(self, embeddings, prototypes, codes: Codes, spec: LossSpec) -> torch.Tensor:
        z, c, q = embeddings.contiguous(), prototypes.contiguous(), codes.codes  # as the Triton path: codes as given
        crops = tuple(spec.crops_for_assign)
        grad = torch.is_grad_enabled()
        need_dz, need_dc = grad and z.requires_grad, grad and c.requires_grad
        if _compiling():
            return self.ops.embeddings_loss(z, c, q, list(crops), spec.temperature, need_dz, need_dc)[0]
        plan = self.embeddings_plan(z, c, q, crops, spec.temperature)
        with _on(z.device):
            return EmbeddingsLoss.apply(z, c, q, self.launchers, plan, need_dz, need_dc)

    @torch.no_grad()
    def shift_queue(self, queue: torch.Tensor, embeddings: torch.Tensor, crops: tuple[int, ...], batch: int) -> None:
        """``Backend.shift_queue`` in one launch (while torch.compile traces: the reference's two ops)."""
        fits = (queue.dtype == embeddings.dtype and queue.dtype in KERNEL_DTYPES and queue.is_contiguous()
                and embeddings.is_contiguous() and queue.device == embeddings.device
                and queue.device.type == self.device_type and 0 < len(crops) <= 64 and queue.numel() > 0)
        if _compiling() or not fits:
            return super().shift_queue(queue, embeddings, crops, batch)
        with _on(queue.device):
            self.launchers.shift_queue(queue, embeddings.detach(), crops, batch)


# Built (and its custom ops registered) when swav_kernels is imported, so that the first loss call
# inside a torch.compile trace only looks the backend up.
CUDA_BACKEND = CudaBackend()
