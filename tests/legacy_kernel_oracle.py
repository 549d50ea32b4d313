"""Plain-PyTorch transcription of the first kernel contract, which the CUDA kernels (csrc/) still
implement (the formulas in the docstrings of swav_kernels.cuda.kernels.CudaKernels).

Each method materialises what the real kernels tile; it is the oracle for per-kernel
tests and lets the shared orchestration (kernel_backend) be tested without any kernel.
"""
import torch


class OracleKernels:
    name = "oracle"

    def unavailable_reason(self, device, dtype):
        return None if dtype in (torch.float32, torch.float16, torch.bfloat16) else f"no {dtype} kernels"

    def sinkhorn_column_init(self, x, inv_eps):
        logits = x.float() * inv_eps
        col_max = logits.amax(dim=1)
        return col_max, torch.exp(logits - col_max[:, None]).sum(dim=1)

    def sinkhorn_row_step(self, x, inv_eps, col_potential, log_rows_total, normalize_rows, want_column_sums,
                          codes_from_row):
        logits = x.float() * inv_eps + col_potential[:, None, :]
        if normalize_rows:  # subtract the row lse from the same rounded logits: rows sum to 1
            p = torch.exp(logits - torch.logsumexp(logits, dim=2, keepdim=True) - log_rows_total)
        else:
            p = torch.exp(logits)
        sums = p.sum(dim=1) if want_column_sums else x.new_empty((x.shape[0], 0), dtype=torch.float32)
        if codes_from_row >= 0:
            codes = p[:, codes_from_row:] * torch.exp(torch.tensor(log_rows_total))
        else:
            codes = x.new_empty((x.shape[0], 0, x.shape[2]), dtype=torch.float32)
        return sums, codes

    def scores_logsumexp(self, z, c, inv_tau, with_output):
        logits = (z.float() @ c.float().t()) * inv_tau
        lse = torch.logsumexp(logits, dim=1)
        out = torch.softmax(logits, dim=1) @ c.float() if with_output else z.new_empty((0, z.shape[1]),
                                                                                         dtype=torch.float32)
        return lse, out

    def softmax_prototype_grad(self, z, c, lse, row_weight, inv_tau):
        p = torch.exp((z.float() @ c.float().t()) * inv_tau - lse[:, None])
        return (p * row_weight[:, None]).t() @ z.float()

    def _code_sum(self, n_crops, codes, crops_for_assign):
        """(V, B, K): Σ_{a: A[a] ≠ v} codes[a] for every crop v."""
        total = codes.sum(dim=0, keepdim=True).repeat(n_crops, 1, 1)
        total[list(crops_for_assign)] -= codes
        return total

    def scores_cross_entropy_forward(self, s, codes, crops_for_assign, inv_tau):
        batch = codes.shape[1]
        n_crops = s.shape[0] // batch
        lse = torch.logsumexp(s.float() * inv_tau, dim=1)
        cross = (self._code_sum(n_crops, codes, crops_for_assign).view_as(s) * s.float()).sum(dim=1)
        return lse, cross

    def scores_cross_entropy_backward(self, s, codes, lse, row_weight, crops_for_assign, inv_tau, scale):
        batch = codes.shape[1]
        n_crops = s.shape[0] // batch
        softmax = torch.exp(s.float() * inv_tau - lse[:, None])
        grad = row_weight[:, None] * softmax - self._code_sum(n_crops, codes, crops_for_assign).view_as(s)
        return (scale * grad).to(s.dtype)
