"""SwAV pre-training with the swav_kernels loss (``swav-train``; needs the ``train`` extra).

A faithful port of facebookresearch/swav ``main_swav.py``: multi-crop data (``data``),
ResNet + projection head + prototypes (``model``), LARS + warm-up/cosine (``optim``), the
training step (``loop``), atomic checkpoints (``checkpoint``), the CSV log and loss curve
(``report``), k-NN and linear-probe evaluation (``evaluate``), the run itself (``run``) and
its command line (``args``).
"""
from .args import build_parser, parse_args
from .run import ConfigError, RunResult, train

__all__ = ["ConfigError", "RunResult", "build_parser", "parse_args", "train"]
