"""``python -m lvmmed embed`` (= ``lvmmed embed``, ``python -m lvmmed.embedding``): embeddings of images for weights.

    python -m lvmmed embed --weights runs/pretrain/tiny/export --data runs/shards/mni152 --out runs/emb --plot
    python -m lvmmed embed --weights lvmmed-resnet50 --data my_dicom_folder --out runs/emb_r50 --img-size 224

Writes ``embeddings.npy`` + ``index.csv`` (+ ``index.parquet`` with pyarrow) and, with ``--plot``, ``map.png``.
Interrupted runs resume from their last finished chunk when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lvmmed.embedding import embed
from lvmmed.errors import EXIT_CODES_HELP, UsageError, run_cli
from lvmmed.weight_sources import WeightsNotFoundError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvmmed embed", description=__doc__.splitlines()[0], epilog=EXIT_CODES_HELP)
    parser.add_argument("--weights", required=True, help="an export dir, lvmmed-resnet50, lvmmed-vitb[=/file], "
                        "torchvision:/file, timm:/file or a state-dict file")  # fmt: skip
    parser.add_argument("--data", required=True, action="append", help="a shard set (manifest.json), a folder of "
                        "shard sets, or a folder/file of images, DICOM or NIfTI; repeat for several")  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--split", action="append", default=None, help="shard splits to embed (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=2048, help="items per resumable chunk")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1 ...")
    parser.add_argument("--img-size", type=int, default=None, help="override the weights' input size")
    parser.add_argument("--axes", default="2", help="volume axes to slice, e.g. 2 or 0,1,2 (folders)")
    parser.add_argument("--slice-step", type=int, default=1, help="every n-th slice of a volume (folders)")
    parser.add_argument("--plot", action="store_true", help="write map.png, a 2-D map of the embeddings")
    parser.add_argument("--plot-method", default="auto", choices=["auto", "umap", "pca", "tsne"],
                        help="auto = UMAP when umap-learn is installed, else PCA")  # fmt: skip
    parser.add_argument("--color-by", default="label,dataset,center", help="index columns to colour the map by")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _run(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        axes = tuple(int(a) for a in args.axes.split(",") if a.strip())
    except ValueError:
        parser.error(f"--axes takes comma-separated integers 0-2, got {args.axes!r}")
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise UsageError(f"--axes takes volume axes 0, 1 and/or 2, got {args.axes!r}")
    for entry in args.data:
        if "://" not in entry and not entry.startswith("pipe:") and "{" not in entry and not Path(entry).exists():
            raise UsageError(f"--data {entry}: no such shard set, folder or file")
    summary = embed(
        args.weights, args.data, args.out, splits=args.split, batch_size=args.batch_size, chunk_size=args.chunk_size,
        device=args.device, img_size=args.img_size, axes=axes, slice_step=args.slice_step, plot=args.plot,
        plot_method=args.plot_method, color_by=tuple(c.strip() for c in args.color_by.split(",") if c.strip()),
        overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command under the error contract (one line; exit 2 usage, 1 run failure)."""
    return run_cli(_run, argv, "lvmmed embed", usage_errors=(WeightsNotFoundError,))


if __name__ == "__main__":
    raise SystemExit(main())
