"""The Sinkhorn of the CUDA backend (DESIGN.md §1): scores from a library matmul, then alternating
column and row steps over dual potentials, one kernel launch each (``contract.py``).

Codes are ``q[n, k] = softmax_k(x[n, k]/ε + a[k])``: a column step sets
``a = −log K − LSE_n(x/ε + b)`` (b = 0 at first), a row step ``b = −LSE_k(x/ε + a)``; T iterations
are T column steps, T − 1 row steps and the codes. Across ranks each column step writes its
(max, Σexp) pair, which is all-reduced (a max, then a sum) before the potential is formed; row
steps stay local. Nothing here waits for the device.
"""
from __future__ import annotations

import math

import torch

from ..distributed import all_reduce_max_, all_reduce_sum_
from ..kernels import SinkhornRows
from .launchers import KernelLaunchers
from .matmul import mm_f32
from .plans import SinkhornPlan


class SinkhornRun:
    """One call's Sinkhorn on its plan: the score segments, the buffers, and the steps. Each step
    writes into the run's own buffer and returns it."""

    def __init__(self, launch: KernelLaunchers, plan: SinkhornPlan, rows: SinkhornRows) -> None:
        self.launch, self.plan = launch, plan
        groups, batch, k = plan.groups, plan.batch, plan.prototypes
        f32 = dict(device=rows.main.device, dtype=torch.float32)
        self.codes_buffer = torch.empty(groups, batch, k, **f32)
        self.queue = rows.queue  # the scores path reads the caller's scores in place
        self.batch = rows.main
        if plan.fused:
            self._score_batch(rows)
            self.batch = self.codes_buffer.view(groups * batch, k)
            self.queue = None
            if plan.queue_rows and not plan.queue_chunk:
                queue = rows.queue.reshape(groups * plan.queue_rows, plan.dim)
                self.queue = mm_f32(queue, rows.prototypes.t()).view(groups, plan.queue_rows, k)
        self._queue_embeddings, self._prototypes = rows.queue, rows.prototypes
        self._chunk = torch.empty(plan.queue_chunk, k, **f32) if plan.queue_chunk else None
        self.row_buffer = torch.empty(groups, plan.rows, **f32)
        self.column_buffer = torch.empty(groups, k, **f32)
        self.stats = None  # (max, Σexp) buffers, made on first use

    def _score_batch(self, rows: SinkhornRows) -> None:
        """The batch rows of every assign crop, scored in fp32 into the codes buffer."""
        plan, c_t = self.plan, rows.prototypes.t()
        batch = plan.batch
        if plan.one_batch_matmul:
            first = plan.crops[0] * batch
            mm_f32(rows.main[first:first + plan.groups * batch], c_t, out=self.codes_buffer.view(-1, plan.prototypes))
        else:
            for g, crop in enumerate(plan.crops):
                mm_f32(rows.main[crop * batch:(crop + 1) * batch], c_t, out=self.codes_buffer[g])

    def _queue_chunks(self):
        """(group, first queued row, its chunk's fp32 scores (1, rows, K)), each scored when reached."""
        c_t = self._prototypes.t()
        for g in range(self.plan.groups):
            for start, stop in self.plan.queue_chunks:
                x = self._chunk[:stop - start]
                mm_f32(self._queue_embeddings[g, start:stop], c_t, out=x)
                yield g, start, x[None]

    def _stats_buffers(self):
        if self.stats is None:
            self.stats = (torch.empty_like(self.column_buffer), torch.empty_like(self.column_buffer))
        return self.stats

    def _columns(self, row_potential, stats, potential, log_cols: float) -> None:
        plan, launch = self.plan, self.launch
        if not plan.queue_chunk:
            launch.sinkhorn_columns(self.queue, self.batch, plan.batch_first_rows, plan.batch, plan.inv_eps,
                                    row_potential, *(stats or (None, None)), False, potential, log_cols)
            return
        top, sumexp = stats if stats is not None else self._stats_buffers()
        for g, start, x in self._queue_chunks():  # the queued rows of one group, chunk by chunk, accumulated
            launch.sinkhorn_columns(x, None, (0,), 0, plan.inv_eps,
                                    None if row_potential is None else row_potential[g:g + 1, start:],
                                    top[g:g + 1], sumexp[g:g + 1], start > 0, None, 0.0)
        launch.sinkhorn_columns(None, self.batch, plan.batch_first_rows, plan.batch, plan.inv_eps,
                                None if row_potential is None else row_potential[:, plan.queue_rows:],
                                top, sumexp, True, potential, log_cols)

    def column_potential(self, row_potential: torch.Tensor | None, log_cols: float) -> torch.Tensor:
        """a = −log_cols − LSE_n(x/ε + b) (G, K), over this rank's rows."""
        self._columns(row_potential, None, self.column_buffer, log_cols)
        return self.column_buffer

    def column_stats(self, row_potential: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (max, Σexp) pair of x/ε + b per (group, prototype) over this rank's rows."""
        stats = self._stats_buffers()
        self._columns(row_potential, stats, None, 0.0)
        return stats

    def row_potential(self, column_potential: torch.Tensor) -> torch.Tensor:
        """b = −LSE_k(x/ε + a) (G, L + B)."""
        plan, launch, b = self.plan, self.launch, self.row_buffer
        if not plan.queue_chunk:
            launch.sinkhorn_rows(self.queue, self.batch, plan.batch_first_rows, plan.batch, plan.inv_eps,
                                 column_potential, b)
            return b
        for g, start, x in self._queue_chunks():
            launch.sinkhorn_rows(x, None, (0,), 0, plan.inv_eps, column_potential[g:g + 1], b[g:g + 1, start:])
        launch.sinkhorn_rows(None, self.batch, self.plan.batch_first_rows, plan.batch, plan.inv_eps,
                             column_potential, b[:, plan.queue_rows:])
        return b

    def codes(self, column_potential: torch.Tensor, normalize_rows: bool) -> torch.Tensor:
        """The batch rows' codes (G, B, K) fp32; on the fused path they overwrite its scores."""
        plan = self.plan
        self.launch.sinkhorn_codes(self.batch, plan.batch_first_rows, plan.batch, plan.inv_eps, column_potential,
                                   normalize_rows, self.codes_buffer)
        return self.codes_buffer


def zero_iteration_potential(column_lse: torch.Tensor, log_rows_total) -> torch.Tensor:
    """a[g, k] = log N_total − LSE_{n,k}(x/ε) for every k: the codes ``exp(x/ε + a)`` are DESIGN.md
    §1's for T = 0 (``P /= sum(P)``, then ``P *= N``)."""
    total = torch.logsumexp(column_lse, dim=1, keepdim=True)
    return (log_rows_total - total).expand_as(column_lse).contiguous()


def local_codes(run: SinkhornRun, iterations: int) -> torch.Tensor:
    """Codes of one rank's rows: 2·T launches plus the matmuls (T = 0: 2 launches and a few small ops)."""
    log_k = math.log(run.plan.prototypes)
    if iterations == 0:
        column_lse = -run.column_potential(None, 0.0)
        return run.codes(zero_iteration_potential(column_lse, math.log(run.plan.rows)), False)
    potential = run.column_potential(None, log_k)
    for _ in range(iterations - 1):
        potential = run.column_potential(run.row_potential(potential), log_k)
    return run.codes(potential, True)


def reduce_column_lse(stats: tuple[torch.Tensor, torch.Tensor], process_group) -> torch.Tensor:
    """LSE over the rows of every rank from each rank's (max, Σexp): a max, then a sum, all-reduced."""
    top, sumexp = stats
    global_top = all_reduce_max_(top.clone(), process_group)
    total = all_reduce_sum_(sumexp * torch.exp(top - global_top), process_group)
    return global_top + torch.log(total)


def distributed_codes(steps, prototypes: int, rows: int, iterations: int, process_group) -> torch.Tensor:
    """``local_codes`` over the rows of every rank. ``steps`` has ``column_stats(b)``,
    ``row_potential(a)`` and ``codes(a, normalize_rows)`` (a ``SinkhornRun``, or the custom ops while
    torch.compile traces). Ranks may hold different numbers of rows; the global count (T = 0 only)
    is summed on the device. ``prototypes``: K; ``rows``: this rank's L + B."""
    log_k = math.log(prototypes)
    column_lse = reduce_column_lse(steps.column_stats(None), process_group)
    if iterations == 0:
        count = all_reduce_sum_(torch.full((), float(rows), device=column_lse.device), process_group)
        return steps.codes(zero_iteration_potential(column_lse, torch.log(count)), False)
    potential = -log_k - column_lse
    for _ in range(iterations - 1):
        column_lse = reduce_column_lse(steps.column_stats(steps.row_potential(potential)), process_group)
        potential = -log_k - column_lse
    return steps.codes(potential, True)
