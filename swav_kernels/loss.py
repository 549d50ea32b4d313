"""Public functional API: ``swav_loss`` and ``sinkhorn``.

Both validate their arguments, pick a backend (``swav_kernels.registry``) and run the
computation of DESIGN §1 through it. The orchestration here is backend-independent:
codes for each assign crop from its scores (queued rows prepended), then the
swapped-prediction cross-entropy over every (assign crop, other crop) pair.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .backend import LossSpec
from .kernels import Codes, SinkhornRows
from .registry import resolve_backend
from .validation import (
    _is_compiling,
    check_crops_for_assign,
    check_finite,
    check_iterations,
    check_n_crops,
    check_positive_float,
    check_same_device,
    check_same_dtype,
    check_tensor,
    tf32_allowed,
)


def _crop_major_rows(name: str, value) -> tuple[torch.Tensor, int | None]:
    """A ``(V·B, X)`` tensor from a tensor or a list of V ``(B, X)`` tensors (then V is known)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{name} is an empty list; pass one (B, X) tensor per crop")
        parts = [check_tensor(f"{name}[{v}]", t, 2) for v, t in enumerate(value)]
        for v, t in enumerate(parts[1:], start=1):
            check_same_device(f"{name}[{v}]", t, f"{name}[0]", parts[0])
            check_same_dtype(f"{name}[{v}]", t, f"{name}[0]", parts[0])
            if t.shape != parts[0].shape:
                raise ValueError(
                    f"{name}[{v}] has shape {tuple(t.shape)} but {name}[0] has {tuple(parts[0].shape)}; "
                    "every crop must have the same shape"
                )
        return torch.cat(parts, dim=0), len(parts)
    return check_tensor(name, value, 2), None


def _spec(n_crops, crops_for_assign, temperature, epsilon, sinkhorn_iterations, process_group) -> LossSpec:
    return LossSpec(
        n_crops=n_crops,
        crops_for_assign=check_crops_for_assign(crops_for_assign, n_crops),
        temperature=check_positive_float("temperature", temperature),
        epsilon=check_positive_float("epsilon", epsilon),
        sinkhorn_iterations=check_iterations("sinkhorn_iterations", sinkhorn_iterations),
        process_group=process_group,
    )


def _check_queue(name: str, queue, n_assign: int, width: int, width_name: str, like: torch.Tensor):
    """A ``(|A|, L, width)`` queue on the device of ``like``; None when absent or empty."""
    if queue is None:
        return None
    if isinstance(queue, (list, tuple)):
        queue = torch.stack([check_tensor(f"{name}[{a}]", q, 2) for a, q in enumerate(queue)])
    check_tensor(name, queue, 3)
    check_same_device(name, queue, "inputs", like)
    if queue.shape[0] != n_assign or queue.shape[2] != width:
        raise ValueError(
            f"{name} must have shape (len(crops_for_assign)={n_assign}, L, {width_name}={width}), "
            f"got {tuple(queue.shape)}"
        )
    return queue if queue.shape[1] > 0 else None


_PREPARED: dict = {}  # call signature -> prepared call of swav_loss (every check passed when it was made)
_PREPARED_LIMIT = 512
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)  # subclasses with their own dispatch take the full path


def _tensor_signature(t):
    """What a prepared call depends on in a tensor: shape, strides, dtype, device, 16-byte alignment
    (Triton compiles aligned and unaligned pointers apart) and whether it wants a gradient."""
    if type(t) not in _TENSOR_TYPES:
        raise TypeError
    return t.shape, t.stride(), t.dtype, t.device, t.data_ptr() & 15, t.requires_grad


def _value_signature(value):
    """A plain argument with its type (and its items' types): True and 1, or 0.1 and a float
    subclass, never share a prepared call; a list becomes a tuple."""
    kind = type(value)
    if kind is list or kind is tuple:
        return kind, tuple(value), tuple(map(type, value))
    return kind, value


def _call_signature(inputs, prototypes, nmb_crops, crops_for_assign, temperature, epsilon, sinkhorn_iterations,
                    queue, queue_scores, backend):
    """The key of a prepared call; raises TypeError when this call cannot have one (a tensor subclass,
    or an argument that is not hashable): it then takes the full path."""
    return (
        _tensor_signature(inputs),
        None if prototypes is None else _tensor_signature(prototypes),
        None if queue is None else _tensor_signature(queue),
        None if queue_scores is None else _tensor_signature(queue_scores),
        _value_signature(nmb_crops), _value_signature(crops_for_assign), _value_signature(temperature),
        _value_signature(epsilon), _value_signature(sinkhorn_iterations), _value_signature(backend),
        torch.is_grad_enabled(), inputs.dtype is torch.float32 and tf32_allowed(),
    )


def swav_loss(
    inputs: torch.Tensor | Sequence[torch.Tensor],
    prototypes: torch.Tensor | None = None,
    *,
    nmb_crops: int | Sequence[int] | None = None,
    crops_for_assign: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    queue: torch.Tensor | None = None,
    queue_scores: torch.Tensor | None = None,
    process_group=None,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> torch.Tensor:
    """The SwAV swapped-prediction loss (DESIGN §1).

    Args:
        inputs: without ``prototypes``, crop-major scores ``S (V·B, K)`` or a list of V
            per-crop ``(B, K)`` scores; with ``prototypes``, L2-normalised embeddings
            ``Z (V·B, D)`` (or a list of V ``(B, D)``), and the scores ``Z Cᵀ`` are computed
            by the backend (the fused backends never materialise them).
        prototypes: ``C (K, D)``, same dtype and device as the embeddings.
        nmb_crops: crops per image, an int V or a list per resolution (``[2, 6]`` → V=8);
            inferred from a list of per-crop tensors.
        crops_for_assign: the crops A whose codes are predicted from the other crops.
        temperature: τ of the softmax. epsilon: ε of the Sinkhorn.
        sinkhorn_iterations: T ≥ 0.
        queue: ``(|A|, L, D)`` queued embeddings per assign crop (needs ``prototypes``),
            scored with the current prototypes and prepended to the Sinkhorn rows.
        queue_scores: ``(|A|, L, K)`` queued scores instead (either path).
        process_group: ranks whose rows share the Sinkhorn sums (None: this rank only).
        backend: ``"auto"``, ``"reference"`` or a registered kernel backend.
        check_finite_inputs: raise ValueError naming the first input that holds NaN or ±inf
            (one host synchronisation). By default no input is inspected: a non-finite input
            gives a NaN loss, and the call never waits for the device.

    Returns:
        0-d loss, float32 for 16-bit inputs, else the input dtype. Gradients flow into
        ``inputs`` and ``prototypes``; codes and queues are constants.

    A call with the signature of an earlier one (tensor shapes, strides, dtypes, devices and alignment,
    every other argument, grad mode) reuses what that call prepared: its checks passed, its backend,
    and on the Triton backend every launch (DESIGN §5a).
    """
    signature = None
    if process_group is None and not _is_compiling():
        try:
            signature = _call_signature(inputs, prototypes, nmb_crops, crops_for_assign, temperature, epsilon,
                                        sinkhorn_iterations, queue, queue_scores, backend)
            prepared = _PREPARED.get(signature)
        except TypeError:  # not preparable: the full path every time
            signature = prepared = None
        if prepared is not None:
            if check_finite_inputs:
                check_finite(_named_inputs(inputs, prototypes, queue, queue_scores))
            return prepared(inputs, prototypes, queue, queue_scores)
    prepared = _prepare_swav_loss(inputs, prototypes, nmb_crops, crops_for_assign, temperature, epsilon,
                                  sinkhorn_iterations, queue, queue_scores, process_group, backend)
    if check_finite_inputs:
        rows, _ = _crop_major_rows("inputs", inputs)
        check_finite(_named_inputs(rows, prototypes, queue, queue_scores))
    if signature is not None:
        if len(_PREPARED) >= _PREPARED_LIMIT:
            _PREPARED.clear()
        _PREPARED[signature] = prepared
    return prepared(inputs, prototypes, queue, queue_scores)


def _named_inputs(rows, prototypes, queue, queue_scores) -> dict:
    named = {"inputs": rows}
    for name, value in (("prototypes", prototypes), ("queue", queue), ("queue_scores", queue_scores)):
        if isinstance(value, torch.Tensor):
            named[name] = value
        elif isinstance(value, (list, tuple)):
            named[name] = torch.stack(list(value))
    return named


def _prepare_swav_loss(inputs, prototypes, nmb_crops, crops_for_assign, temperature, epsilon, sinkhorn_iterations,
                       queue, queue_scores, process_group, backend):
    """Check every argument (raising errors that name it) and return the call
    ``(inputs, prototypes, queue, queue_scores) -> loss`` for these arguments and any later call with
    the same signature: the backend's prepared call where it has one, else the generic orchestration."""
    rows, listed_crops = _crop_major_rows("inputs", inputs)
    if nmb_crops is None:
        if listed_crops is None:
            raise ValueError("nmb_crops is required when inputs is a single tensor (e.g. nmb_crops=[2, 6])")
        n_crops = check_n_crops(listed_crops)
    else:
        n_crops = check_n_crops(nmb_crops)
        if listed_crops is not None and listed_crops != n_crops:
            raise ValueError(f"nmb_crops adds up to {n_crops} crops but inputs is a list of {listed_crops}")
    if rows.shape[0] == 0 or rows.shape[0] % n_crops:
        raise ValueError(
            f"inputs has {rows.shape[0]} rows, which is not a positive multiple of the {n_crops} crops"
        )
    spec = _spec(n_crops, crops_for_assign, temperature, epsilon, sinkhorn_iterations, process_group)
    n_assign = len(spec.crops_for_assign)
    if rows.shape[1] == 0:
        raise ValueError("inputs must have at least one column")

    if prototypes is not None:
        check_tensor("prototypes", prototypes, 2)
        check_same_device("prototypes", prototypes, "inputs", rows)
        check_same_dtype("prototypes", prototypes, "inputs", rows)
        if prototypes.shape[1] != rows.shape[1] or prototypes.shape[0] == 0:
            raise ValueError(
                f"prototypes must have shape (K >= 1, D={rows.shape[1]}) to match the embeddings, "
                f"got {tuple(prototypes.shape)}"
            )
    elif queue is not None:
        raise ValueError("queue holds embeddings and needs prototypes to score them; pass queue_scores instead")
    if queue is not None and queue_scores is not None:
        raise ValueError("pass either queue (embeddings) or queue_scores, not both")
    n_prototypes = rows.shape[1] if prototypes is None else prototypes.shape[0]
    checked_queue = _check_queue("queue", queue, n_assign, rows.shape[1], "D", rows)
    checked_queue_scores = _check_queue("queue_scores", queue_scores, n_assign, n_prototypes, "K", rows)
    impl = resolve_backend(backend, rows.device, rows.dtype)

    # A backend's prepared call launches outside torch.compile's view: while compiling, the generic
    # path's custom ops run instead.
    if (listed_crops is None and not isinstance(queue, (list, tuple)) and not isinstance(queue_scores, (list, tuple))
            and not _is_compiling()):
        with_grad = torch.is_grad_enabled() and (rows.requires_grad or (prototypes is not None
                                                                         and prototypes.requires_grad))
        if prototypes is not None and queue_scores is None:
            call = impl.prepare_embeddings_loss(rows, prototypes, checked_queue, spec, with_grad)
        elif prototypes is None:
            call = impl.prepare_scores_loss(rows, checked_queue_scores, spec, with_grad)
        else:
            call = None
        if call is not None:
            return call

    def generic(inputs, prototypes, queue, queue_scores):
        rows, _ = _crop_major_rows("inputs", inputs) if not isinstance(inputs, torch.Tensor) else (inputs, None)
        if isinstance(queue, (list, tuple)):
            queue = torch.stack(list(queue))
        if isinstance(queue_scores, (list, tuple)):
            queue_scores = torch.stack(list(queue_scores))
        return _generic_loss(impl, spec, rows, prototypes,
                             queue if checked_queue is not None else None,
                             queue_scores if checked_queue_scores is not None else None)

    return generic


def _generic_loss(impl, spec, rows, prototypes, queue, queue_scores) -> torch.Tensor:
    """DESIGN §1 through the backend's three operations: the codes of the assign crops, then the loss."""
    batch = rows.shape[0] // spec.n_crops
    n_assign = len(spec.crops_for_assign)
    queued = queue if queue is not None else queue_scores
    if queued is not None and queued.dtype != rows.dtype:
        queued = queued.to(rows.dtype)  # the kernels read queue and batch rows in one tile
    sinkhorn_rows = SinkhornRows(
        main=rows.detach(),
        queue=None if queued is None else queued.detach(),
        crops=spec.crops_for_assign,
        batch=batch,
        prototypes=None if prototypes is None else prototypes.detach(),
    )
    if prototypes is not None and queue_scores is not None:  # queued scores with embeddings: score the batch
        with torch.no_grad():
            assign = rows.detach().reshape(spec.n_crops, batch, -1)[list(spec.crops_for_assign)]
            scores = (assign.float() @ prototypes.detach().float().t()).reshape(n_assign * batch, -1)
        sinkhorn_rows = SinkhornRows(scores, queue_scores.detach().float(), tuple(range(n_assign)), batch, None)
    with torch.no_grad():
        codes = impl.assignment_codes(sinkhorn_rows, spec.epsilon, spec.sinkhorn_iterations, spec.process_group)
    if prototypes is None:
        return impl.loss_from_scores(rows, codes, spec)
    return impl.loss_from_embeddings(rows, prototypes, codes, spec)


def sinkhorn(
    scores: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 3,
    process_group=None,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> torch.Tensor:
    """Sinkhorn-Knopp codes (DESIGN §1) of ``scores`` ``(N, K)``, or ``(G, N, K)`` for G
    independent problems. Returns codes of the same shape in float32 (float64 for float64
    input); with ``iterations >= 1`` each row sums to 1. Overflow-free for any finite input.
    ``process_group``: ranks whose rows form one problem (per-prototype sums and the total
    are all-reduced; ranks may hold different numbers of rows).
    """
    check_tensor("scores", scores, (2, 3))
    if scores.shape[-2] == 0 or scores.shape[-1] == 0:
        raise ValueError(f"scores must have at least one row and one column, got shape {tuple(scores.shape)}")
    epsilon = check_positive_float("epsilon", epsilon)
    iterations = check_iterations("iterations", iterations)
    if check_finite_inputs:
        check_finite({"scores": scores})
    impl = resolve_backend(backend, scores.device, scores.dtype)
    groups, rows, prototypes = scores.shape if scores.dim() == 3 else (1, *scores.shape)
    problem = SinkhornRows(scores.detach().reshape(groups * rows, prototypes), None, tuple(range(groups)), rows, None)
    with torch.no_grad():
        codes = impl.assignment_codes(problem, epsilon, iterations, process_group).codes
    return codes if scores.dim() == 3 else codes.squeeze(0)


def swapped_prediction_loss(
    inputs: torch.Tensor | Sequence[torch.Tensor],
    codes: torch.Tensor,
    crops_for_assign: Sequence[int],
    temperature: float = 0.1,
    backend: str = "auto",
    check_finite_inputs: bool = False,
) -> torch.Tensor:
    """DESIGN §1's swapped-prediction cross-entropy against codes computed elsewhere (hard
    assignments, a trainer's own Sinkhorn).

    Args:
        inputs: crop-major scores ``(V·B, K)`` or a list of V per-crop ``(B, K)`` scores;
            gradients flow into them.
        codes: ``(|A|, B, K)`` codes of the assign crops, treated as constants.
        crops_for_assign: the assign crops A, indices into the V crops.

    Returns:
        0-d loss, float32 for 16-bit scores, else the scores' dtype.
    """
    rows, _ = _crop_major_rows("inputs", inputs)
    check_tensor("codes", codes, 3)
    check_same_device("codes", codes, "inputs", rows)
    batch = codes.shape[1]
    if batch == 0 or rows.shape[0] % batch or codes.shape[2] != rows.shape[1]:
        raise ValueError(
            f"inputs {tuple(rows.shape)} must be V crops of the (B, K) shape of the codes {tuple(codes.shape[1:])}"
        )
    n_crops = check_n_crops(rows.shape[0] // batch)
    # the loss reads neither epsilon nor the iteration count
    spec = _spec(n_crops, crops_for_assign, temperature, 1.0, 0, None)
    if codes.shape[0] != len(spec.crops_for_assign):
        raise ValueError(
            f"codes must hold one (B, K) block per assign crop ({len(spec.crops_for_assign)}), got {codes.shape[0]}"
        )
    if check_finite_inputs:
        check_finite({"inputs": rows, "codes": codes})
    impl = resolve_backend(backend, rows.device, rows.dtype)
    return impl.loss_from_scores(rows, Codes(codes.detach(), None, None), spec)
