"""``python -m demo --out runs/demo [key=value ...]``: the whole chain on the bundled data (see :mod:`demo.run`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from demo import run
from lvmmed.config import ConfigError, load_config
from lvmmed.errors import EXIT_CODES_HELP


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``--out`` and ``DemoConfig`` overrides, runs the demo; 0 when the report was written."""
    parser = argparse.ArgumentParser(
        prog="python -m demo", description=run.__doc__.split("\n\n")[0], epilog=EXIT_CODES_HELP
    )
    parser.add_argument("--out", type=Path, default=Path(run.DEFAULT_OUT), help="output directory (resumable)")
    parser.add_argument("overrides", nargs="*", help="DemoConfig key=value overrides, e.g. pretrain_steps=100")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(run.DemoConfig, None, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    report = run.run_demo(cfg, args.out.resolve() if not args.out.is_absolute() else args.out)
    return 0 if report.is_file() else 1


if __name__ == "__main__":
    from lvmmed.errors import run_cli

    raise SystemExit(run_cli(main, prog="python -m demo"))
