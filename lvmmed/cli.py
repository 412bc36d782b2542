"""The ``lvmmed`` command: one entry point that delegates to each stage's own module.

    lvmmed prep ...        == python -m data_prep ...
    lvmmed pretrain ...    == python -m pretrain ...            (accelerate launch -m pretrain for multi-GPU)
    lvmmed downstream ...  == python -m downstream ...
    lvmmed benchmark ...   == python -m downstream.benchmark ...
    lvmmed demo ...        == python -m demo ...
    lvmmed embed ...       == python -m lvmmed.embedding ...    (also python -m lvmmed embed ...)

Everything after the sub-command is passed through unchanged (``--config F key=value ...``), so the stage
modules stay the single source of truth for their arguments; ``lvmmed <stage> --help`` shows the stage's help.
Also available as ``python -m lvmmed`` and ``python -m lvmmed.cli`` (and as the ``lvmmed`` console script when the
package is installed).
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

from lvmmed.errors import EXIT_CODES_HELP

STAGES: dict[str, tuple[str, str]] = {
    "prep": ("data_prep", "convert public collections into shards (+ manifest), inspect, build the bundled set"),
    "pretrain": ("pretrain", "self-supervised pretraining (graph-matching loss or baselines), exports weights"),
    "downstream": ("downstream", "one downstream run: task x method x weights x seed"),
    "benchmark": ("downstream.benchmark", "the methods x tasks x weights x seeds matrix and its report"),
    "demo": ("demo", "the whole chain on the bundled data: prep -> pretrain -> benchmark -> report"),
    "embed": ("lvmmed.embedding", "embeddings (.npy + index, optional 2-D map) of shards or image folders"),
}


def usage() -> str:
    width = max(len(s) for s in STAGES)
    lines = ["usage: lvmmed <stage> [args ...]", "", "stages:"]
    lines += [f"  {name:<{width}}  {help_text}  (python -m {module})" for name, (module, help_text) in STAGES.items()]
    lines += ["", "Run `lvmmed <stage> --help` for a stage's own options.", "", EXIT_CODES_HELP]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``python -m <module> <args>`` for the chosen stage in this process; returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        print(f"lvmmed: unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = STAGES[stage][0]
    saved = sys.argv
    sys.argv = [f"lvmmed {stage}", *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
