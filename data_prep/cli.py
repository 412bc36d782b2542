"""``python -m data_prep {list,convert,inspect,verify,bundled,demo}``.

Exit status: 0 on success; 1 when a conversion's failures exceed ``max_failure_fraction`` or produce no samples,
or when ``verify`` finds a mismatch; 2 on usage/config/layout errors (with a message saying what was expected).

Each subcommand imports its module when it runs (``bundled``, ``convert``, ``inspect``, ``verify`` and ``demo`` load
torch through the shard and reader code), so ``list`` and ``--help`` answer without that start-up cost.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lvmmed.errors import EXIT_CODES_HELP, run_cli

from .catalog import print_catalog

log = logging.getLogger("data_prep")


def _cmd_bundled(args: argparse.Namespace) -> int:
    from .bundled import build_bundled

    built = build_bundled(
        args.out, profile=args.profile, workers=args.workers, names=args.names or None,
        overwrite=args.overwrite, progress=not args.quiet, encoding=args.encoding,
    )  # fmt: skip
    from lvmmed.data.shards import load_manifest

    for name, root in built.items():
        m = load_manifest(root)
        counts = m.data["counts"]
        print(f"{name:16s} {counts['total']:6d} samples (train {counts['train']}, val {counts['val']}, "
              f"test {counts['test']})  {root}")  # fmt: skip
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    print_catalog(verbose=args.verbose, modality=args.modality)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_cli

    if args.name and "=" in args.name:  # `convert --format x ... key=value`: the positional took an override
        args.overrides.insert(0, args.name)
        args.name = None
    return convert_cli(args)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .verify import inspect_shards

    print(inspect_shards(args.shards, n_samples=args.samples))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify_shards

    report = verify_shards(args.shards, deep=not args.fast)
    print(report.summary())
    return 0 if report.ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, profile=args.profile, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .formats import FORMATS  # the planners' modules load only when a parser is built

    parser = argparse.ArgumentParser(
        prog="python -m data_prep", description=__doc__.split("\n")[0], epilog=EXIT_CODES_HELP
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks on errors)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="print the dataset catalog")
    p.add_argument("--modality", default=None, help="only entries of this modality (CT, MR, XR, US, ...)")
    p.add_argument("--long", dest="verbose", action="store_true", help="layout, converter and licence too")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("convert", help="convert a catalog dataset (NAME) or any collection (--format)")
    p.add_argument("name", nargs="?", default=None, help="catalog entry (python -m data_prep list)")
    p.add_argument("--src", required=True, type=Path, help="input folder, file, or .tar/.tar.gz/.zip archive")
    p.add_argument("--out", required=True, type=Path, help="output shard directory")
    p.add_argument("--format", default=None, choices=FORMATS.names(),
                   help="reader for --src")  # fmt: skip
    p.add_argument("--labels", default=None, help="CSV file,label of image-level labels")
    p.add_argument("--name", dest="dataset_name", default=None, help="dataset name in the manifest")
    p.add_argument("--config", type=Path, default=None, help="YAML ConvertConfig (configs/data_prep/*.yaml)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: config, 2)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous different run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the plan (inputs, masks, classes, patients, "
                   "official splits) and write nothing")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="ConvertConfig key=value overrides")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("inspect", help="show what is in a shard set")
    p.add_argument("shards", type=Path)
    p.add_argument("--samples", type=int, default=3, help="print the meta of this many samples")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("verify", help="check manifest counts and sha256 (non-zero exit on mismatch)")
    p.add_argument("shards", type=Path)
    p.add_argument("--fast", action="store_true", help="sizes and sha256 only, do not decode samples")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bundled", help="convert the bundled real data (package sample files) to shard sets")
    p.add_argument("--out", type=Path, default=Path("runs/shards"))
    p.add_argument("--profile", default="tiny", choices=["tiny", "demo"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--names", nargs="*", default=None, help="subset of sets")
    p.add_argument("--encoding", default="npy", choices=["npy", "png"],
                   help="image encoding of the shards (docs/pretrain.md, compact shard storage)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_bundled)

    p = sub.add_parser("demo", help="bundled data → shards, summary table and a PNG contact sheet")
    p.add_argument("--out", type=Path, default=Path("runs/demo/data_prep"))
    p.add_argument("--profile", default="demo", choices=["tiny", "demo"])
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry; returns the exit status (the error contract of :mod:`lvmmed.errors`)."""
    # FileNotFoundError (missing --src, no inputs) and ValueError (bad labels CSV, unreadable archive, bad config
    # value) are the user's arguments here: exit 2, as this command has always documented.
    return run_cli(_run, argv, "python -m data_prep", usage_errors=(FileNotFoundError, ValueError))


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "convert" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra  # key=value given after other options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    return int(args.func(args))
