"""The implementations measured side by side ("peers") and the callables timed for each.

- ``reference``: ``swav_loss(..., backend="reference")``, eager PyTorch (the baseline);
- ``reference-compiled``: the same reference under ``torch.compile(fullgraph=True)``;
- ``plain``: the loss as trainers write it (``swav_kernels.bench.plain``, facebookresearch/swav);
- ``plain-compiled``: ``torch.compile`` of that plain loss: the figure to beat, what a user
  gets from 30 lines and one decorator;
- every kernel backend the registry reports available for the device and dtype
  (``swav_kernels.backend_status``), under its registered name: the fused path
  ``swav_loss(z, prototypes=C, queue=...)``;
- ``<backend>-scores``: the scores path, the user's matmul then
  ``swav_loss(scores, queue_scores=..., backend=<backend>)`` (loss only);
- ``<backend>-graph`` (CUDA only): the backend's calls captured once into a CUDA graph and
  replayed (``graphs.graphed``); a capture failure is that peer's recorded status.

``Peer.functions(op, problem)`` returns, per pass, a callable that runs the operation once
and returns its outputs (forward: the value; forward+backward: the gradients with respect to
the embeddings and prototypes). "Forward" is the forward of a training step: gradients are
enabled, so whatever the backward needs is kept, and then dropped.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..kernels import Codes
from ..loss import sinkhorn, swav_loss
from ..reference import accumulation_dtype
from ..registry import backend_status, resolve_backend
from .graphs import graphed
from .plain import plain_scores_logsumexp, plain_sinkhorn, plain_swav_loss
from .problem import Problem

BUILTIN_PEERS = ("reference", "reference-compiled", "plain", "plain-compiled")
# suffixes of the peers derived from each kernel backend: its scores path, its CUDA-graph replay
SCORES_SUFFIX, GRAPH_SUFFIX = "-scores", "-graph"
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


def _compile(fn, backend: str, fullgraph: bool):
    torch._dynamo.reset()  # a clean cache per case: no recompile limit, no stale guards
    return torch.compile(fn, fullgraph=fullgraph, backend=backend)


class CompiledReferencePeer(Peer):
    """The reference under ``torch.compile(fullgraph=True)``; each case compiles afresh
    (static shapes)."""

    name = "reference-compiled"

    def __init__(self, compile_backend: str = "inductor") -> None:
        self.compile_backend = compile_backend

    def _compile(self, fn):
        return _compile(fn, self.compile_backend, fullgraph=True)

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


class CompiledPlainPeer(Peer):
    """``torch.compile`` of the plain loss, as a user would write it: default options (graph
    breaks allowed), each case compiled afresh."""

    name = "plain-compiled"

    def __init__(self, compile_backend: str = "inductor") -> None:
        self.compile_backend = compile_backend

    def functions(self, op, problem):
        shape = problem.shape
        z, c = problem.embeddings, problem.prototypes
        if op == "loss":
            compiled = _compile(plain_swav_loss, self.compile_backend, fullgraph=False)
            return _loss_passes(lambda: compiled(
                z, c, shape.n_crops, shape.crops_for_assign, problem.temperature, problem.epsilon,
                problem.sinkhorn_iterations, problem.queue), problem)
        if op == "sinkhorn":
            compiled = _compile(plain_sinkhorn, self.compile_backend, fullgraph=False)
            x = problem.sinkhorn_scores
            return {"fwd": lambda: (torch.stack([compiled(x[a], problem.epsilon, problem.sinkhorn_iterations)
                                                 for a in range(x.shape[0])]),)}
        compiled = _compile(plain_scores_logsumexp, self.compile_backend, fullgraph=False)
        return _lse_passes(lambda: compiled(z, c, problem.temperature), problem)


class KernelPeer(Peer):
    """A registered kernel backend, through the public API; ``scores-lse`` (forward only) calls its
    loss kernel (``embeddings_loss`` of swav_kernels.kernels) directly with codes of zero and no
    attention output: scoring + log-sum-exp alone. (The kernel contract has no standalone
    log-sum-exp backward: its backward is the loss's, which the ``loss`` op times.)"""

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
        if kernels is None or not hasattr(kernels, "embeddings_loss"):
            raise Unsupported(f"backend {self.name!r} exposes no kernels.embeddings_loss")
        crops = tuple(problem.shape.crops_for_assign)
        batch = problem.shape.batch
        f32 = dict(device=z.device, dtype=torch.float32)
        codes = Codes(torch.zeros((len(crops), batch, c.shape[0]), **f32), torch.zeros((1, len(crops), batch), **f32),
                      torch.zeros((1, len(crops), batch, z.shape[1]), **f32))  # one partial of mass and projection
        inv_tau = 1.0 / problem.temperature
        return {"fwd": lambda: (kernels.embeddings_loss(z, c, codes, crops, inv_tau, False)[1],)}


class ScoresPathPeer(Peer):
    """``<backend>-scores``: the scores path of a kernel backend, the loss of ``Z Cᵀ`` computed
    by the user (the matmul in the input dtype, as an ``nn.Linear`` gives it) with the queue's
    scores passed as ``queue_scores``; loss only."""

    def __init__(self, backend: str) -> None:
        self.backend, self.name = backend, backend + SCORES_SUFFIX

    def functions(self, op, problem):
        if op != "loss":
            raise Unsupported(f"{self.name} measures the loss only (the scores path has no {op} of its own)")
        shape, z, c, queue = problem.shape, problem.embeddings, problem.prototypes, problem.queue

        def loss():
            return swav_loss(
                z @ c.t(), nmb_crops=list(shape.nmb_crops), crops_for_assign=shape.crops_for_assign,
                temperature=problem.temperature, epsilon=problem.epsilon,
                sinkhorn_iterations=problem.sinkhorn_iterations,
                queue_scores=None if queue is None else queue @ c.t(), backend=self.backend,
                check_finite_inputs=False)

        return _loss_passes(loss, problem)


class GraphPeer(Peer):
    """``<backend>-graph``: every pass of the backend's fused path captured into a CUDA graph
    at its first call and replayed (``graphs.graphed``)."""

    def __init__(self, backend: str) -> None:
        self.backend, self.name = backend, backend + GRAPH_SUFFIX

    def functions(self, op, problem):
        if problem.embeddings.device.type != "cuda":
            raise Unsupported("CUDA graphs need a CUDA device")
        return {pass_: graphed(fn) for pass_, fn in KernelPeer(self.backend).functions(op, problem).items()}


def derived_peer_names(backend: str, device) -> tuple[list[str], dict[str, str]]:
    """(the peers measured for an available kernel ``backend`` on ``device``, {name: why not})."""
    names, unavailable = [backend, backend + SCORES_SUFFIX], {}
    if torch.device(device).type == "cuda":
        names.append(backend + GRAPH_SUFFIX)
    else:
        unavailable[backend + GRAPH_SUFFIX] = "CUDA graphs need a CUDA device"
    return names, unavailable


def available_peer_names(device, dtype) -> tuple[list[str], dict[str, str]]:
    """(names of the peers that run on ``device`` with ``dtype``, {unavailable name: reason}):
    the built-in peers, then each available kernel backend and its scores path, then the
    CUDA-graph peers last (a capture that fails can leave the device in a poorer state)."""
    names, graphs, unavailable = list(BUILTIN_PEERS), [], {}
    for name, reason in backend_status(device, dtype).items():
        if name in BUILTIN_PEERS:
            continue
        if reason is None:
            derived, why_not = derived_peer_names(name, device)
            names += [n for n in derived if not n.endswith(GRAPH_SUFFIX)]
            graphs += [n for n in derived if n.endswith(GRAPH_SUFFIX)]
            unavailable.update(why_not)
        else:
            unavailable[name] = reason
    return names + graphs, unavailable


def make_peer(name: str, compile_backend: str = "inductor") -> Peer:
    """The peer called ``name`` (a built-in peer, a registered kernel backend, or one of the
    ``-scores`` / ``-graph`` peers derived from a backend)."""
    if name == "reference":
        return ReferencePeer()
    if name == "reference-compiled":
        return CompiledReferencePeer(compile_backend)
    if name == "plain":
        return PlainPeer()
    if name == "plain-compiled":
        return CompiledPlainPeer(compile_backend)
    if name.endswith(SCORES_SUFFIX):
        return ScoresPathPeer(name[: -len(SCORES_SUFFIX)])
    if name.endswith(GRAPH_SUFFIX):
        return GraphPeer(name[: -len(GRAPH_SUFFIX)])
    return KernelPeer(name)
