"""The implementations measured side by side ("peers") and the callables timed for each.

- ``reference``: ``swav_loss(..., backend="reference")``, eager PyTorch (the baseline);
- ``compiled``: the same reference under ``torch.compile(fullgraph=True)``;
- ``plain``: the loss as trainers write it (``swav_kernels.bench.plain``);
- every kernel backend the registry reports available for the device and dtype
  (``swav_kernels.backend_status``), under its registered name.

``Peer.functions(op, problem)`` returns, per pass, a callable that runs the operation once
and returns its outputs (forward: the value; forward+backward: the gradients with respect to
the embeddings and prototypes). "Forward" is the forward of a training step: gradients are
enabled, so whatever the backward needs is kept, and then dropped.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..loss import sinkhorn, swav_loss
from ..reference import accumulation_dtype
from ..registry import backend_status, resolve_backend
from .plain import plain_scores_logsumexp, plain_sinkhorn, plain_swav_loss
from .problem import Problem

BUILTIN_PEERS = ("reference", "compiled", "plain")
Outputs = tuple  # of tensors
Passes = dict  # pass name -> Callable[[], Outputs]


class Unsupported(Exception):
    """A peer has no implementation of an operation (recorded, not a failure)."""


def _loss_passes(loss_fn: Callable[[], torch.Tensor], problem: Problem) -> Passes:
    inputs = (problem.embeddings, problem.prototypes)

    def forward():
        return (loss_fn().detach(),)

    def forward_backward():
        return torch.autograd.grad(loss_fn(), inputs)

    return {"fwd": forward, "fwd+bwd": forward_backward}


def _lse_passes(lse_fn: Callable[[], torch.Tensor], problem: Problem) -> Passes:
    """scores-lse forward returns ``lse (V·B,)``; its backward differentiates ``Σ lse``."""
    inputs = (problem.embeddings, problem.prototypes)

    def forward():
        return (lse_fn().detach(),)

    def forward_backward():
        return torch.autograd.grad(lse_fn().sum(), inputs)

    return {"fwd": forward, "fwd+bwd": forward_backward}


def api_loss(problem: Problem, z, c, queue, backend: str = "reference") -> torch.Tensor:
    """The loss of embeddings ``z`` and prototypes ``c`` (and ``queue``) with ``problem``'s
    hyper-parameters, through the public API with ``backend`` (no finiteness check: no sync)."""
    shape = problem.shape
    return swav_loss(
        z, c, nmb_crops=list(shape.nmb_crops), crops_for_assign=shape.crops_for_assign,
        temperature=problem.temperature, epsilon=problem.epsilon,
        sinkhorn_iterations=problem.sinkhorn_iterations, queue=queue, backend=backend, check_finite_inputs=False,
    )


def api_sinkhorn(problem: Problem, x, backend: str = "reference") -> torch.Tensor:
    """Codes ``(|A|, L+B, K)`` of the Sinkhorn scores ``x`` through the public API with ``backend``."""
    return sinkhorn(x, problem.epsilon, problem.sinkhorn_iterations, backend=backend, check_finite_inputs=False)


def reference_scores_logsumexp(z: torch.Tensor, c: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logsumexp(Z Cᵀ / τ)`` per row as the reference evaluates it (inputs upcast first)."""
    dtype = accumulation_dtype(z.dtype)
    return torch.logsumexp((z.to(dtype) @ c.to(dtype).t()) / temperature, dim=1)


class Peer:
    """One implementation under test."""

    name = ""

    def functions(self, op: str, problem: Problem) -> Passes:
        """``{pass: callable}`` for ``op`` on ``problem``; raises Unsupported if it has none."""
        raise NotImplementedError


class ReferencePeer(Peer):
    name = "reference"

    def functions(self, op, problem):
        z, c = problem.embeddings, problem.prototypes
        if op == "loss":
            return _loss_passes(lambda: api_loss(problem, z, c, problem.queue), problem)
        if op == "sinkhorn":
            return {"fwd": lambda: (api_sinkhorn(problem, problem.sinkhorn_scores),)}
        return _lse_passes(lambda: reference_scores_logsumexp(z, c, problem.temperature), problem)


class CompiledReferencePeer(Peer):
    """The reference under ``torch.compile``; each case compiles afresh (static shapes)."""

    name = "compiled"

    def __init__(self, compile_backend: str = "inductor") -> None:
        self.compile_backend = compile_backend

    def _compile(self, fn):
        torch._dynamo.reset()  # a clean cache per case: no recompile limit, no stale guards
        return torch.compile(fn, fullgraph=True, backend=self.compile_backend)

    def functions(self, op, problem):
        z, c = problem.embeddings, problem.prototypes
        if op == "loss":
            compiled = self._compile(lambda z, c, queue: api_loss(problem, z, c, queue))
            return _loss_passes(lambda: compiled(z, c, problem.queue), problem)
        if op == "sinkhorn":
            compiled = self._compile(lambda x: api_sinkhorn(problem, x))
            return {"fwd": lambda: (compiled(problem.sinkhorn_scores),)}
        compiled = self._compile(reference_scores_logsumexp)
        return _lse_passes(lambda: compiled(z, c, problem.temperature), problem)


class PlainPeer(Peer):
    name = "plain"

    def functions(self, op, problem):
        shape = problem.shape
        z, c = problem.embeddings, problem.prototypes
        if op == "loss":
            return _loss_passes(lambda: plain_swav_loss(
                z, c, shape.n_crops, shape.crops_for_assign, problem.temperature, problem.epsilon,
                problem.sinkhorn_iterations, problem.queue), problem)
        if op == "sinkhorn":
            x = problem.sinkhorn_scores
            return {"fwd": lambda: (torch.stack([plain_sinkhorn(x[a], problem.epsilon, problem.sinkhorn_iterations)
                                                 for a in range(x.shape[0])]),)}
        return _lse_passes(lambda: plain_scores_logsumexp(z, c, problem.temperature), problem)


class KernelPeer(Peer):
    """A registered kernel backend, through the public API; ``scores-lse`` calls its kernels
    (``scores_logsumexp`` and ``softmax_prototype_grad`` of swav_kernels.kernels) directly."""

    def __init__(self, name: str) -> None:
        self.name = name

    def functions(self, op, problem):
        if op == "loss":
            return _loss_passes(lambda: api_loss(problem, problem.embeddings, problem.prototypes, problem.queue,
                                                 backend=self.name), problem)
        if op == "sinkhorn":
            return {"fwd": lambda: (api_sinkhorn(problem, problem.sinkhorn_scores, backend=self.name),)}
        z, c = problem.embeddings.detach(), problem.prototypes.detach()
        kernels = getattr(resolve_backend(self.name, z.device, z.dtype), "kernels", None)
        if kernels is None:
            raise Unsupported(f"backend {self.name!r} exposes no kernels.scores_logsumexp")
        inv_tau = 1.0 / problem.temperature

        def forward():
            return (kernels.scores_logsumexp(z, c, inv_tau, True)[0],)

        def forward_backward():
            # d Σ lse / dZ = out / τ;  d Σ lse / dC = Σ_m softmax(z_m Cᵀ/τ)ᵀ z_m / τ
            lse, out = kernels.scores_logsumexp(z, c, inv_tau, True)
            ones = torch.ones_like(lse)
            grad_c = kernels.softmax_prototype_grad(z, c, lse, ones, inv_tau)
            return (out.mul_(inv_tau).to(z.dtype), grad_c.mul_(inv_tau).to(c.dtype))

        return {"fwd": forward, "fwd+bwd": forward_backward}


def available_peer_names(device, dtype) -> tuple[list[str], dict[str, str]]:
    """(names of the peers that run on ``device`` with ``dtype``, {unavailable name: reason})."""
    names, unavailable = list(BUILTIN_PEERS), {}
    for name, reason in backend_status(device, dtype).items():
        if name in BUILTIN_PEERS:
            continue
        if reason is None:
            names.append(name)
        else:
            unavailable[name] = reason
    return names, unavailable


def make_peer(name: str, compile_backend: str = "inductor") -> Peer:
    """The peer called ``name`` (a built-in peer or a registered kernel backend)."""
    if name == "reference":
        return ReferencePeer()
    if name == "compiled":
        return CompiledReferencePeer(compile_backend)
    if name == "plain":
        return PlainPeer()
    return KernelPeer(name)
