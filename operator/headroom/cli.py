"""`python -m headroom.cli` and the `headroom` / `kubectl-headroom` commands (headroom.shell.cli)."""

import os
import sys

from headroom.shell.cli import main

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
