"""FLOP and byte counts of the benchmarked operations: the *useful* count (DESIGN §5, the same
for every peer) and the matmul passes each peer's algorithm actually performs.

Convention: one matmul pass over ``M`` rows costs ``2·M·K·D`` FLOPs (a multiply and an add per
element of an ``M×K`` by ``K×D`` product, or ``M×D`` by ``D×K``); everything that is not a
matmul (exp, sums, the Sinkhorn's scalings) is not counted.

- *useful* FLOPs (``useful_flops``): DESIGN §5's lower bound, the common denominator of every
  peer's "useful TFLOP/s": scores ``S = Z Cᵀ`` once forward (2·(V·B)·D·K), ∂Z and ∂C backward
  (6·(V·B)·D·K forward+backward), plus scoring the queue, 2·|A|·L·D·K (forward only).
- *performed* FLOPs (``algorithm_flops``): ``Σ 2·M·K·D`` over the passes of ``matmul_passes``,
  the FLOPs the peer's algorithm executes (recomputation included); "% of peak" divides this
  rate by the device's matmul peak, so it says how busy the matrix units are.
"""
from __future__ import annotations

import torch

from .shapes import Shape

# How each peer computes the loss; the kernel backends' names are not known here, so every
# peer that is not listed is a kernel backend: "fused" (``swav_loss(z, prototypes=C)``), or
# "scores" for ``<backend>-scores`` (the user's matmul, then ``swav_loss(scores)``); a
# ``<backend>-graph`` peer replays its backend's fused path and performs the same passes.
MATERIALISED = ("reference", "reference-compiled", "plain", "plain-compiled")
# the CUDA backend's fused path (and its graph replay): library matmuls on chunks of rows (DESIGN §2)
LIBRARY = ("cuda", "cuda-graph")


def algorithm(peer: str) -> str:
    """``"materialised"`` (the scores as one matmul, autograd's two backward matmuls),
    ``"scores"`` (the same matmuls by the user, kernel Sinkhorn and cross-entropy on them),
    ``"library"`` (the CUDA backend: the same three matmuls on chunks, all in the forward) or
    ``"fused"`` (the Triton backend's fused path, logits never materialised)."""
    if peer in MATERIALISED:
        return "materialised"
    if peer.endswith("-scores"):
        return "scores"
    if peer in LIBRARY:
        return "library"
    return "fused"


def matmul_passes(peer: str, shape: Shape, op: str, pass_: str, iterations: int = 3, sixteen_bit: bool = False,
                  width_splits: dict | None = None) -> list[tuple[str, int]] | None:
    """The matmul passes of one call of ``op`` by ``peer``: ``[(what, rows M), ...]``, each pass
    costing ``2·M·K·D`` FLOPs; ``[]`` when the operation has no matmul (the Sinkhorn on given
    scores), None where the peer's algorithm is not known here.

    ``pass_`` is ``"fwd"`` (a training step's forward: gradients enabled, so whatever the
    backward needs is computed) or ``"fwd+bwd"``. ``iterations`` is the Sinkhorn's T;
    ``sixteen_bit``: fp16/bf16 inputs (the fused codes project hi and lo parts). ``width_splits``
    (``fused_width_splits``): per fused kernel ("codes", "forward", "backward"), the programs that share
    the width D of its (rows × D) accumulator, each scoring the same rows again (default 1). With
    ``V·B`` rows of embeddings, ``|A|`` assign crops, ``L`` queue rows per assign crop:

    =============  ===========================================  ===========================================
    algorithm      loss, forward                                 loss, backward (added for fwd+bwd)
    =============  ===========================================  ===========================================
    materialised   scores: V·B; queue scores: |A|·L              ∂Z = ∂S C: V·B; ∂C = ∂Sᵀ Z: V·B
    scores         the same (the user's matmul)                  the same (autograd on the user's matmul)
    fused          Sinkhorn: 2T passes over |A|·(L+B) rows        ∂C: recompute scores V·B, softmaxᵀ·Z V·B
                   (T column and T row steps, scores recomputed
                   from the embeddings); codes: scores again
                   over |A|·B and codes·C over |A|·B (twice for
                   16-bit inputs: hi and lo); scoring + lse +
                   softmax·C: 2 passes over V·B; every "scores"
                   pass of codes, forward and backward once per
                   part of the width (``Tiles.width_splits``)
    library        Sinkhorn scores: |A|·B and |A|·L (stored     none (the backward scales ∂Z and ∂C)
                   once: every benchmark shape fits the budget
                   of swav_kernels/cuda/plans.py); scores V·B,
                   ∂Z = ∂S C V·B, ∂C = ∂Sᵀ Z V·B (gradients
                   on; scores only without)
    =============  ===========================================  ===========================================

    ``scores-lse`` (``lse(Z Cᵀ/τ)`` alone): materialised 1 pass forward, +2 backward; fused
    (the kernels' ``scores_logsumexp`` with its softmax·C output, ``softmax_prototype_grad``)
    2 passes forward, +2 backward; library: not measured (None). ``sinkhorn`` (codes of given
    scores): none.

    The fused rows are the launches of contract v3 (DESIGN §2, ``swav-bench --plan`` counts them per
    launch with the same model, ``plan.py``).
    """
    if op == "sinkhorn":
        return []
    kind = algorithm(peer)
    vb, n_assign, queue = shape.rows, len(shape.crops_for_assign), shape.queue
    backward = pass_ == "fwd+bwd"
    if op == "scores-lse":
        if kind == "library":
            return None
        if kind == "fused":
            parts = {"forward": 1, "backward": 1, **(width_splits or {})}
            passes = [("scores + lse", vb)] * parts["forward"] + [("softmax·C", vb)]
            return passes + ([("∂C: recompute scores", vb)] * parts["backward"] + [("∂C: softmaxᵀ·Z", vb)]
                             if backward else [])
        return [("scores", vb)] + ([("∂Z = ∂S C", vb), ("∂C = ∂Sᵀ Z", vb)] if backward else [])
    if op != "loss":
        return None
    if kind in ("materialised", "scores"):
        passes = [("scores", vb)] + ([("queue scores", n_assign * queue)] if queue else [])
        return passes + ([("∂Z = ∂S C", vb), ("∂C = ∂Sᵀ Z", vb)] if backward else [])
    if kind == "library":
        passes = [("Sinkhorn: batch scores", n_assign * shape.batch)]
        passes += [("Sinkhorn: queue scores", n_assign * queue)] if queue else []
        return passes + [("scores", vb), ("∂Z = ∂S C", vb), ("∂C = ∂Sᵀ Z", vb)]
    parts = {"codes": 1, "forward": 1, "backward": 1, **(width_splits or {})}
    sinkhorn_rows = n_assign * (queue + shape.batch)
    passes = [(f"Sinkhorn pass {n + 1}: recompute scores", sinkhorn_rows) for n in range(2 * iterations)]
    passes += [("codes: recompute scores", n_assign * shape.batch)] * parts["codes"]
    passes += [("codes·C", n_assign * shape.batch)]
    passes += [("codes·C, lo part", n_assign * shape.batch)] if sixteen_bit else []
    passes += [("scores + lse", vb)] * parts["forward"] + [("softmax·C", vb)]
    if backward:
        passes += [("∂C: recompute scores", vb)] * parts["backward"] + [("∂C: softmaxᵀ·Z", vb)]
    return passes


def fused_width_splits(dim: int, dtype: torch.dtype, device: torch.device) -> dict:
    """``{kernel: parts}`` of the Triton fused path's codes, loss forward and backward at width ``dim`` on
    ``device`` (``matmul_passes``'s ``width_splits``), from the tile tables (needs triton)."""
    from ..triton.launch import dot_precision
    from ..triton.tiles import matmul_tiles

    return {kernel: matmul_tiles(kernel, dim, dtype, dot_precision(dtype), 0, device).width_splits
            for kernel in ("codes", "forward", "backward")}


def algorithm_flops(peer: str, shape: Shape, op: str, pass_: str, iterations: int = 3,
                    sixteen_bit: bool = False, width_splits: dict | None = None) -> int | None:
    """FLOPs of the matmul passes ``peer`` performs (``matmul_passes``, 2·M·K·D each); None
    where unknown or where the operation has no matmul."""
    passes = matmul_passes(peer, shape, op, pass_, iterations, sixteen_bit, width_splits)
    if not passes:
        return None
    return sum(2 * rows * shape.prototypes * shape.dim for _, rows in passes)


def useful_flops(shape: Shape, op: str, pass_: str) -> int | None:
    """DESIGN §5's lower bound on the matmul FLOPs of ``op``, the same for every peer; None for
    the Sinkhorn alone.

    Scores ``S = Z Cᵀ`` cost 2·(V·B)·D·K; the backward adds ∂Z = ∂S C and ∂C = ∂Sᵀ Z, so
    forward+backward is 6·(V·B)·D·K. The loss also scores the queue: 2·|A|·L·D·K, forward only.
    The Sinkhorn's exp/sum passes are not matmul work and are not counted.
    """
    if op == "sinkhorn":
        return None
    per_pass = 2 * shape.rows * shape.dim * shape.prototypes
    flops = per_pass * (3 if pass_ == "fwd+bwd" else 1)
    if op == "loss":
        flops += 2 * len(shape.crops_for_assign) * shape.queue * shape.dim * shape.prototypes
    return flops


matmul_flops = useful_flops  # the name earlier results and the pytest-benchmark suite use


def sinkhorn_bytes(shape: Shape, dtype: torch.dtype) -> int:
    """Lower bound on the memory traffic of the Sinkhorn alone: read the (|A|, L+B, K) scores
    once and write the float32 codes of the same shape once."""
    elements = len(shape.crops_for_assign) * shape.sinkhorn_rows * shape.prototypes
    return elements * (torch.empty((), dtype=dtype).element_size() + 4)
