"""``swav-train`` / ``python -m swav_kernels.train``: parse the command line and run."""
from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success. ``--help`` works whatever is installed; a usage
    error, an impossible choice or a missing requirement exits with status 2."""
    from .args import build_parser, parse_args

    args = parse_args(argv)
    from .run import ConfigError, train

    try:
        train(args)
    except ConfigError as error:
        build_parser().error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
