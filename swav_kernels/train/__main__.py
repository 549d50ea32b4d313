"""``swav-train`` / ``python -m swav_kernels.train``: parse the command line and run."""
from __future__ import annotations

from typing import Sequence

from .args import build_parser
from .run import ConfigError, train


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success (usage errors exit with status 2 via argparse)."""
    parser = build_parser()
    args = parser.finish(parser.parse_args(argv))
    try:
        train(args)
    except ConfigError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
