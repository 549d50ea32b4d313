"""swav-kernels: fused Triton and CUDA kernels for the SwAV loss behind a PyTorch API.

    from swav_kernels import swav_loss
    loss = swav_loss(z, prototypes=C, nmb_crops=[2, 6])      # fused path
    loss = swav_loss(scores, nmb_crops=[2, 6])                # drop-in path
"""
from .backend import Backend, LossSpec
from .loss import sinkhorn, swapped_prediction_loss, swav_loss
from .module import SwAVLoss
from .registry import _load_backends, backend_names, backend_status, register_backend, unregister_backend
from .cuda.backend import CUDA_BACKEND
from .triton.backend import TRITON_BACKEND

# "auto" picks per shape by the rule table of auto_rules.py; the ranks order backends it does not name
register_backend("triton", lambda: TRITON_BACKEND, auto_rank=0)
register_backend("cuda", lambda: CUDA_BACKEND, auto_rank=1)
_load_backends("reference", "triton", "cuda")  # built already: nothing for a torch.compile trace to load

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "LossSpec",
    "SwAVLoss",
    "backend_names",
    "backend_status",
    "register_backend",
    "sinkhorn",
    "swapped_prediction_loss",
    "swav_loss",
    "unregister_backend",
    "__version__",
]
