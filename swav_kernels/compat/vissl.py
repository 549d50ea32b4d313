"""Drop-in for VISSL's SwAV loss (``vissl/losses/swav_loss.py``, ``distibuted_sinkhornknopp.py``).

``SwAVLoss(loss_config)`` / ``SwAVLoss.from_config(loss_config)`` with VISSL's config keys
(``temperature, crops_for_assign, num_crops, num_iters, epsilon, use_double_precision,
num_prototypes, embedding_dim, temp_hard_assignment_iters, output_dir, queue.start_iter,
queue.local_queue_length``) and ``forward(output, target)`` over
``output = [embedding (V·B, D), scores_head0 (V·B, K0), scores_head1, …]``:

- the loss is the mean over prototype heads of the SwAV loss of each head;
- ``use_double_precision``: Sinkhorn and log-softmax in float64 (codes rounded to float32,
  as VISSL does); the loss is 0-d float32 either way;
- for the first ``temp_hard_assignment_iters`` calls the codes are one-hot at their argmax;
- the queue: ``swav_criterion.local_emb_queue`` ``(|A|, L, D)`` holds embeddings shared
  by the heads, ``swav_criterion.local_queue{i}`` ``(|A|, L, K_i)`` their scores under head
  i, refreshed by ``swav_criterion.compute_queue_scores(head)`` (VISSL's
  ``SwAVUpdateQueueScoresHook`` calls it, unchanged); from iteration ``queue.start_iter``
  the score queue joins the Sinkhorn rows (after the batch) and the embedding queue takes
  the batch's assign-crop embeddings after each step. Buffers have VISSL's names and
  initialisation, so checkpoints load either way.
- the Sinkhorn sums run over every rank when torch.distributed is initialised; with
  ``num_iters=0`` the codes are ``softmax(scores/ε)``, as VISSL's final normalisation gives.

NaN or ±inf in the scores gives a non-finite loss (no check);
``check_finite_inputs=True`` (keyword only, on ``SwAVLoss`` and ``SwAVCriterion``) raises
ValueError naming the head's scores (or score queue) instead (one host sync).

Not reproduced: ``shk_powerlaw`` (raises ValueError); the dump of scores on a NaN loss
(``output_dir`` is kept but unused: the Sinkhorn here cannot overflow, so VISSL's inf
replacement and ``1e-12`` padding of empty prototypes have nothing to do).

``patch()`` makes VISSL's own ``SwAVCriterion.forward`` run through swav_kernels (configs
with ``shk_powerlaw`` keep VISSL's code); ``unpatch()`` restores it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..loss import sinkhorn, swapped_prediction_loss
from ._common import check_inputs_finite, default_process_group
from ._patching import Patch, import_trainer

__all__ = ["SwAVCriterion", "SwAVLoss", "patch", "unpatch"]

_REQUIRED = object()


def _config(config, name: str, default=_REQUIRED):
    """``config.name`` for VISSL's AttrDict, a plain dict or any object with attributes."""
    if isinstance(config, Mapping):
        value = config.get(name, default)
    else:
        value = getattr(config, name, default)
    if value is _REQUIRED:
        raise ValueError(f"loss_config has no {name!r}; VISSL's swav_loss config needs it")
    return value


def _criterion_forward(self, scores: torch.Tensor, head_id: int) -> torch.Tensor:
    """VISSL's ``SwAVCriterion.forward``: the SwAV loss of one head's ``(V·B, K)`` scores."""
    if scores.dim() != 2 or scores.shape[0] % self.num_crops:
        raise ValueError(
            f"scores must be (num_crops·B, K) with num_crops={self.num_crops}, got {tuple(scores.shape)}"
        )
    batch = scores.shape[0] // self.num_crops
    crops = [int(c) for c in self.crops_for_assign]
    backend = getattr(self, "backend", "auto")
    queue = getattr(self, "local_queue" + str(head_id)) if self.use_queue else None
    check_inputs_finite(getattr(self, "check_finite_inputs", False),
                        {f"scores of head {head_id}": scores, f"local_queue{head_id}": queue})
    with torch.no_grad():
        rows = scores.detach().view(self.num_crops, batch, -1)[crops]
        if self.use_queue:
            rows = torch.cat((rows, queue.to(rows.dtype)), dim=1)
        if self.use_double_prec:
            rows = rows.double()
        codes = sinkhorn(rows, epsilon=self.epsilon, iterations=self.nmb_sinkhornknopp_iters,
                         process_group=default_process_group(), backend=backend,
                         check_finite_inputs=False)[:, :batch]
        if self.nmb_sinkhornknopp_iters == 0:  # VISSL's last step makes every sample's codes sum to 1
            codes = codes / codes.sum(dim=-1, keepdim=True)
        codes = codes.float()
        if bool(self.num_iteration < self.temp_hard_assignment_iters):
            codes = F.one_hot(codes.argmax(dim=-1), codes.shape[-1]).to(codes.dtype)
    predictions = scores.double() if self.use_double_prec else scores
    return swapped_prediction_loss(predictions, codes, crops, self.temperature, backend,
                                   check_finite_inputs=False).float()


class SwAVCriterion(nn.Module):
    """VISSL's ``SwAVCriterion`` (one head at a time) computed by swav_kernels; arguments
    and attributes as in VISSL, plus ``backend`` and ``check_finite_inputs`` (keyword only;
    True: raise ValueError if the scores or the score queue hold NaN or ±inf, one host sync;
    False, the default: they give a non-finite loss)."""

    def __init__(
        self,
        temperature: float,
        crops_for_assign,
        num_crops: int,
        num_iters: int,
        epsilon: float,
        use_double_prec: bool,
        num_prototypes,
        local_queue_length: int,
        embedding_dim: int,
        temp_hard_assignment_iters: int,
        output_dir: str,
        shk_powerlaw: float = 0.0,
        *,
        backend: str = "auto",
        check_finite_inputs: bool = False,
    ):
        super().__init__()
        if shk_powerlaw:
            raise ValueError(f"shk_powerlaw={shk_powerlaw} is not supported by swav_kernels; use 0.0")
        self.temperature = temperature
        self.crops_for_assign = list(crops_for_assign)
        self.num_crops = num_crops
        self.nmb_sinkhornknopp_iters = num_iters
        self.epsilon = epsilon
        self.use_double_prec = use_double_prec
        self.num_prototypes = list(num_prototypes)
        self.nmb_heads = len(self.num_prototypes)
        self.embedding_dim = embedding_dim
        self.temp_hard_assignment_iters = temp_hard_assignment_iters
        self.local_queue_length = local_queue_length
        self.output_dir = output_dir
        self.shk_powerlaw = shk_powerlaw
        self.backend = backend
        self.check_finite_inputs = check_finite_inputs
        self.register_buffer("num_iteration", torch.zeros(1, dtype=torch.long))
        self.use_queue = False
        if local_queue_length > 0:
            self.initialize_queue()

    forward = _criterion_forward

    @torch.no_grad()
    def update_emb_queue(self, emb: torch.Tensor) -> None:
        """Shift the embedding queue and put the assign crops of ``emb (V·B, D)`` in front."""
        batch = len(emb) // self.num_crops
        for i, crop_id in enumerate(self.crops_for_assign):
            queue = self.local_emb_queue[i]
            queue[batch:] = queue[:-batch].clone()
            queue[:batch] = emb[crop_id * batch:(crop_id + 1) * batch]

    @torch.no_grad()
    def compute_queue_scores(self, head) -> None:
        """Score the embedding queue with each of ``head``'s ``prototypes{i}`` layers."""
        for crop_index in range(len(self.crops_for_assign)):
            for i in range(head.nmb_heads):
                scores = getattr(head, "prototypes" + str(i))(self.local_emb_queue[crop_index])
                getattr(self, "local_queue" + str(i))[crop_index] = scores

    def initialize_queue(self) -> None:
        """VISSL's initial queues: scores uniform in [-1, 1), embeddings uniform in ±1/√(D/3)."""
        for i in range(self.nmb_heads):
            scores = torch.rand(len(self.crops_for_assign), self.local_queue_length, self.num_prototypes[i]) * 2 - 1
            self.register_buffer("local_queue" + str(i), scores)
        bound = 1.0 / math.sqrt(self.embedding_dim / 3)
        embeddings = torch.rand(len(self.crops_for_assign), self.local_queue_length, self.embedding_dim)
        self.register_buffer("local_emb_queue", embeddings.mul_(2 * bound).add_(-bound))


class SwAVLoss(nn.Module):
    """VISSL's ``SwAVLoss`` computed by swav_kernels.

    ``forward(output, target=None)``: ``output = [embedding, scores_head0, …]``; returns the
    0-d float32 loss averaged over heads (``target`` is ignored, as in VISSL).
    ``check_finite_inputs`` (keyword only): raise ValueError naming the head whose scores
    hold NaN or ±inf (one host sync per head); False (default): a non-finite loss.
    """

    def __init__(self, loss_config, *, backend: str = "auto", check_finite_inputs: bool = False):
        super().__init__()
        self.loss_config = loss_config
        queue = _config(loss_config, "queue")
        self.queue_start_iter = _config(queue, "start_iter")
        self.swav_criterion = SwAVCriterion(
            _config(loss_config, "temperature"),
            _config(loss_config, "crops_for_assign"),
            _config(loss_config, "num_crops"),
            _config(loss_config, "num_iters"),
            _config(loss_config, "epsilon"),
            _config(loss_config, "use_double_precision"),
            _config(loss_config, "num_prototypes"),
            _config(queue, "local_queue_length"),
            _config(loss_config, "embedding_dim"),
            _config(loss_config, "temp_hard_assignment_iters"),
            _config(loss_config, "output_dir", ""),
            _config(loss_config, "shk_powerlaw", 0.0),
            backend=backend,
            check_finite_inputs=check_finite_inputs,
        )

    @classmethod
    def from_config(cls, loss_config, *, backend: str = "auto", check_finite_inputs: bool = False) -> "SwAVLoss":
        return cls(loss_config, backend=backend, check_finite_inputs=check_finite_inputs)

    def forward(self, output, target=None) -> torch.Tensor:
        criterion = self.swav_criterion
        if len(output) < 2:
            raise ValueError("output must be [embedding, scores_head0, ...] with at least one head")
        criterion.use_queue = criterion.local_queue_length > 0 and bool(
            criterion.num_iteration >= self.queue_start_iter
        )
        loss = 0
        for head_id, head_scores in enumerate(output[1:]):
            loss = loss + criterion(head_scores, head_id)
        loss = loss / (len(output) - 1)
        criterion.num_iteration += 1
        if criterion.use_queue:
            criterion.update_emb_queue(output[0].detach())
        return loss


_PATCH = Patch()


def patch() -> bool:
    """Make VISSL's ``SwAVCriterion.forward`` run through swav_kernels. Returns False if
    already patched."""
    module = import_trainer("vissl.losses.swav_loss", "install VISSL (pip install vissl)")
    original = module.SwAVCriterion.forward

    def forward(self, scores, head_id):
        if getattr(self, "shk_powerlaw", 0.0):
            return original(self, scores, head_id)
        return _criterion_forward(self, scores, head_id)

    return _PATCH.apply([(module.SwAVCriterion, "forward", forward)])


def unpatch() -> bool:
    """Undo ``patch()``; False when nothing was patched."""
    return _PATCH.undo()
