"""Launch plans of the CUDA backend: for one call signature, the checks' verdict, how the work is
chunked, and a memory budget with a line for every buffer the call allocates.

A plan is a pure function of the call's shapes, dtypes, device, crops and hyper-parameters and of
the backend's two byte budgets, built once and cached (``PlanCache``, bounded): a repeated call
looks its plan up and runs no check again. The argument checks are those of the Triton path
(``swav_kernels.kernel_checks``), so both raise the same errors for the same bad input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import kernel_checks as checks

MAX_GROUPS = 64  # assign crops one kernel call takes (csrc/common/launch.h kMaxGroups)
MiB = 2**20


@dataclass(frozen=True)
class Budget:
    """The byte budgets a plan is chosen by."""

    queue_scores_bytes: int = 1024 * MiB  # queued rows' fp32 scores kept for the whole Sinkhorn, at most
    chunk_bytes: int = 64 * MiB  # one chunk of scores (and, for 16-bit inputs, of ∂S), at most


def _budget_text(lines) -> str:
    total = sum(size for _, size in lines)
    rows = [f"  {size / MiB:10.2f} MiB  {name}" for name, size in lines]
    return "\n".join(rows + [f"  {total / MiB:10.2f} MiB  total"])


@dataclass(frozen=True)
class SinkhornPlan:
    """The Sinkhorn of G = |A| groups of L queued and B batch rows over K prototypes.

    Scores: on the fused path (``dim`` given) the batch rows are scored into the (G, B, K) fp32 codes
    buffer, which the codes overwrite at the end; the queued rows' (G, L, K) fp32 scores are stored
    once when they fit ``Budget.queue_scores_bytes``, else recomputed in chunks of ``queue_chunk``
    rows at every pass (2·T − 1 matmuls of the queue per call). On the scores path the kernels read
    the caller's scores in place.
    """

    groups: int
    queue_rows: int
    batch: int
    prototypes: int
    dim: int | None  # None: the rows are scores
    dtype: torch.dtype
    crops: tuple[int, ...]
    batch_first_rows: tuple[int, ...]  # where group g's batch rows start in the batch segment
    one_batch_matmul: bool  # fused: the assign crops are consecutive, one matmul scores them all
    queue_chunk: int  # 0: queue scores stored (or no queue); else rows per recomputed chunk
    inv_eps: float
    iterations: int

    @property
    def fused(self) -> bool:
        return self.dim is not None

    @property
    def rows(self) -> int:
        return self.queue_rows + self.batch

    @property
    def queue_chunks(self) -> tuple[tuple[int, int], ...]:
        return tuple((start, min(start + self.queue_chunk, self.queue_rows))
                     for start in range(0, self.queue_rows, self.queue_chunk)) if self.queue_chunk else ()

    def budget(self, distributed: bool = False) -> list[tuple[str, int]]:
        g, k = self.groups, self.prototypes
        lines = [(f"codes ({g}, {self.batch}, {k}) fp32" + (", first the batch rows' scores" if self.fused else ""),
                  g * self.batch * k * 4)]
        if self.fused and self.queue_rows and not self.queue_chunk:
            lines.append((f"queue scores ({g}, {self.queue_rows}, {k}) fp32, stored", g * self.queue_rows * k * 4))
        if self.queue_chunk:
            lines.append((f"queue scores chunk ({self.queue_chunk}, {k}) fp32, recomputed per pass",
                          self.queue_chunk * k * 4))
        lines.append((f"row potentials ({g}, {self.rows}) fp32", g * self.rows * 4))
        lines.append((f"column potentials ({g}, {k}) fp32", g * k * 4))
        if distributed or self.queue_chunk:
            lines.append((f"column statistics 2 × ({g}, {k}) fp32", 2 * g * k * 4))
        return lines

    def describe(self) -> str:
        return f"Sinkhorn, {'fused' if self.fused else 'scores'} path:\n" + _budget_text(self.budget())


@dataclass(frozen=True)
class LossPlan:
    """The loss of V crops of B images over K prototypes, in chunks of ``chunk_images`` images (every
    crop of each: V·I score rows per chunk). ``dim`` None: the scores path (one chunk, no matmul)."""

    n_crops: int
    batch: int
    prototypes: int
    dim: int | None
    dtype: torch.dtype
    crops: tuple[int, ...]
    inv_tau: float
    chunk_images: int

    @property
    def loss_scale(self) -> float:
        """1 / (|A|·(V − 1)·B): the swapped loss is a mean over the (assign crop, other crop, image) terms."""
        return 1.0 / (len(self.crops) * (self.n_crops - 1) * self.batch)

    @property
    def coef(self) -> float:
        """The factor between the kernel's ∂S and ∂loss/∂S."""
        return self.inv_tau * self.loss_scale

    @property
    def chunks(self) -> tuple[tuple[int, int], ...]:
        """(first image, images) of each chunk."""
        return tuple((b0, min(self.chunk_images, self.batch - b0)) for b0 in range(0, self.batch, self.chunk_images))

    @property
    def sixteen_bit(self) -> bool:
        return self.dtype != torch.float32

    def budget(self) -> list[tuple[str, int]]:
        v, b, k, size = self.n_crops, self.batch, self.prototypes, torch.finfo(self.dtype).bits // 8
        rows = v * self.chunk_images
        lines = [(f"loss per image ({b},) fp32", b * 4)]
        if self.dim is None:
            lines.append((f"∂S ({v * b}, {k}) in {self.dtype}, kept for the backward", v * b * k * size))
            return lines
        d = self.dim
        lines.append((f"scores chunk ({rows}, {k}) fp32 (∂S over it for fp32 inputs)", rows * k * 4))
        if self.sixteen_bit:
            lines.append((f"∂S chunk ({rows}, {k}) {self.dtype}", rows * k * size))
        if len(self.chunks) > 1:
            lines.append((f"embeddings chunk ({rows}, {d}) {self.dtype}", rows * d * size))
        lines.append((f"∂Z ({v * b}, {d}) fp32, kept for the backward", v * b * d * 4))
        lines.append((f"∂C ({k}, {d}) fp32 accumulator (later chunks add in place), kept for the backward",
                      k * d * 4))
        return lines

    def describe(self) -> str:
        return (f"loss, {'scores' if self.dim is None else 'fused'} path, {len(self.chunks)} chunk(s) of "
                f"{self.chunk_images} images:\n" + _budget_text(self.budget()) +
                "\n  (plus torch's cuBLAS workspace, allocated once per stream, and the gradients autograd returns)")


def loss_coef(temperature: float, n_assign: int, n_crops: int, batch: int) -> float:
    """inv_tau / (|A|·(V − 1)·B), rounded as ``LossPlan.coef`` rounds it."""
    return (1.0 / temperature) * (1.0 / (n_assign * (n_crops - 1) * batch))


class PlanCache:
    """Plans by call signature; at most ``size`` (cleared when full: signatures are few in training)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.plans: dict = {}

    def get(self, key, build):
        plan = self.plans.get(key)
        if plan is None:
            if len(self.plans) >= self.size:
                self.plans.clear()
            plan = self.plans[key] = build()
        return plan


def layout(t: torch.Tensor | None):
    """What a plan depends on of a tensor: shape, strides, dtype, device."""
    return None if t is None else (tuple(t.shape), t.stride(), t.dtype, t.device)


def _check_groups(crops) -> None:
    if len(crops) > MAX_GROUPS:
        raise ValueError(f"the CUDA kernels take at most {MAX_GROUPS} assign crops, got {len(crops)}")


def sinkhorn_plan(rows, epsilon: float, iterations: int, budget: Budget, device_type: str) -> SinkhornPlan:
    """The plan of ``assignment_codes(rows, epsilon, iterations)``, after the Triton path's checks."""
    checks.check_sinkhorn_rows(rows, device_type, "CUDA")
    crops = tuple(rows.crops)
    _check_groups(crops)
    inv_eps = checks.check_finite_float("inv_eps", 1.0 / epsilon, positive=True)
    groups, batch, k = len(crops), rows.batch, rows.prototype_count
    fused = rows.prototypes is not None
    queue_rows = rows.queue_rows
    queue_chunk = 0
    if fused and queue_rows and groups * queue_rows * k * 4 > budget.queue_scores_bytes:
        queue_chunk = max(1, min(queue_rows, budget.chunk_bytes // (k * 4)))
    first_rows = tuple(g * batch for g in range(groups)) if fused else tuple(c * batch for c in crops)
    return SinkhornPlan(groups, queue_rows, batch, k, rows.main.shape[1] if fused else None, rows.main.dtype, crops,
                        first_rows, crops == tuple(range(crops[0], crops[0] + groups)), queue_chunk, inv_eps,
                        iterations)


def embeddings_loss_plan(z, c, codes, crops, temperature: float, budget: Budget, device_type: str) -> LossPlan:
    """The plan of the fused loss of ``z (V·B, D)``, ``c (K, D)`` against ``codes (|A|, B, K)``."""
    z, c = checks.check_embeddings_and_prototypes(z, c, device_type, "CUDA")
    crops = checks.check_codes("codes.codes", codes, z.shape[0], c.shape[0], crops, z)
    return fused_loss_plan(z, c, codes.shape[1], crops, temperature, budget)


def fused_loss_plan(z, c, batch: int, crops, temperature: float, budget: Budget) -> LossPlan:
    """The plan of the fused loss of checked ``z (V·B, D)`` and ``c (K, D)``, B images, assign crops
    ``crops``, with the codes this backend's Sinkhorn makes."""
    _check_groups(crops)
    inv_tau = checks.check_finite_float("inv_tau", 1.0 / temperature, positive=True)
    n_crops, k, d = z.shape[0] // batch, c.shape[0], z.shape[1]
    return LossPlan(n_crops, batch, k, d, z.dtype, tuple(crops), inv_tau,
                    chunk_images(n_crops, batch, k, z.dtype, budget))


def chunk_images(n_crops: int, batch: int, prototypes: int, dtype: torch.dtype, budget: Budget) -> int:
    """Images per loss chunk: as many as fit ``budget.chunk_bytes`` with the chunk's fp32 scores (and,
    for 16-bit inputs, its ∂S in the input dtype), at least one."""
    per_image = n_crops * prototypes * (4 if dtype == torch.float32 else 4 + torch.finfo(dtype).bits // 8)
    return max(1, min(batch, budget.chunk_bytes // per_image))


def scores_loss_plan(s, codes, crops, temperature: float, device_type: str) -> LossPlan:
    """The plan of the loss of scores ``s (V·B, K)`` against ``codes (|A|, B, K)``: one chunk."""
    s = checks.check_input("s", s, 2, device_type=device_type, kernels="CUDA")
    checks._nonempty("s", s)
    crops = checks.check_codes("codes", codes, s.shape[0], s.shape[1], crops, s)
    return given_scores_loss_plan(s, codes.shape[1], crops, temperature)


def given_scores_loss_plan(s, batch: int, crops, temperature: float) -> LossPlan:
    """The plan of the loss of checked scores ``s (V·B, K)``, B images, assign crops ``crops``."""
    _check_groups(crops)
    inv_tau = checks.check_finite_float("inv_tau", 1.0 / temperature, positive=True)
    return LossPlan(s.shape[0] // batch, batch, s.shape[1], None, s.dtype, tuple(crops), inv_tau, batch)
