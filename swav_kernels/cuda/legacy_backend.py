"""The CUDA backend's orchestration, on the first kernel contract (until csrc/ moves to the
contract of ``swav_kernels.kernels``).

The CUDA kernels (csrc/) still implement six earlier primitives: a Sinkhorn column init and
a two-pass row step over stored scores (which this module materialises with a matmul), and
the loss primitives (scores + log-sum-exp, prototype gradient, cross-entropy). The glue here
(potential updates, crop weights, cross terms) runs as PyTorch ops between them, so this
backend issues far more launches than the budget of DESIGN.md §5a; the Triton backend follows
the new contract. Formulas: the docstrings of ``swav_kernels.cuda.kernels.CudaKernels``.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from ..backend import Backend, LossSpec, materialized_scores
from ..distributed import all_reduce_max_, all_reduce_sum_, global_row_count, is_distributed
from ..kernels import Codes, SinkhornRows

_REGISTERED_OPS: dict[str, SimpleNamespace] = {}


def kernel_sinkhorn(ops, scores: torch.Tensor, epsilon: float, iterations: int, process_group,
                    codes_from_row: int = 0) -> torch.Tensor:
    """Codes of ``scores (G, N, K)`` for rows ``>= codes_from_row``, float32.

    Log-domain Sinkhorn with potentials: ``q = exp(x/ε + a_k + b_n) · N_total``. The first
    per-prototype step needs an exact (max-shifted) log-sum-exp over all ranks; after it,
    every column sum lies in [1/(K·N_total), 1], so later per-prototype sums are plain
    sums of exp(·) ≤ 1 and need a single all-reduce each. Per-sample steps are local and
    exact inside the row kernel.
    """
    x = scores.contiguous()
    groups, rows, prototypes = x.shape
    inv_eps = 1.0 / epsilon
    rows_total = rows
    if is_distributed(process_group):
        rows_total = int(global_row_count(rows, process_group, x.device, torch.float64).item())
    log_rows_total = math.log(rows_total)

    col_max, col_sum = ops.sinkhorn_column_init(x, inv_eps)
    if is_distributed(process_group):
        global_max = all_reduce_max_(col_max.clone(), process_group)
        col_sum = all_reduce_sum_(col_sum * torch.exp(col_max - global_max), process_group)
        col_max = global_max
    col_lse = col_max + torch.log(col_sum)  # log Σ_n exp(x/ε) over the rows of every rank

    if iterations == 0:  # q = exp(X/ε) / Σ exp(X/ε) · N_total
        total = torch.logsumexp(col_lse, dim=1, keepdim=True)
        potential = (-total).expand(groups, prototypes).contiguous()
        return ops.sinkhorn_row_step(x, inv_eps, potential, log_rows_total, False, False, codes_from_row)[1]

    potential = -col_lse - math.log(prototypes)  # first per-prototype step (P /= sum; /= K)
    for step in range(iterations):
        last = step == iterations - 1
        column_sums, codes = ops.sinkhorn_row_step(
            x, inv_eps, potential, log_rows_total, True, not last, codes_from_row if last else -1
        )
        if not last:
            all_reduce_sum_(column_sums, process_group)
            potential = potential - torch.log(column_sums) - math.log(prototypes)
    return codes


def _crop_layout(rows: int, codes: torch.Tensor, crops_for_assign):
    """(V, B, |A|, lse weights (V·B,) float32) of a loss call.

    The weight of row (v, b) is the mass of the codes it is asked to predict,
    ``Σ_{a: A[a]≠v} Σ_k q_a[b, k]``: since ``−Σ_k q log softmax(s/τ) = (Σ_k q)·lse(s/τ) − q·s/τ``,
    it multiplies that row's log-sum-exp. It equals n_v = |{a : A[a] ≠ v}| when the codes'
    rows sum to 1 (Sinkhorn iterations ≥ 1), but not for 0 iterations.
    """
    n_assign, batch = codes.shape[0], codes.shape[1]
    n_crops = rows // batch
    mass = codes.sum(dim=2)  # (|A|, B)
    weight = mass.sum(dim=0, keepdim=True).repeat(n_crops, 1)
    weight[list(crops_for_assign)] -= mass
    return n_crops, batch, n_assign, weight.view(-1)


def _other_crops_sum(z: torch.Tensor, n_crops: int, batch: int, crops_for_assign) -> torch.Tensor:
    """(|A|, B, D): Σ_{v ≠ A[a]} z_v for each assign crop a, float32."""
    zc = z.float().view(n_crops, batch, -1)
    return zc.sum(dim=0, keepdim=True) - zc[list(crops_for_assign)]


def _register_ops(kernels) -> SimpleNamespace:
    """Wrap the primitives and the two losses of ``kernels`` as ``swav_kernels::<name>_*`` ops."""
    prefix = f"swav_kernels::{kernels.name}_"
    lib = torch.library

    @lib.custom_op(prefix + "sinkhorn_column_init", mutates_args=())
    def sinkhorn_column_init(x: torch.Tensor, inv_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.sinkhorn_column_init(x, inv_eps)

    @sinkhorn_column_init.register_fake
    def _(x, inv_eps):
        shape = (x.shape[0], x.shape[2])
        return x.new_empty(shape, dtype=torch.float32), x.new_empty(shape, dtype=torch.float32)

    @lib.custom_op(prefix + "sinkhorn_row_step", mutates_args=())
    def sinkhorn_row_step(x: torch.Tensor, inv_eps: float, col_potential: torch.Tensor, log_rows_total: float,
                          normalize_rows: bool, want_column_sums: bool,
                          codes_from_row: int) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.sinkhorn_row_step(x, inv_eps, col_potential, log_rows_total, normalize_rows,
                                         want_column_sums, codes_from_row)

    @sinkhorn_row_step.register_fake
    def _(x, inv_eps, col_potential, log_rows_total, normalize_rows, want_column_sums, codes_from_row):
        groups, rows, prototypes = x.shape
        sums = x.new_empty((groups, prototypes if want_column_sums else 0), dtype=torch.float32)
        code_rows = rows - codes_from_row if codes_from_row >= 0 else 0
        return sums, x.new_empty((groups, code_rows, prototypes), dtype=torch.float32)

    # ---- loss from embeddings + prototypes: never materialises the (V·B, K) scores ----
    @lib.custom_op(prefix + "embeddings_loss", mutates_args=())
    def embeddings_loss(z: torch.Tensor, c: torch.Tensor, codes: torch.Tensor, crops_for_assign: list[int],
                        inv_tau: float, with_output: bool
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n_crops, batch, n_assign, row_weight = _crop_layout(z.shape[0], codes, crops_for_assign)
        lse, out = kernels.scores_logsumexp(z, c, inv_tau, with_output)
        projected = torch.matmul(codes, c.float())  # W_a = q_a C, (|A|, B, D)
        others = _other_crops_sum(z, n_crops, batch, crops_for_assign)
        # loss = [Σ_{v,b} w_vb lse_v[b] − (1/τ) Σ_a Σ_b W_a[b]·Σ_{v≠A[a]} z_v[b]] / (|A|(V−1)B)
        total = (row_weight * lse).sum() - inv_tau * (projected * others).sum()
        loss = total / (n_assign * (n_crops - 1) * batch)
        return loss, lse, out, projected

    @embeddings_loss.register_fake
    def _(z, c, codes, crops_for_assign, inv_tau, with_output):
        f32 = dict(dtype=torch.float32)
        return (z.new_empty((), **f32), z.new_empty((z.shape[0],), **f32),
                z.new_empty((z.shape[0] if with_output else 0, z.shape[1]), **f32),
                z.new_empty((codes.shape[0], codes.shape[1], z.shape[1]), **f32))

    @lib.custom_op(prefix + "embeddings_loss_backward", mutates_args=())
    def embeddings_loss_backward(grad: torch.Tensor, z: torch.Tensor, c: torch.Tensor, codes: torch.Tensor,
                                 lse: torch.Tensor, out: torch.Tensor, projected: torch.Tensor,
                                 crops_for_assign: list[int], inv_tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        n_crops, batch, n_assign, row_weight = _crop_layout(z.shape[0], codes, crops_for_assign)
        coef = grad.float() * inv_tau / (n_assign * (n_crops - 1) * batch)
        # ∂Z_v = coef · (w_v O_v − Σ_{a: A[a]≠v} W_a)
        projected_others = projected.sum(dim=0, keepdim=True).repeat(n_crops, 1, 1)
        projected_others[list(crops_for_assign)] -= projected
        grad_z = coef * (row_weight[:, None] * out - projected_others.view_as(out))
        # ∂C = coef · (Σ_rows w P z − Σ_a q_aᵀ Σ_{v≠A[a]} z_v)
        softmax_part = kernels.softmax_prototype_grad(z, c, lse, row_weight, inv_tau)
        others = _other_crops_sum(z, n_crops, batch, crops_for_assign)
        code_part = torch.einsum("abk,abd->kd", codes, others)
        grad_c = coef * (softmax_part - code_part)
        return grad_z.to(z.dtype), grad_c.to(c.dtype)

    @embeddings_loss_backward.register_fake
    def _(grad, z, c, codes, lse, out, projected, crops_for_assign, inv_tau):
        return torch.empty_like(z), torch.empty_like(c)

    def embeddings_setup(ctx, inputs, output):
        z, c, codes, crops_for_assign, inv_tau, with_output = inputs
        _, lse, out, projected = output
        ctx.save_for_backward(z, c, codes, lse, out, projected)
        ctx.crops_for_assign, ctx.inv_tau = crops_for_assign, inv_tau

    def embeddings_backward(ctx, grad, _lse, _out, _projected):
        z, c, codes, lse, out, projected = ctx.saved_tensors
        if out.shape[0] != z.shape[0]:
            raise RuntimeError("embeddings_loss was run with with_output=False; it cannot be differentiated")
        grad_z, grad_c = embeddings_loss_backward(grad, z, c, codes, lse, out, projected,
                                                  ctx.crops_for_assign, ctx.inv_tau)
        return grad_z, grad_c, None, None, None, None

    embeddings_loss.register_autograd(embeddings_backward, setup_context=embeddings_setup)

    # ---- loss from scores (the drop-in path) -------------------------------------------
    @lib.custom_op(prefix + "scores_loss", mutates_args=())
    def scores_loss(s: torch.Tensor, codes: torch.Tensor, crops_for_assign: list[int],
                    inv_tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        n_crops, batch, n_assign, row_weight = _crop_layout(s.shape[0], codes, crops_for_assign)
        lse, cross = kernels.scores_cross_entropy_forward(s, codes, crops_for_assign, inv_tau)
        total = (row_weight * lse).sum() - inv_tau * cross.sum()
        return total / (n_assign * (n_crops - 1) * batch), lse

    @scores_loss.register_fake
    def _(s, codes, crops_for_assign, inv_tau):
        return s.new_empty((), dtype=torch.float32), s.new_empty((s.shape[0],), dtype=torch.float32)

    @lib.custom_op(prefix + "scores_loss_backward", mutates_args=())
    def scores_loss_backward(grad: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, lse: torch.Tensor,
                             crops_for_assign: list[int], inv_tau: float) -> torch.Tensor:
        n_crops, batch, n_assign, row_weight = _crop_layout(s.shape[0], codes, crops_for_assign)
        scale = grad.float() * inv_tau / (n_assign * (n_crops - 1) * batch)
        return kernels.scores_cross_entropy_backward(s, codes, lse, row_weight, crops_for_assign, inv_tau, scale)

    @scores_loss_backward.register_fake
    def _(grad, s, codes, lse, crops_for_assign, inv_tau):
        return torch.empty_like(s)

    def scores_setup(ctx, inputs, output):
        s, codes, crops_for_assign, inv_tau = inputs
        ctx.save_for_backward(s, codes, output[1])
        ctx.crops_for_assign, ctx.inv_tau = crops_for_assign, inv_tau

    def scores_backward(ctx, grad, _lse):
        s, codes, lse = ctx.saved_tensors
        return scores_loss_backward(grad, s, codes, lse, ctx.crops_for_assign, ctx.inv_tau), None, None, None

    scores_loss.register_autograd(scores_backward, setup_context=scores_setup)

    return SimpleNamespace(
        sinkhorn_column_init=sinkhorn_column_init,
        sinkhorn_row_step=sinkhorn_row_step,
        embeddings_loss=embeddings_loss,
        embeddings_loss_backward=embeddings_loss_backward,
        scores_loss=scores_loss,
        scores_loss_backward=scores_loss_backward,
    )


def register_ops(kernels) -> SimpleNamespace:
    """The custom ops of ``kernels``, registered once per process under its name."""
    if kernels.name not in _REGISTERED_OPS:
        _REGISTERED_OPS[kernels.name] = _register_ops(kernels)
    return _REGISTERED_OPS[kernels.name]


class LegacyKernelBackend(Backend):
    """The backend operations on top of the first contract's six primitives."""

    def __init__(self, kernels) -> None:
        self.kernels = kernels
        self.name = kernels.name
        self.ops = register_ops(kernels)

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return self.kernels.unavailable_reason(device, dtype)

    def assignment_codes(self, rows: SinkhornRows, epsilon, iterations, process_group) -> Codes:
        scores = materialized_scores(rows)
        codes = kernel_sinkhorn(self.ops, scores, epsilon, iterations, process_group, codes_from_row=rows.queue_rows)
        return Codes(codes, None, None)

    def loss_from_scores(self, scores: torch.Tensor, codes: Codes, spec: LossSpec) -> torch.Tensor:
        loss, _ = self.ops.scores_loss(scores.contiguous(), codes.codes.float().contiguous(),
                                       list(spec.crops_for_assign), 1.0 / spec.temperature)
        return loss

    def loss_from_embeddings(self, embeddings, prototypes, codes: Codes, spec: LossSpec) -> torch.Tensor:
        with_output = torch.is_grad_enabled() and (embeddings.requires_grad or prototypes.requires_grad)
        loss, _, _, _ = self.ops.embeddings_loss(embeddings.contiguous(), prototypes.contiguous(),
                                                 codes.codes.float().contiguous(), list(spec.crops_for_assign),
                                                 1.0 / spec.temperature, with_output)
        return loss
