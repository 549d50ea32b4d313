"""Plain-PyTorch transcription of the kernel contract (swav_kernels/kernels.py).

Each method materialises what the real kernels tile, straight from the contract's formulas; it
is the oracle of the per-kernel tests and lets the shared orchestration (kernel_backend) be
tested without any kernel.
"""
import math

import torch

from swav_kernels.kernels import Codes, ColumnStats, RowStats


def sinkhorn_scores(rows) -> torch.Tensor:
    """x (G, N, K) float32 of ``SinkhornRows``: queue rows, then the batch rows of each crop."""
    main = rows.main.float()
    batch = torch.stack([main[c * rows.batch:(c + 1) * rows.batch] for c in rows.crops])
    x = batch if rows.queue is None else torch.cat((rows.queue.float(), batch), dim=1)
    if rows.prototypes is not None:
        x = x @ rows.prototypes.float().t()
    return x


def column_potential(columns: ColumnStats) -> torch.Tensor:
    """a (G, K) = −log K − LSE_s(max + log sumexp)."""
    lse = torch.logsumexp(columns.max + torch.log(columns.sumexp), dim=0)
    return -math.log(columns.max.shape[2]) - lse


def row_potential(row_stats: RowStats) -> torch.Tensor:
    """b (G, N) = −LSE_k u from the row partials (base 2)."""
    return -torch.logsumexp((row_stats.max + torch.log2(row_stats.sumexp)) * math.log(2.0), dim=0)


def merged(partials):
    """A codes bundle's S partials (mass (S, G, B), projection (S, G, B, D)) added up."""
    return None if partials is None else partials.sum(dim=0)


def predicted(crops, n_crops, per_assign: torch.Tensor) -> torch.Tensor:
    """(V, B, ...): Σ_{a: A[a] ≠ v} per_assign[a] for every crop v."""
    out = per_assign.sum(dim=0, keepdim=True).repeat(n_crops, *([1] * (per_assign.dim() - 1)))
    out[list(crops)] -= per_assign
    return out


class OracleKernels:
    name = "oracle"

    def row_splits(self, rows):
        return 1

    def code_splits(self, rows, row_lse):
        return 1

    def unavailable_reason(self, device, dtype):
        return None if dtype in (torch.float32, torch.float16, torch.bfloat16) else f"no {dtype} kernels"

    def sinkhorn_column_step(self, rows, inv_eps, row_stats):
        x = sinkhorn_scores(rows)
        t = x * inv_eps
        if row_stats is not None:
            t = t + row_potential(row_stats)[:, :, None]
        col_max = t.amax(dim=1)
        sumexp = torch.exp(t - col_max[:, None, :]).sum(dim=1) + (0 * x).sum(dim=1)
        return ColumnStats(col_max[None], sumexp[None])

    def sinkhorn_row_step(self, rows, inv_eps, columns):
        """One partial (R = 1): the row's max and sum of 2^(t·log2 e − max)."""
        t = (sinkhorn_scores(rows) * inv_eps + column_potential(columns)[:, None, :]) / math.log(2.0)
        top = t.amax(dim=2)
        return RowStats(top[None], torch.exp2(t - top[:, :, None]).sum(dim=2)[None])

    def sinkhorn_codes(self, rows, inv_eps, columns, row_stats, normalize_rows):
        """One partial (S = 1) of the mass and projection; with ``row_stats`` the row's log-sum-exp is
        theirs (they were computed from the same columns)."""
        x = sinkhorn_scores(rows)[:, -rows.batch:]
        u = x * inv_eps + column_potential(columns)[:, None, :]
        if row_stats is not None:
            codes = torch.exp(u + row_potential(row_stats)[:, -rows.batch:, None])
        elif normalize_rows:
            codes = torch.exp(u - torch.logsumexp(u, dim=2, keepdim=True))
        else:
            codes = torch.exp(u)
        projected = None if rows.prototypes is None else (codes @ rows.prototypes.float())[None]
        return Codes(codes, codes.sum(dim=2)[None], projected)

    def _layout(self, rows, codes, crops):
        batch = codes.shape[1]
        n_crops = rows // batch
        return n_crops, batch, len(crops) * (n_crops - 1) * batch

    def embeddings_loss(self, z, c, codes, crops, inv_tau, with_output):
        n_crops, batch, denom = self._layout(z.shape[0], codes.codes, crops)
        logits = (z.float() @ c.float().t()) * inv_tau
        lse = torch.logsumexp(logits, dim=1)
        weight = predicted(crops, n_crops, merged(codes.mass)).reshape(-1)
        cross = (predicted(crops, n_crops, merged(codes.projected)).reshape_as(z) * z.float()).sum(dim=1)
        loss = ((weight * lse).sum() - inv_tau * cross.sum() + (0 * z.float()).sum()) / denom
        out = torch.softmax(logits, dim=1) @ c.float() if with_output else z.new_empty((0, z.shape[1]),
                                                                                         dtype=torch.float32)
        return loss, lse, out

    def embeddings_loss_backward(self, grad, z, c, codes, crops, inv_tau, lse, out):
        n_crops, batch, denom = self._layout(z.shape[0], codes.codes, crops)
        coef = grad.float() * inv_tau / denom
        weight = predicted(crops, n_crops, merged(codes.mass)).reshape(-1)
        grad_z = coef * (weight[:, None] * out - predicted(crops, n_crops, merged(codes.projected)).reshape_as(out))
        p = torch.exp((z.float() @ c.float().t()) * inv_tau - lse[:, None])
        g = weight[:, None] * p - predicted(crops, n_crops, codes.codes).reshape_as(p)
        grad_c = coef * (g.t() @ z.float())
        return grad_z.to(z.dtype), grad_c.to(c.dtype)

    def scores_loss(self, s, codes, crops, inv_tau):
        n_crops, batch, denom = self._layout(s.shape[0], codes, crops)
        lse = torch.logsumexp(s.float() * inv_tau, dim=1)
        weight = predicted(crops, n_crops, codes.sum(dim=2)).reshape(-1)
        cross = (predicted(crops, n_crops, codes).reshape_as(s) * s.float()).sum(dim=1)
        poison = (0 * s.float()).sum() + (0 * codes).sum()
        return ((weight * lse).sum() - inv_tau * cross.sum() + poison) / denom, lse, weight

    def scores_loss_backward(self, grad, s, codes, crops, inv_tau, lse, weight):
        n_crops, batch, denom = self._layout(s.shape[0], codes, crops)
        coef = grad.float() * inv_tau / denom
        softmax = torch.exp(s.float() * inv_tau - lse[:, None])
        return (coef * (weight[:, None] * softmax - predicted(crops, n_crops, codes).reshape_as(s))).to(s.dtype)
