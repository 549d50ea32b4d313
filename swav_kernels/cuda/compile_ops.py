"""The CUDA backend as ``torch.library`` custom ops, for ``torch.compile`` only.

Eager calls run ``functions.py`` (one ``torch.autograd.Function`` per loss, no dispatcher hop);
while torch.compile traces, the backend calls these ops instead, whose fake kernels give the
output shapes, so ``torch.compile(fullgraph=True)`` traces a training step without graph breaks
(the kernels take raw pointers, which a traced tensor has not). Each op's body is the eager code.
The Sinkhorn is one op on one rank; across ranks each step is an op of its own, stateless (the
fused path's scores are recomputed by each), with the collectives traced between them.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch

from ..kernels import SinkhornRows
from .functions import check_once_differentiable
from .plans import chunk_images, loss_coef

_REGISTERED: dict[str, tuple[SimpleNamespace, SimpleNamespace]] = {}  # name -> (ops, holder of the backend)
_F32 = dict(dtype=torch.float32)


def _rows(main, queue, prototypes, crops, batch) -> SinkhornRows:
    return SinkhornRows(main, queue, tuple(crops), batch, prototypes)


def _codes_shape(main, prototypes, crops, batch) -> tuple[int, int, int]:
    return len(crops), batch, main.shape[1] if prototypes is None else prototypes.shape[0]


def _register(name: str, holder: SimpleNamespace) -> SimpleNamespace:
    prefix = f"swav_kernels::{name}_"
    lib = torch.library

    # ---- Sinkhorn ---------------------------------------------------------------------------
    @lib.custom_op(prefix + "sinkhorn", mutates_args=())
    def sinkhorn(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                 crops: list[int], batch: int, epsilon: float, iterations: int) -> torch.Tensor:
        return holder.backend.eager_codes(_rows(main, queue, prototypes, crops, batch), epsilon, iterations, None)

    @sinkhorn.register_fake
    def _(main, queue, prototypes, crops, batch, epsilon, iterations):
        return main.new_empty(_codes_shape(main, prototypes, crops, batch), **_F32)

    @lib.custom_op(prefix + "sinkhorn_column_stats", mutates_args=())
    def sinkhorn_column_stats(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                              crops: list[int], batch: int, epsilon: float,
                              row_potential: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        top, sumexp = holder.backend.sinkhorn_run(_rows(main, queue, prototypes, crops, batch), epsilon).column_stats(
            row_potential)
        return top, sumexp

    @sinkhorn_column_stats.register_fake
    def _(main, queue, prototypes, crops, batch, epsilon, row_potential):
        shape = _codes_shape(main, prototypes, crops, batch)[::2]
        return main.new_empty(shape, **_F32), main.new_empty(shape, **_F32)

    @lib.custom_op(prefix + "sinkhorn_row_potential", mutates_args=())
    def sinkhorn_row_potential(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                               crops: list[int], batch: int, epsilon: float,
                               column_potential: torch.Tensor) -> torch.Tensor:
        run = holder.backend.sinkhorn_run(_rows(main, queue, prototypes, crops, batch), epsilon)
        return run.row_potential(column_potential)

    @sinkhorn_row_potential.register_fake
    def _(main, queue, prototypes, crops, batch, epsilon, column_potential):
        return main.new_empty((len(crops), batch + (0 if queue is None else queue.shape[1])), **_F32)

    @lib.custom_op(prefix + "sinkhorn_codes", mutates_args=())
    def sinkhorn_codes(main: torch.Tensor, queue: Optional[torch.Tensor], prototypes: Optional[torch.Tensor],
                       crops: list[int], batch: int, epsilon: float, column_potential: torch.Tensor,
                       normalize_rows: bool) -> torch.Tensor:
        run = holder.backend.sinkhorn_run(_rows(main, queue, prototypes, crops, batch), epsilon)
        return run.codes(column_potential, normalize_rows)

    @sinkhorn_codes.register_fake
    def _(main, queue, prototypes, crops, batch, epsilon, column_potential, normalize_rows):
        return main.new_empty(_codes_shape(main, prototypes, crops, batch), **_F32)

    # ---- loss from embeddings + prototypes ------------------------------------------------------
    @lib.custom_op(prefix + "embeddings_loss", mutates_args=())
    def embeddings_loss(z: torch.Tensor, c: torch.Tensor, codes: torch.Tensor, crops: list[int], temperature: float,
                        need_dz: bool, need_dc: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, dz, dc = holder.backend.eager_embeddings_loss(z, c, codes, tuple(crops), temperature, need_dz, need_dc)
        return (loss, z.new_empty((0, z.shape[1]), **_F32) if dz is None else dz,
                c.new_empty((0, c.shape[1]), **_F32) if dc is None else dc)

    @embeddings_loss.register_fake
    def _(z, c, codes, crops, temperature, need_dz, need_dc):
        return (z.new_empty((), **_F32), z.new_empty((z.shape[0] if need_dz else 0, z.shape[1]), **_F32),
                c.new_empty((c.shape[0] if need_dc else 0, c.shape[1]), **_F32))

    @lib.custom_op(prefix + "embeddings_loss_backward", mutates_args=())
    def embeddings_loss_backward(grad: torch.Tensor, dz: torch.Tensor, dc: torch.Tensor, z_dtype: torch.dtype,
                                 c_dtype: torch.dtype, coef: float, n_crops: int,
                                 chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        grad_z, grad_c = holder.backend.eager_embeddings_loss_backward(grad, dz if dz.shape[0] else None,
                                                                dc if dc.shape[0] else None, (z_dtype, c_dtype),
                                                                coef, n_crops, chunk)
        return (dz.new_empty(dz.shape, dtype=z_dtype) if grad_z is None else grad_z,
                dc.new_empty(dc.shape, dtype=c_dtype) if grad_c is None else grad_c)

    @embeddings_loss_backward.register_fake
    def _(grad, dz, dc, z_dtype, c_dtype, coef, n_crops, chunk):
        return dz.new_empty(dz.shape, dtype=z_dtype), dc.new_empty(dc.shape, dtype=c_dtype)

    def embeddings_setup(ctx, inputs, output):
        z, c, codes, crops, temperature, _, _ = inputs
        _, dz, dc = output
        ctx.save_for_backward(dz, dc)
        batch = codes.shape[1]
        n_crops = z.shape[0] // batch
        ctx.layout = (z.dtype, c.dtype, loss_coef(temperature, len(crops), n_crops, batch), n_crops,
                      chunk_images(n_crops, batch, c.shape[0], z.dtype, holder.backend.budget))
        ctx.set_materialize_grads(False)  # dz and dc take no gradient: no zero-filled tensors

    def embeddings_backward(ctx, grad, _dz, _dc):
        check_once_differentiable()
        dz, dc = ctx.saved_tensors
        grad_z, grad_c = embeddings_loss_backward(grad, dz, dc, *ctx.layout)
        return (grad_z if dz.shape[0] else None), (grad_c if dc.shape[0] else None), None, None, None, None, None

    embeddings_loss.register_autograd(embeddings_backward, setup_context=embeddings_setup)

    # ---- loss from scores -----------------------------------------------------------------------
    @lib.custom_op(prefix + "scores_loss", mutates_args=())
    def scores_loss(s: torch.Tensor, codes: torch.Tensor, crops: list[int], temperature: float,
                    need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        loss, grad = holder.backend.eager_scores_loss(s, codes, tuple(crops), temperature, need_grad)
        return loss, s.new_empty((0, s.shape[1])) if grad is None else grad

    @scores_loss.register_fake
    def _(s, codes, crops, temperature, need_grad):
        return s.new_empty((), **_F32), s.new_empty((s.shape[0] if need_grad else 0, s.shape[1]))

    @lib.custom_op(prefix + "scores_loss_backward", mutates_args=())
    def scores_loss_backward(grad: torch.Tensor, ds: torch.Tensor, coef: float) -> torch.Tensor:
        return holder.backend.eager_scores_loss_backward(grad, ds, coef)

    @scores_loss_backward.register_fake
    def _(grad, ds, coef):
        return torch.empty_like(ds)

    def scores_setup(ctx, inputs, output):
        s, codes, crops, temperature, _ = inputs
        ctx.save_for_backward(output[1])
        ctx.coef = loss_coef(temperature, len(crops), s.shape[0] // codes.shape[1], codes.shape[1])
        ctx.set_materialize_grads(False)

    def scores_backward(ctx, grad, _ds):
        check_once_differentiable()
        (ds,) = ctx.saved_tensors
        return scores_loss_backward(grad, ds, ctx.coef), None, None, None, None

    scores_loss.register_autograd(scores_backward, setup_context=scores_setup)

    return SimpleNamespace(sinkhorn=sinkhorn, sinkhorn_column_stats=sinkhorn_column_stats,
                           sinkhorn_row_potential=sinkhorn_row_potential, sinkhorn_codes=sinkhorn_codes,
                           embeddings_loss=embeddings_loss, embeddings_loss_backward=embeddings_loss_backward,
                           scores_loss=scores_loss, scores_loss_backward=scores_loss_backward)


def register_ops(backend) -> SimpleNamespace:
    """The custom ops ``swav_kernels::<backend.name>_*``, registered once per process and name; a later
    backend of the same name takes them over."""
    if backend.name not in _REGISTERED:
        holder = SimpleNamespace(backend=backend)
        _REGISTERED[backend.name] = (_register(backend.name, holder), holder)
    ops, holder = _REGISTERED[backend.name]
    holder.backend = backend
    return ops


class TracedSinkhornSteps:
    """The steps ``sinkhorn.distributed_codes`` takes, as custom ops (while torch.compile traces)."""

    def __init__(self, ops: SimpleNamespace, rows: SinkhornRows, epsilon: float) -> None:
        self.ops, self.epsilon = ops, epsilon
        self.args = (rows.main, rows.queue, rows.prototypes, list(rows.crops), rows.batch)

    def column_stats(self, row_potential):
        return self.ops.sinkhorn_column_stats(*self.args, self.epsilon, row_potential)

    def row_potential(self, column_potential):
        return self.ops.sinkhorn_row_potential(*self.args, self.epsilon, column_potential)

    def codes(self, column_potential, normalize_rows: bool):
        return self.ops.sinkhorn_codes(*self.args, self.epsilon, column_potential, normalize_rows)
