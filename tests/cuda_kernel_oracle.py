"""Plain-PyTorch transcription of the CUDA kernel contract (swav_kernels/cuda/contract.py).

Each method computes its docstring's formula on whole tensors, in float32 on the upcast inputs,
and writes the outputs the kernel would write; the CUDA kernels (emulated on the CPU, or on a GPU)
are tested against it.
"""

import torch


def _rows(queue, batch, first_rows, batch_rows):
    """x (G, N, K) float32: each group's queue rows, then its batch rows."""
    parts = []
    for g, first in enumerate(first_rows):
        rows = [] if queue is None else [queue[g].float()]
        if batch_rows:
            rows.append(batch[first:first + batch_rows].float())
        parts.append(torch.cat(rows))
    return torch.stack(parts)


def _zero(x, dim):
    return (x * 0).sum(dim=dim)


class CudaKernelOracle:
    def sinkhorn_columns(self, queue, batch, first_rows, batch_rows, inv_eps, row_potential, column_max,
                         column_sumexp, accumulate, column_potential, log_cols):
        x = _rows(queue, batch, first_rows, batch_rows)
        t = x * inv_eps
        if row_potential is not None:
            t = t + row_potential[:, :x.shape[1], None]
        top = t.amax(dim=1)
        sumexp = torch.exp(t - top[:, None]).sum(dim=1)
        if accumulate:
            merged = torch.maximum(top, column_max)
            sumexp = sumexp * torch.exp(top - merged) + column_sumexp * torch.exp(column_max - merged)
            top = merged
        zero = _zero(x, 1)
        if column_max is not None:
            column_max.copy_(top)
            column_sumexp.copy_(sumexp + zero)
        if column_potential is not None:
            column_potential.copy_(-log_cols - (top + torch.log(sumexp)) + zero)

    def sinkhorn_rows(self, queue, batch, first_rows, batch_rows, inv_eps, column_potential, row_potential):
        x = _rows(queue, batch, first_rows, batch_rows)
        lse = torch.logsumexp(x * inv_eps + column_potential[:, None, :], dim=2)
        row_potential[:, :x.shape[1]] = -lse + _zero(x, 2)

    def sinkhorn_codes(self, batch, first_rows, batch_rows, inv_eps, column_potential, normalize_rows, codes):
        x = _rows(None, batch, first_rows, batch_rows)
        u = x * inv_eps + column_potential[:, None, :]
        out = torch.softmax(u, dim=2) if normalize_rows else torch.exp(u)
        codes.copy_(out + _zero(x, 2)[..., None])

    def swapped_loss(self, scores, codes, crops, first_image, inv_tau, loss_scale, loss, grad):
        n_crops, images, _ = scores.shape
        s = scores.float()
        block = codes[:, first_image:first_image + images].float()
        q = torch.zeros_like(s)
        for v in range(n_crops):
            for a, crop in enumerate(crops):
                if crop != v:
                    q[v] += block[a]
        w = q.sum(dim=2)
        lse = torch.logsumexp(s * inv_tau, dim=2)
        terms = w * lse - inv_tau * (q * s).sum(dim=2)
        poison = _zero(s, (0, 2)) + _zero(q, (0, 2))
        loss[first_image:first_image + images] = loss_scale * terms.sum(dim=0) + poison
        if grad is not None:
            grad.copy_((w[..., None] * torch.exp(s * inv_tau - lse[..., None]) - q).to(grad.dtype))

    def scale_gradients(self, upstream, coef, jobs):
        for src, dst, crops, batch, chunk in jobs:
            rows = []
            for m in range(crops * batch):
                v, b = divmod(m, batch)
                b0 = b - b % chunk
                images = min(chunk, batch - b0)
                rows.append(crops * b0 + v * images + (b - b0))
            dst.copy_((upstream.float() * coef * src.float()[rows]).to(dst.dtype))

    def shift_queue(self, queue, embeddings, crops, batch):
        length = queue.shape[1]
        new = torch.stack([embeddings[c * batch:(c + 1) * batch] for c in crops]).to(queue.dtype)
        kept = max(length - batch, 0)
        queue.copy_(torch.cat((new, queue[:, :kept]), dim=1)[:, :length])

