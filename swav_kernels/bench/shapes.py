"""Benchmark shapes (DESIGN §5), the sweeps built around them, and the plan of cases.

A *case* is one problem (shape and dtype) and one measured operation; every peer is
measured on it, for each of its passes. Operations:
  - ``loss``: the whole SwAV loss from embeddings and prototypes (queue included);
  - ``sinkhorn``: the codes alone, from the assign crops' (and queue's) scores;
  - ``scores-lse``: prototype scoring and the temperature log-sum-exp alone, ``lse(Z Cᵀ/τ)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

OPS = ("loss", "sinkhorn", "scores-lse")
PASSES = ("fwd", "fwd+bwd")
SWEEPS = ("queue", "k", "rows")
# The Sinkhorn codes are constants of the loss: it has no backward pass.
OP_PASSES = {"loss": PASSES, "sinkhorn": ("fwd",), "scores-lse": PASSES}


@dataclass(frozen=True)
class Shape:
    """One SwAV problem: ``batch`` images per rank, ``nmb_crops`` crops per resolution,
    ``prototypes`` K, ``dim`` D, ``queue`` L queued rows per assign crop (0: no queue)."""

    name: str
    batch: int
    nmb_crops: tuple[int, ...]
    prototypes: int
    dim: int
    queue: int = 0
    crops_for_assign: tuple[int, ...] = (0, 1)

    @property
    def n_crops(self) -> int:
        """V, crops per image."""
        return sum(self.nmb_crops)

    @property
    def rows(self) -> int:
        """V·B, rows of the embeddings (and of the scores)."""
        return self.n_crops * self.batch

    @property
    def sinkhorn_rows(self) -> int:
        """L + B, rows of each assign crop's Sinkhorn problem."""
        return self.queue + self.batch

    def params(self) -> tuple:
        """Everything but the name: two shapes with equal params are the same problem."""
        return (self.batch, self.nmb_crops, self.prototypes, self.dim, self.queue, self.crops_for_assign)


NAMED_SHAPES = {
    s.name: s
    for s in (
        # host-overhead probe (issue 10): the paper's crops and D with 4 images and 64 prototypes
        Shape("tiny", 4, (2, 6), 64, 128, 0),
        Shape("swav-4096", 64, (2, 6), 3000, 128, 0),
        Shape("swav-smallbatch", 32, (2, 6), 3000, 128, 480),
        Shape("swav-1gpu", 256, (2, 6), 3000, 128, 3840),
        Shape("large-k", 1024, (2, 8), 65536, 256, 0),
    )
}

# Tiny problems for --quick (CPU, seconds): same structure, a queue, ragged sizes.
QUICK_SHAPES = {
    s.name: s
    for s in (
        Shape("quick-queue", 6, (2, 2), 50, 16, 10),
    )
}


def sweep_shapes(kind: str, quick: bool = False) -> list[Shape]:
    """The shapes of one sweep: ``k`` (prototypes 1k…131k), ``rows`` (V·B 512…16k) or
    ``queue`` (swav-1gpu with its queue off and on). Quick sweeps are tiny versions."""
    if kind == "k":
        ks = (16, 64, 256) if quick else tuple(2 ** p for p in range(10, 18))  # 1024 … 131072
        batch, crops, dim = (4, (2, 2), 16) if quick else (256, (2, 6), 128)
        return [Shape(f"k-{k}", batch, crops, k, dim) for k in ks]
    if kind == "rows":
        rows = (8, 16, 32) if quick else tuple(2 ** p for p in range(9, 15))  # 512 … 16384
        crops, k, dim = ((2, 2), 50, 16) if quick else ((2, 6), 3000, 128)
        return [Shape(f"rows-{r}", r // sum(crops), crops, k, dim) for r in rows]
    if kind == "queue":
        base = QUICK_SHAPES["quick-queue"] if quick else NAMED_SHAPES["swav-1gpu"]
        return [Shape(f"{base.name}-noqueue", base.batch, base.nmb_crops, base.prototypes, base.dim, 0), base]
    raise ValueError(f"sweep must be one of {SWEEPS}, got {kind!r}")


@dataclass(frozen=True)
class Case:
    """One problem and operation; ``sweeps`` names the sweeps the shape belongs to."""

    shape: Shape
    dtype: str
    op: str
    passes: tuple[str, ...]
    sweeps: tuple[str, ...] = field(default=())


def plan_cases(shape_names, sweeps, ops, passes, dtypes, quick: bool = False) -> list[Case]:
    """Cases in the order they run, most telling first, so that a run cut short by a time
    budget has measured what matters: the loss on the named shapes, then the loss on the
    sweeps, then the Sinkhorn and scores-lse alone on the named shapes. A shape met twice
    (e.g. swav-4096 is also the rows sweep's first point) runs once, under its first name.
    Sweeps measure the loss only; ``Case.sweeps`` names those its shape belongs to."""
    named = QUICK_SHAPES if quick else NAMED_SHAPES
    shapes: dict[tuple, Shape] = {}
    membership: dict[tuple, list[str]] = {}
    named_keys = []
    for name in shape_names:
        shape = named[name]
        shapes.setdefault(shape.params(), shape)
        named_keys.append(shape.params())
    sweep_keys = []
    for kind in sweeps:
        for shape in sweep_shapes(kind, quick):
            key = shape.params()
            shapes.setdefault(key, shape)
            membership.setdefault(key, []).append(kind)
            sweep_keys.append(key)
    order = []  # (shape key, op), without repeats
    for key, op in [(k, "loss") for k in named_keys if "loss" in ops] + [(k, "loss") for k in sweep_keys] + [
            (k, op) for op in ops if op != "loss" for k in named_keys]:
        if (key, op) not in order:
            order.append((key, op))
    cases = []
    for key, op in order:
        # the Sinkhorn has only a forward pass: it runs whichever passes were asked for
        op_passes = OP_PASSES[op] if op == "sinkhorn" else tuple(p for p in PASSES if p in passes)
        for dtype in dtypes:
            cases.append(Case(shapes[key], dtype, op, op_passes,
                              tuple(membership.get(key, ())) if op == "loss" else ()))
    return cases


def display_order(records: list[dict]) -> list[dict]:
    """Records grouped for reading: by shape and dtype (in order of first appearance), op, pass."""
    shapes: dict[str, int] = {}
    dtypes: dict[str, int] = {}
    for r in records:
        shapes.setdefault(r["shape"], len(shapes))
        dtypes.setdefault(r["dtype"], len(dtypes))
    return sorted(records, key=lambda r: (shapes[r["shape"]], dtypes[r["dtype"]], OPS.index(r["op"]),
                                          PASSES.index(r["pass"])))
