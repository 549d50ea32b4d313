"""``python -m swav_kernels.bench``: the same as the ``swav-bench`` command."""
import sys

from .cli import main

sys.exit(main())
