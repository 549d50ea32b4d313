"""A whole SwAV loss call on the Triton kernels, prepared once per call signature (DESIGN §5a).

``FusedLossPlan`` (embeddings + prototypes) and ``ScoresLossPlan`` (given scores) hold every launch of
one forward + backward — the Sinkhorn's 2·T launches, the loss forward (and its merge), the backward
(and its merge) — with tiles, grids, splits, scalars and compiled kernels fixed, and the layout of one
workspace allocation holding every intermediate. A call then costs one allocation, the launches
(straight to the compiled kernels after the first call, ``swav_kernels.triton.launcher``) and the
loss's sum. ``swav_kernels.loss`` caches one plan per call signature, so every argument check ran
when the plan was made; the plan's ``__call__`` is one ``torch.autograd.Function``.

Buffers of a call, in order (``Buffer`` indices): the input tensors, then the forward workspace's
regions; the backward adds the upstream gradient, the gradients it writes and its own workspace.
"""
from __future__ import annotations

import torch

from ..kernels import SinkhornRows
from .embeddings_grad import BackwardShape, prepare_backward
from .embeddings_loss import LossForwardShape, prepare_loss_forward
from .launch import stream_getter
from . import launcher
from .launcher import Buffer
from .rows import RowShape
from .scores_loss import prepare_scores_grad, prepare_scores_loss
from .sinkhorn_codes import code_split_count, prepare_codes
from .sinkhorn_column import column_split_count, prepare_column_step
from .sinkhorn_row import prepare_row_step, row_split_count
from .workspace import Workspace

ROW_BUFFERS = (Buffer(0), Buffer(1), Buffer(2))  # main, queue (or main), prototypes (or main)


def _prepare_sinkhorn(shape: RowShape, epsilon: float, iterations: int, workspace: Workspace, counters=None):
    """The Sinkhorn launches (T ≥ 1) over the row buffers, their intermediates in ``workspace``: column
    step, then T − 1 times (row step, column step), then on the fused path one more row step and the codes
    split over prototype ranges, on the scores path the codes sweeping each row twice (2·T launches, its
    budget). The first launch zeroes ``counters`` (``(buffer, count)`` of int32 tickets, or None). Returns
    the launches, the regions of the codes, their mass and (fused path) their projection, and the codes'
    number of prototype ranges."""
    inv_eps = 1.0 / epsilon
    fused = shape.recompute
    column_splits = column_split_count(shape)
    row_splits = row_split_count(shape)
    code_splits = code_split_count(shape, row_lse=fused)
    col_max = workspace.add(column_splits, shape.groups, shape.prototypes)
    col_sum = workspace.add(column_splits, shape.groups, shape.prototypes)
    row_max = workspace.add(row_splits, shape.groups, shape.rows)
    row_sum = workspace.add(row_splits, shape.groups, shape.rows)
    row_stats = (row_max, row_sum, row_splits)
    codes = workspace.add(shape.groups, shape.batch, shape.prototypes)
    mass = workspace.add(code_splits, shape.groups, shape.batch)
    projected = workspace.add(code_splits, shape.groups, shape.batch, shape.dim) if fused else None
    first_column = prepare_column_step(shape, inv_eps, column_splits, ROW_BUFFERS, None, col_max, col_sum, counters)
    row = prepare_row_step(shape, inv_eps, column_splits, row_splits, ROW_BUFFERS, col_max, col_sum, row_max, row_sum)
    column = prepare_column_step(shape, inv_eps, column_splits, ROW_BUFFERS, row_stats, col_max, col_sum)
    launches = [first_column] + [row, column] * (iterations - 1)
    if fused:
        launches += [row, prepare_codes(shape, inv_eps, column_splits, True, code_splits, ROW_BUFFERS, col_max,
                                        col_sum, row_stats, codes, mass, projected)]
    else:
        launches += [prepare_codes(shape, inv_eps, column_splits, True, code_splits, ROW_BUFFERS, col_max, col_sum,
                                   None, codes, mass, None)]
    return launches, codes, mass, projected, code_splits


def _no_double_backward() -> None:
    if torch.is_grad_enabled():  # backward(create_graph=True): the kernels' gradient is not differentiable
        raise RuntimeError("swav_kernels: the Triton loss has no second derivative; call backward() without "
                           "create_graph=True (or use backend='reference')")


class _Plan:
    """What both plans share: the launch sequences and how a sequence runs.

    A run goes straight to the compiled kernels (``launch.direct(stream, addresses)``) once every
    launch has run once through ``kernel[grid]`` (``fast``), unless a launch hook is installed; the
    addresses are the input tensors' and the workspace regions', in ``Buffer`` order."""

    forward_launches: list
    backward_launches: list
    workspace: Workspace
    backward_workspace: Workspace
    loss_region: Buffer

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.float32 = torch.empty(0, device=device, dtype=torch.float32)  # what workspaces are made like
        self.stream = stream_getter(device)
        self.fast = False

    def _settle(self) -> None:
        """After a ``kernel[grid]`` run: go direct once every launch has its compiled kernel."""
        launches = self.forward_launches + self.backward_launches
        if all(launch.ready for launch in launches):
            self.forward_direct = [launch.direct for launch in self.forward_launches]
            self.backward_direct = [launch.direct for launch in self.backward_launches]
            if self.loss_region is not None:
                index = self.loss_region.index - self.workspace.first_buffer
                offset = self.workspace.offsets[index]
                self.loss_slice = slice(offset, offset + self.workspace.shapes[index][0])
            self.fast = True

    def forward(self, inputs: tuple):
        """Run the forward launches; returns (loss, forward buffers for the backward). The fused plan's
        forward writes the loss itself (a 0-d output after the inputs); the scores plan's loss is the sum of
        its rows' shares (``loss_region``)."""
        buffer = self.workspace.allocate(self.float32)
        loss = self.float32.new_empty(()) if self.loss_region is None else None
        if loss is not None:
            inputs = inputs + (loss,)
        if self.fast and not launcher.hooks_installed():
            base = buffer.data_ptr()
            addresses = tuple([t.data_ptr() for t in inputs] + [base + o for o in self.workspace.byte_offsets])
            stream = self.stream()
            for launch in self.forward_direct:
                launch(stream, addresses)
            if loss is None:
                loss = buffer[self.loss_slice].sum()
            return loss, (buffer, None, addresses)
        tensors = inputs + self.workspace.views(buffer)
        for launch in self.forward_launches:
            launch.run_tensors(tensors)
        if loss is None:
            loss = self.workspace.view(buffer, self.loss_region).sum()
        return loss, (buffer, tensors, None)

    def backward(self, grad: torch.Tensor, outputs: tuple, forward_buffers) -> None:
        """Run the backward launches writing ``outputs`` (the gradients)."""
        _, tensors, addresses = forward_buffers
        workspace = self.backward_workspace
        buffer = workspace.allocate(self.float32) if workspace.size else None
        if addresses is not None:
            addresses = addresses + tuple([grad.data_ptr()] + [t.data_ptr() for t in outputs])
            if buffer is not None:
                base = buffer.data_ptr()
                addresses = addresses + tuple([base + o for o in workspace.byte_offsets])
            stream = self.stream()
            for launch in self.backward_direct:
                launch(stream, addresses)
            return
        tensors = tensors + (grad, *outputs) + (() if buffer is None else workspace.views(buffer))
        for launch in self.backward_launches:
            launch.run_tensors(tensors)
        self._settle()


class FusedLossPlan(_Plan):
    """The fused path: ``swav_loss(z, prototypes=c, queue=…)`` with T ≥ 1, one process. Buffers:
    0 z (V·B, D), 1 the queue (|A|, L, D) or z, 2 c (K, D), 3 the loss (0-d), then the workspace."""

    def __init__(self, z: torch.Tensor, c: torch.Tensor, queue: torch.Tensor | None, n_crops: int,
                 crops: tuple[int, ...], temperature: float, epsilon: float, iterations: int, with_grad: bool):
        super().__init__(z.device)
        self.has_queue = queue is not None
        batch = z.shape[0] // n_crops
        rows, dim = z.shape
        shape = RowShape.of(SinkhornRows(z, queue, crops, batch, c))
        forward = LossForwardShape.of(rows, dim, c.shape[0], len(crops), batch, z.dtype, z.device, with_grad)
        backward = BackwardShape.of(rows, dim, c.shape[0], len(crops), batch, z.dtype, z.device) if with_grad else None
        loss = Buffer(3)
        self.loss_region = None  # the forward kernel adds the loss up itself
        self.workspace = Workspace(first_buffer=4)
        # int32 tickets of the loss forward's and the backward's split reductions (tickets.py), side by
        # side at the start of the workspace: the first Sinkhorn launch zeroes both at once
        counters = self.workspace.add(forward.counters, dtype=torch.int32)
        backward_counters = None
        if backward is not None and backward.partial_shape() is not None:
            backward_counters = self.workspace.add(backward.counters, dtype=torch.int32)
        zeroed = (counters, self.workspace.span(counters, backward_counters or counters))
        sinkhorn, codes, mass, projected, code_splits = _prepare_sinkhorn(shape, epsilon, iterations, self.workspace,
                                                                          zeroed)
        lse = self.workspace.add(rows)
        out = self.workspace.add(rows, dim) if with_grad else None
        block_loss = self.workspace.add(forward.row_blocks)
        partials = [None if s is None else self.workspace.add(*s) for s in forward.partial_shapes()]
        inv_tau = 1.0 / temperature
        z_buffer, c_buffer = Buffer(0), Buffer(2)
        self.forward_launches = sinkhorn + [prepare_loss_forward(
            forward, z.dtype, crops, inv_tau, code_splits, z_buffer, c_buffer, mass, projected, lse, out, block_loss,
            loss, counters, *partials)]
        self.backward_launches = []
        self.backward_workspace = Workspace(first_buffer=self.workspace.first_buffer + len(self.workspace.shapes) + 3)
        if with_grad:
            grad = Buffer(self.backward_workspace.first_buffer - 3)
            partial = None if backward.partial_shape() is None else self.backward_workspace.add(
                *backward.partial_shape())
            self.backward_launches = [prepare_backward(
                backward, z.dtype, crops, inv_tau, code_splits, z_buffer, c_buffer, codes, mass, projected, lse, out,
                grad, Buffer(grad.index + 1), Buffer(grad.index + 2), partial, backward_counters)]
        self.with_grad = with_grad

    def __call__(self, z: torch.Tensor, c: torch.Tensor, queue: torch.Tensor | None, _=None) -> torch.Tensor:
        """The loss of ``z``, ``c`` and ``queue`` (ignored when the plan was made without one)."""
        if not self.has_queue:
            queue = None
        if self.with_grad:
            return _FusedLoss.apply(z, c, queue, self)
        loss, _ = self.forward((z, z if queue is None else queue, c))
        if not self.fast:
            self._settle()
        return loss


class _FusedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, c, queue, plan):
        inputs = (z, z if queue is None else queue, c)
        loss, buffers = plan.forward(inputs)
        ctx.save_for_backward(z, c)
        ctx.plan, ctx.buffers = plan, buffers
        return loss

    @staticmethod
    def backward(ctx, grad):
        _no_double_backward()
        z, c = ctx.saved_tensors
        grad_z, grad_c = torch.empty_like(z), torch.empty_like(c)
        ctx.plan.backward(grad, (grad_z, grad_c), ctx.buffers)
        return grad_z, grad_c, None, None


class ScoresLossPlan(_Plan):
    """The scores path: ``swav_loss(s, queue_scores=…)`` with T ≥ 1, one process. Buffers: 0 s (V·B, K),
    1 the queued scores (|A|, L, K) or s, 2 s again (no prototypes)."""

    def __init__(self, s: torch.Tensor, queue: torch.Tensor | None, n_crops: int, crops: tuple[int, ...],
                 temperature: float, epsilon: float, iterations: int, with_grad: bool):
        super().__init__(s.device)
        self.has_queue = queue is not None
        rows, prototypes = s.shape
        batch = rows // n_crops
        shape = RowShape.of(SinkhornRows(s, queue, crops, batch, None))
        self.workspace = Workspace(first_buffer=3)
        sinkhorn, codes, _, _, _ = _prepare_sinkhorn(shape, epsilon, iterations, self.workspace)
        lse = self.workspace.add(rows)
        weight = self.workspace.add(rows)
        self.loss_region = self.workspace.add(rows)
        inv_tau = 1.0 / temperature
        s_buffer = Buffer(0)
        self.forward_launches = sinkhorn + [prepare_scores_loss(rows, prototypes, len(crops), batch, crops, inv_tau,
                                                                s_buffer, codes, lse, weight, self.loss_region)]
        self.backward_workspace = Workspace(first_buffer=self.workspace.first_buffer + len(self.workspace.shapes) + 2)
        grad = Buffer(self.backward_workspace.first_buffer - 2)
        self.backward_launches = [prepare_scores_grad(rows, prototypes, len(crops), batch, crops, inv_tau, s_buffer,
                                                      codes, lse, weight, grad, Buffer(grad.index + 1))] \
            if with_grad else []
        self.with_grad = with_grad

    def __call__(self, s: torch.Tensor, _=None, __=None, queue: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of scores ``s`` and queued scores ``queue`` (ignored when the plan was made without one)."""
        if not self.has_queue:
            queue = None
        if self.with_grad:
            return _ScoresLoss.apply(s, queue, self)
        loss, _ = self.forward((s, s if queue is None else queue, s))
        if not self.fast:
            self._settle()
        return loss


class _ScoresLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, queue, plan):
        loss, buffers = plan.forward((s, s if queue is None else queue, s))
        ctx.save_for_backward(s)
        ctx.plan, ctx.buffers = plan, buffers
        return loss

    @staticmethod
    def backward(ctx, grad):
        _no_double_backward()
        (s,) = ctx.saved_tensors
        grad_s = torch.empty_like(s)
        ctx.plan.backward(grad, (grad_s,), ctx.buffers)
        return grad_s, None, None
