"""A ``Backend`` built from a ``Kernels`` implementation (swav_kernels.kernels).

Shared by the kernel backends:
- the Sinkhorn of DESIGN.md §1 as alternating column and row steps over dual potentials: in one
  process one custom op issues all 2·T launches; across ranks each step is its own op and the
  per-prototype statistics are all-reduced in between (traceable by torch.compile);
- the two losses (from embeddings + prototypes, and from scores) as ``torch.library`` custom ops
  with autograd, so ``torch.compile(fullgraph=True)`` traces them as opaque ops and a call costs
  three custom-op dispatches per forward + backward.
Nothing here synchronises with the device: no ``.item()``, no host branch on a device value.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Optional

import torch

from .backend import Backend, LossSpec
from .distributed import all_reduce_max_, all_reduce_sum_, is_distributed
from .kernels import Codes, ColumnStats, Kernels, RowStats, SinkhornRows

_REGISTERED_OPS: dict[str, SimpleNamespace] = {}


def zero_iteration_columns(columns: ColumnStats, log_rows_total) -> ColumnStats:
    """Column statistics whose potential is ``a[k] = log N_total − LSE_{n,k}(x/ε)`` for every k,
    so that the codes ``exp(x/ε + a)`` are DESIGN.md §1's with T = 0 (``P /= sum(P)``; ``P *= N``)."""
    column_lse = torch.logsumexp(columns.max + torch.log(columns.sumexp), dim=0)  # (G, K)
    total = torch.logsumexp(column_lse, dim=1, keepdim=True)  # (G, 1)
    prototypes = columns.max.shape[2]
    top = (total - log_rows_total - math.log(prototypes)).expand(-1, prototypes)[None].contiguous()
    return ColumnStats(top, torch.ones_like(top))


def local_sinkhorn(kernels: Kernels, rows: SinkhornRows, epsilon: float, iterations: int) -> Codes:
    """Codes of the batch rows on one rank: 2·T launches, plus one row step on the fused path (T = 0: 2
    plus a few small ops).

    Iteration i: column step ``a = −log K − LSE_n(x/ε + b)`` (b = 0 at first; the total of
    ``P /= sum(P)`` cancels), row step ``b = −LSE_k(x/ε + a)``. The codes normalise each row with the
    last column step's a: their row log-sum-exp comes from one more row step on the fused path (whose
    codes are split over prototype ranges), from the codes kernel itself on the scores path.
    """
    inv_eps = 1.0 / epsilon
    columns = kernels.sinkhorn_column_step(rows, inv_eps, None)
    if iterations == 0:
        return kernels.sinkhorn_codes(rows, inv_eps, zero_iteration_columns(columns, math.log(rows.rows)), None,
                                      False)
    for _ in range(iterations - 1):
        columns = kernels.sinkhorn_column_step(rows, inv_eps, kernels.sinkhorn_row_step(rows, inv_eps, columns))
    row_stats = kernels.sinkhorn_row_step(rows, inv_eps, columns) if rows.prototypes is not None else None
    return kernels.sinkhorn_codes(rows, inv_eps, columns, row_stats, True)


def merge_columns(columns: ColumnStats) -> ColumnStats:
    """The S partials as one (S = 1)."""
    if columns.max.shape[0] == 1:
        return columns
    top = columns.max.amax(dim=0, keepdim=True)
    safe = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    return ColumnStats(top, (columns.sumexp * torch.exp(columns.max - safe)).sum(dim=0, keepdim=True))


def reduce_columns(columns: ColumnStats, process_group) -> ColumnStats:
    """Column statistics over the rows of every rank: an all-reduce of the max, then of the sums."""
    columns = merge_columns(columns)
    top = all_reduce_max_(columns.max.clone(), process_group)
    return ColumnStats(top, all_reduce_sum_(columns.sumexp * torch.exp(columns.max - top), process_group))


def _register_ops(kernels: Kernels) -> SimpleNamespace:
    """Wrap the primitives and the two losses of ``kernels`` as ``swav_kernels::<name>_*`` ops: Triton ops
    (``torch.library.triton_op``: torch.compile sees the launches, which its kernels go through
    ``torch.library.wrap_triton`` for) when ``kernels.traceable``, else opaque custom ops. The fakes
    registered here give the output shapes without tracing the bodies."""
    prefix = f"swav_kernels::{kernels.name}_"
    lib = SimpleNamespace(custom_op=torch.library.triton_op if getattr(kernels, "traceable", False)
                          else torch.library.custom_op)

    def rows_of(main, queue, prototypes, crops, batch) -> SinkhornRows:
        return SinkhornRows(main, queue, tuple(crops), batch, prototypes)

    def fake_codes(main, queue, prototypes, crops, batch, row_lse):
        rows = rows_of(main, queue, prototypes, crops, batch)
        splits = kernels.code_splits(rows, row_lse)
        k = main.shape[1] if prototypes is None else prototypes.shape[0]
        d = 0 if prototypes is None else main.shape[1]
        f32 = dict(dtype=torch.float32)
        return (main.new_empty((len(crops), batch, k), **f32), main.new_empty((splits, len(crops), batch), **f32),
                main.new_empty((splits, len(crops), batch, d), **f32))

    def codes_tuple(codes: Codes, rows: SinkhornRows):
        projected = codes.projected
        if projected is None:  # a custom op returns tensors: no projection is an empty one
            projected = rows.main.new_empty((*codes.mass.shape, 0), dtype=torch.float32)
        return codes.codes, codes.mass, projected

    def row_stats_of(row_max, row_sum):
        return None if row_max is None else RowStats(row_max, row_sum)

    # ---- Sinkhorn: whole (one rank) --------------------------------------------------------
    @lib.custom_op(prefix + "sinkhorn", mutates_args=())
    def sinkhorn(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                 crops: list[int], batch: int, epsilon: float,
                 iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = rows_of(main, queue, prototypes, crops, batch)
        return codes_tuple(local_sinkhorn(kernels, rows, epsilon, iterations), rows)

    @sinkhorn.register_fake
    def _(main, queue, prototypes, crops, batch, epsilon, iterations):
        return fake_codes(main, queue, prototypes, crops, batch, prototypes is not None and iterations > 0)

    # ---- Sinkhorn: one step at a time (several ranks, collectives in between) --------------
    @lib.custom_op(prefix + "sinkhorn_column_step", mutates_args=())
    def sinkhorn_column_step(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                             crops: list[int], batch: int, inv_eps: float, row_max: Optional[torch.Tensor],
                             row_sum: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        columns = kernels.sinkhorn_column_step(rows_of(main, queue, prototypes, crops, batch), inv_eps,
                                               row_stats_of(row_max, row_sum))
        return tuple(merge_columns(columns))

    @sinkhorn_column_step.register_fake
    def _(main, queue, prototypes, crops, batch, inv_eps, row_max, row_sum):
        k = main.shape[1] if prototypes is None else prototypes.shape[0]
        shape = (1, len(crops), k)
        return main.new_empty(shape, dtype=torch.float32), main.new_empty(shape, dtype=torch.float32)

    @lib.custom_op(prefix + "sinkhorn_row_step", mutates_args=())
    def sinkhorn_row_step(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                          crops: list[int], batch: int, inv_eps: float, column_max: torch.Tensor,
                          column_sumexp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows_of(main, queue, prototypes, crops, batch)
        return tuple(kernels.sinkhorn_row_step(rows, inv_eps, ColumnStats(column_max, column_sumexp)))

    @sinkhorn_row_step.register_fake
    def _(main, queue, prototypes, crops, batch, inv_eps, column_max, column_sumexp):
        splits = kernels.row_splits(rows_of(main, queue, prototypes, crops, batch))
        shape = (splits, len(crops), batch + (0 if queue is None else queue.shape[1]))
        return main.new_empty(shape, dtype=torch.float32), main.new_empty(shape, dtype=torch.float32)

    @lib.custom_op(prefix + "sinkhorn_codes", mutates_args=())
    def sinkhorn_codes(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                       crops: list[int], batch: int, inv_eps: float, column_max: torch.Tensor,
                       column_sumexp: torch.Tensor, row_max: Optional[torch.Tensor], row_sum: Optional[torch.Tensor],
                       normalize_rows: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = rows_of(main, queue, prototypes, crops, batch)
        return codes_tuple(kernels.sinkhorn_codes(rows, inv_eps, ColumnStats(column_max, column_sumexp),
                                                  row_stats_of(row_max, row_sum), normalize_rows), rows)

    @sinkhorn_codes.register_fake
    def _(main, queue, prototypes, crops, batch, inv_eps, column_max, column_sumexp, row_max, row_sum,
          normalize_rows):
        return fake_codes(main, queue, prototypes, crops, batch, row_max is not None)

    # ---- loss from embeddings + prototypes: never materialises the (V·B, K) scores ----------
    @lib.custom_op(prefix + "embeddings_loss", mutates_args=())
    def embeddings_loss(z: torch.Tensor, c: torch.Tensor, codes: torch.Tensor, mass: torch.Tensor,
                        projected: torch.Tensor, crops: list[int], inv_tau: float,
                        with_output: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return kernels.embeddings_loss(z, c, Codes(codes, mass, projected), tuple(crops), inv_tau, with_output)

    @embeddings_loss.register_fake
    def _(z, c, codes, mass, projected, crops, inv_tau, with_output):
        f32 = dict(dtype=torch.float32)
        return (z.new_empty((), **f32), z.new_empty((z.shape[0],), **f32),
                z.new_empty((z.shape[0] if with_output else 0, z.shape[1]), **f32))

    @lib.custom_op(prefix + "embeddings_loss_backward", mutates_args=())
    def embeddings_loss_backward(grad: torch.Tensor, z: torch.Tensor, c: torch.Tensor, codes: torch.Tensor,
                                 mass: torch.Tensor, projected: torch.Tensor, crops: list[int], inv_tau: float,
                                 lse: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return kernels.embeddings_loss_backward(grad, z, c, Codes(codes, mass, projected), tuple(crops), inv_tau,
                                                lse, out)

    @embeddings_loss_backward.register_fake
    def _(grad, z, c, codes, mass, projected, crops, inv_tau, lse, out):
        return torch.empty_like(z), torch.empty_like(c)

    def embeddings_setup(ctx, inputs, output):
        z, c, codes, mass, projected, crops, inv_tau, with_output = inputs
        _, lse, out = output
        ctx.save_for_backward(z, c, codes, mass, projected, lse, out)
        ctx.crops, ctx.inv_tau = crops, inv_tau
        ctx.set_materialize_grads(False)  # lse and out take no gradient: no zero-filled tensors

    def embeddings_backward(ctx, grad, _lse, _out):
        z, c, codes, mass, projected, lse, out = ctx.saved_tensors
        if out.shape[0] != z.shape[0]:
            raise RuntimeError("embeddings_loss was run with with_output=False; it cannot be differentiated")
        grad_z, grad_c = embeddings_loss_backward(grad.float(), z, c, codes, mass, projected, ctx.crops,
                                                  ctx.inv_tau, lse, out)
        return grad_z, grad_c, None, None, None, None, None, None

    embeddings_loss.register_autograd(embeddings_backward, setup_context=embeddings_setup)

    # ---- loss from scores (the drop-in path) -----------------------------------------------
    @lib.custom_op(prefix + "scores_loss", mutates_args=())
    def scores_loss(s: torch.Tensor, codes: torch.Tensor, crops: list[int],
                    inv_tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return kernels.scores_loss(s, codes, tuple(crops), inv_tau)

    @scores_loss.register_fake
    def _(s, codes, crops, inv_tau):
        f32 = dict(dtype=torch.float32)
        return s.new_empty((), **f32), s.new_empty((s.shape[0],), **f32), s.new_empty((s.shape[0],), **f32)

    @lib.custom_op(prefix + "scores_loss_backward", mutates_args=())
    def scores_loss_backward(grad: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, crops: list[int],
                             inv_tau: float, lse: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return kernels.scores_loss_backward(grad, s, codes, tuple(crops), inv_tau, lse, weight)

    @scores_loss_backward.register_fake
    def _(grad, s, codes, crops, inv_tau, lse, weight):
        return torch.empty_like(s)

    def scores_setup(ctx, inputs, output):
        s, codes, crops, inv_tau = inputs
        ctx.save_for_backward(s, codes, output[1], output[2])
        ctx.crops, ctx.inv_tau = crops, inv_tau
        ctx.set_materialize_grads(False)

    def scores_backward(ctx, grad, _lse, _weight):
        s, codes, lse, weight = ctx.saved_tensors
        return scores_loss_backward(grad.float(), s, codes, ctx.crops, ctx.inv_tau, lse, weight), None, None, None

    scores_loss.register_autograd(scores_backward, setup_context=scores_setup)

    return SimpleNamespace(
        sinkhorn=sinkhorn,
        sinkhorn_column_step=sinkhorn_column_step,
        sinkhorn_row_step=sinkhorn_row_step,
        sinkhorn_codes=sinkhorn_codes,
        embeddings_loss=embeddings_loss,
        embeddings_loss_backward=embeddings_loss_backward,
        scores_loss=scores_loss,
        scores_loss_backward=scores_loss_backward,
    )


def register_ops(kernels: Kernels) -> SimpleNamespace:
    """The custom ops of ``kernels``, registered once per process under its name."""
    if kernels.name not in _REGISTERED_OPS:
        _REGISTERED_OPS[kernels.name] = _register_ops(kernels)
    return _REGISTERED_OPS[kernels.name]


def distributed_sinkhorn(ops, rows: SinkhornRows, epsilon: float, iterations: int, process_group) -> Codes:
    """``local_sinkhorn`` over the rows of every rank: per-prototype statistics are all-reduced
    after each column step (one max and one sum); per-sample steps stay local. Ranks may hold
    different numbers of rows; the global row count (T = 0 only) is summed on the device."""
    args = (rows.main, rows.queue, rows.prototypes, list(rows.crops), rows.batch)
    inv_eps = 1.0 / epsilon
    columns = reduce_columns(ColumnStats(*ops.sinkhorn_column_step(*args, inv_eps, None, None)), process_group)
    row_stats = (None, None)
    if iterations == 0:
        count = all_reduce_sum_(torch.full((), float(rows.rows), device=rows.main.device), process_group)
        columns = zero_iteration_columns(columns, torch.log(count))
        normalize = False
    else:
        for _ in range(iterations - 1):
            row_stats = ops.sinkhorn_row_step(*args, inv_eps, *columns)
            columns = reduce_columns(ColumnStats(*ops.sinkhorn_column_step(*args, inv_eps, *row_stats)),
                                     process_group)
        row_stats = ops.sinkhorn_row_step(*args, inv_eps, *columns) if rows.prototypes is not None else (None, None)
        normalize = True
    codes, mass, projected = ops.sinkhorn_codes(*args, inv_eps, *columns, *row_stats, normalize)
    return Codes(codes, mass, projected if rows.prototypes is not None else None)


class KernelBackend(Backend):
    """The backend operations of DESIGN.md §2 on top of a ``Kernels`` implementation."""

    def __init__(self, kernels: Kernels) -> None:
        self.kernels = kernels
        self.name = kernels.name
        self.ops = register_ops(kernels)

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return self.kernels.unavailable_reason(device, dtype)

    def assignment_codes(self, rows: SinkhornRows, epsilon: float, iterations: int, process_group) -> Codes:
        rows = rows._replace(  # no copies for the contiguous tensors trainers hold
            main=rows.main.contiguous(),
            queue=None if rows.queue is None else rows.queue.contiguous(),
            prototypes=None if rows.prototypes is None else rows.prototypes.contiguous(),
        )
        if is_distributed(process_group):
            return distributed_sinkhorn(self.ops, rows, epsilon, iterations, process_group)
        codes, mass, projected = self.ops.sinkhorn(rows.main, rows.queue, rows.prototypes, list(rows.crops),
                                                   rows.batch, epsilon, iterations)
        return Codes(codes, mass, projected if rows.prototypes is not None else None)

    def loss_from_scores(self, scores: torch.Tensor, codes: Codes, spec: LossSpec) -> torch.Tensor:
        loss, _, _ = self.ops.scores_loss(scores.contiguous(), codes.codes.float().contiguous(),
                                          list(spec.crops_for_assign), 1.0 / spec.temperature)
        return loss

    def loss_from_embeddings(self, embeddings, prototypes, codes: Codes, spec: LossSpec) -> torch.Tensor:
        with_output = torch.is_grad_enabled() and (embeddings.requires_grad or prototypes.requires_grad)
        loss, _, _ = self.ops.embeddings_loss(embeddings.contiguous(), prototypes.contiguous(), codes.codes,
                                              codes.mass, codes.projected, list(spec.crops_for_assign),
                                              1.0 / spec.temperature, with_output)
        return loss
