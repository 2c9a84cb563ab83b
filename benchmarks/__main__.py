"""Run the suite: ``python -m benchmarks [--quick] [--only NAME] [--json PATH]``."""

from __future__ import annotations

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
