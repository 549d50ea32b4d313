"""``swav-train`` / ``python -m swav_kernels.train``: parse the command line and run."""
from __future__ import annotations

import importlib.util
import sys
from typing import Sequence


def missing_requirements() -> str | None:
    """None when the trainer's dependencies (the ``train`` extra) import; otherwise what is wrong."""
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # ImportError, or a torchvision built for another torch (RuntimeError)
        import torch

        return (f"swav-train needs torchvision built for the installed torch {torch.__version__} "
                f"({type(error).__name__}: {error}); install the 'train' extra: pip install '.[train]'")
    absent = [name for name in ("timm", "sklearn") if importlib.util.find_spec(name) is None]
    if absent:
        return f"swav-train needs {' and '.join(absent)}; install the 'train' extra: pip install '.[train]'"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success (usage errors exit with status 2 via argparse)."""
    problem = missing_requirements()
    if problem is not None:
        print(f"swav-train: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    from .args import build_parser
    from .run import ConfigError, train

    parser = build_parser()
    args = parser.finish(parser.parse_args(argv))
    try:
        train(args)
    except ConfigError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
