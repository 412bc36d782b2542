"""``python -m downstream.segmentation``: the same command as ``python -m downstream`` (kept for existing scripts).

Every argument works as before (``--config``, ``key=value``, ``seed=<n>``, ``--single``, ``--eval DIR``); a command
line that names neither a method nor a task runs the segmentation defaults (``seg_tissue``, ``seg-unet``). Runs
go to the one layout, ``<output_dir>/<task>/<method>/<weights>/<setting>/seed<n>``, with ``summary.json`` next to
the seed directories.
"""

from __future__ import annotations

import sys

from downstream.__main__ import main as downstream_main
from lvmmed.errors import run_cli

PROG = "python -m downstream.segmentation"


def main(argv: list[str] | None = None) -> int:
    """Runs :func:`downstream.__main__.main` with segmentation as the default task family."""
    return downstream_main(list(sys.argv[1:] if argv is None else argv), prog=PROG, default="segmentation")


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog=PROG))
