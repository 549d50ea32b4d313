"""``backend="auto"`` on a GPU: which kernel backend runs a call, per shape, from measurements.

The rule table below names, for each range of shapes, the kernel backends in order of preference
and the committed measurements the order comes from. A call runs on the first backend of its
rule that is available for the device and dtype; backends no rule names follow, in the order of
their ``auto_rank``. Every candidate is a fused implementation for ``prototypes=`` calls: the
Triton backend recomputes the scores tile by tile and the CUDA backend holds at most one chunk of
them; ``"auto"`` never turns a ``prototypes=`` call into the scores path (the user's matmul, then
the loss of the (V·B, K) scores), even where that path measured faster (large-k bf16:
triton-scores 6.84 ms against triton fused 26.0 ms, at 3072 MiB against 561 MiB).

The CUDA backend was redesigned after these measurements (issue 20: library matmuls and chunked
kernels): **its speed is unmeasured**, so no rule claims it is faster anywhere; it is the fallback
where Triton is unavailable. The rule is keyed on the shape alone (not on the path) so that the
codes and the loss of one call always come from the same backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .backend import Backend, LossSpec
from .kernels import Codes, SinkhornRows


@dataclass(frozen=True)
class Rule:
    """Calls with at most ``max_prototypes`` prototypes (None: any) prefer ``order``."""

    max_prototypes: int | None
    order: tuple[str, ...]
    evidence: str


RULES = (
    Rule(4096, ("triton", "cuda"),
         "benchmarks/results/2026-12-04-h200 (H200, commit 263fdc6), swav-1gpu bf16 fwd+bwd eager: triton 2.40 ms "
         "fused and 2.40 ms scores path against cuda 5.10 ms fused and 4.18 ms scores path (probe-per-call.txt; "
         "the cuda backend's first-contract glue, since replaced); tiny bf16: triton 2.16 ms, cuda not measured. "
         "benchmarks/results/2026-12-04-h200-f5ce584 (Triton's host path): triton swav-1gpu 1.05 ms, tiny 0.249 ms; "
         "cuda not run. The redesigned cuda backend: unmeasured."),
    Rule(None, ("triton", "cuda"),
         "benchmarks/results/2026-12-04-h200, large-k bf16 fwd+bwd: triton 26.0 ms fused against cuda 147 ms "
         "(first-contract glue, since replaced); large-k fp32: triton 153 ms, cuda not measured. (2026-11-29-h200, "
         "commit 4cbf98e, had cuda 221 ms against triton 1030 ms at large-k fp32; the 2026-12-04 Triton figure "
         "supersedes it.) 2026-12-04-h200-f5ce584: triton large-k bf16 26.35 ms, cuda not run. The redesigned "
         "cuda backend: unmeasured."),
)


def rule_for(prototypes: int) -> Rule:
    """The first rule whose range holds ``prototypes``."""
    for rule in RULES:
        if rule.max_prototypes is None or prototypes <= rule.max_prototypes:
            return rule
    raise AssertionError("the last rule takes any shape")


class AutoBackend(Backend):
    """Dispatches each call to a backend of ``candidates`` (name → backend, all available for the
    device and dtype, in ``auto_rank`` order) by ``rule_for`` its prototype count."""

    name = "auto"

    def __init__(self, candidates: dict[str, Backend]) -> None:
        if not candidates:
            raise ValueError("AutoBackend needs at least one candidate backend")
        self.candidates = dict(candidates)

    def choose(self, prototypes: int) -> Backend:
        """The backend that runs a call with ``prototypes`` prototypes: the first of the rule's order that is
        a candidate, else the first candidate. Pure (no cache to fill), so that a torch.compile trace reads it
        without mutating anything its guards would then see change."""
        rule = rule_for(prototypes)
        for name in rule.order:
            if name in self.candidates:
                return self.candidates[name]
        return next(iter(self.candidates.values()))

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return None  # built from backends available for the device and dtype

    def prepare_embeddings_loss(self, embeddings, prototypes, queue, spec: LossSpec, with_grad: bool):
        return self.choose(prototypes.shape[0]).prepare_embeddings_loss(embeddings, prototypes, queue, spec,
                                                                         with_grad)

    def prepare_scores_loss(self, scores, queue_scores, spec: LossSpec, with_grad: bool):
        return self.choose(scores.shape[1]).prepare_scores_loss(scores, queue_scores, spec, with_grad)

    def assignment_codes(self, rows: SinkhornRows, epsilon: float, iterations: int, process_group) -> Codes:
        return self.choose(rows.prototype_count).assignment_codes(rows, epsilon, iterations, process_group)

    def loss_from_scores(self, scores: torch.Tensor, codes: Codes, spec: LossSpec) -> torch.Tensor:
        return self.choose(scores.shape[1]).loss_from_scores(scores, codes, spec)

    def loss_from_embeddings(self, embeddings, prototypes, codes: Codes, spec: LossSpec) -> torch.Tensor:
        return self.choose(prototypes.shape[0]).loss_from_embeddings(embeddings, prototypes, codes, spec)

    def shift_queue(self, queue: torch.Tensor, embeddings: torch.Tensor, crops, batch: int) -> None:
        # a copy: every backend shifts the queue to the same bits; the first rule's choice does it
        self.choose(0).shift_queue(queue, embeddings, crops, batch)
