"""Drop-in replacements for the SwAV losses of existing trainers (DESIGN §3).

One module per trainer, each keeping the original's signatures, defaults, input layouts
and return conventions, and computing through ``swav_kernels.swav_loss`` /
``swav_kernels.sinkhorn`` (kernel backends where the device allows, the reference
elsewhere; every adapter takes a keyword-only ``backend=``, and a keyword-only
``check_finite_inputs=`` that is False by default: non-finite inputs then give a
non-finite result, as in the trainers; True raises ValueError naming the input). Their argument
errors name each argument as the trainer's API spells it (``preds[2]``, ``num_iters``,
``sinkhorn_epsilon``, ``loss_config.num_iters``, ``args.epsilon``), not as the core API does:

- ``compat.lightly``: ``SwaVLoss``, ``sinkhorn``; ``patch()`` / ``unpatch()``.
- ``compat.solo_learn``: ``swav_loss_func``, ``SinkhornKnopp``; ``patch()`` / ``unpatch()``.
- ``compat.facebook_swav``: ``distributed_sinkhorn``, ``swav_loss_block`` (main_swav.py).
- ``compat.vissl``: ``SwAVLoss``, ``SwAVCriterion``; ``patch()`` / ``unpatch()``.
- ``compat.dinov2``: ``sinkhorn_knopp_teacher``, ``ibot_sinkhorn_knopp_teacher``;
  ``patch()`` / ``unpatch()``.

The trainers reduce the Sinkhorn sums over every rank when torch.distributed is
initialised (lightly only with ``sinkhorn_gather_distributed``); so do the adapters.
Without torch.distributed, or with one rank, they make no collective call.
"""
from . import dinov2, facebook_swav, lightly, solo_learn, vissl

__all__ = ["dinov2", "facebook_swav", "lightly", "solo_learn", "vissl"]
