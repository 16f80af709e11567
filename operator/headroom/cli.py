"""`python -m headroom.cli` and the `headroom` / `kubectl-headroom` commands (headroom.shell.cli)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# The Kubernetes client libraries the operator must never load. They stay installed (the terminal
# commands use `kubernetes`), and Kopf imports whichever it finds when it is itself imported: the
# `kubernetes` package alone costs about 34 MiB of the operator's memory, plus its models and their
# dependencies at run time. `headroom run` talks to the API server through headroom.shell.apiclient.
CLIENT_LIBRARIES = ("kubernetes", "kubernetes_asyncio", "pykube")


def without_client_libraries() -> None:
    """Make every import of the client libraries fail in this process, as if they were not installed.

    Must run before Kopf is imported: Kopf tries them at import and at registry creation."""
    for name in CLIENT_LIBRARIES:
        loaded = [m for m in sys.modules if m == name or m.startswith(name + ".")]
        if loaded:
            raise RuntimeError(f"{name} was imported before the operator started: {', '.join(loaded[:3])}")
        sys.modules[name] = None  # type: ignore[assignment]  # None: "import name" raises ImportError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        without_client_libraries()
    # Imported only now: nothing before this point may import the client libraries.
    from headroom.shell.cli import main as shell_main

    return shell_main(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
