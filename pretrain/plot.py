"""Training curves from ``metrics.csv``: loss terms and graph-matching accuracy against steps, as a PNG.

``python -m pretrain.plot runs/pretrain/tiny [--out curve.png]``
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_metrics(csv_path: str | Path) -> dict[str, list[float]]:
    """Columns of a metrics CSV as float lists (empty cells become NaN)."""
    with Path(csv_path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = rows[0].keys() if rows else []
    return {k: [float(r[k]) if r.get(k) not in (None, "") else float("nan") for r in rows] for k in keys}


def plot_metrics(csv_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Plots ``loss`` and every ``loss_*`` term (left) and ``match_acc`` if logged (right)."""
    cols = read_metrics(csv_path)
    if not cols.get("step"):
        raise ValueError(f"{csv_path} has no metric rows yet")
    has_acc = "match_acc" in cols
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 3.6), squeeze=False)
    ax = axes[0][0]
    for key in [k for k in cols if k == "loss" or k.startswith("loss_")]:
        ax.plot(cols["step"], cols[key], label=key, lw=2 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if has_acc:
        ax = axes[0][1]
        ax.plot(cols["step"], cols["match_acc"], color="tab:green")
        ax.set_xlabel("step")
        ax.set_ylabel("graph-matching accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    fig.suptitle(title or str(Path(csv_path).parent.name))
    fig.tight_layout()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="run directory holding metrics.csv")
    parser.add_argument("--out", default=None, help="PNG path (default: <run_dir>/curves.png)")
    args = parser.parse_args(argv)
    run = Path(args.run_dir)
    print(plot_metrics(run / "metrics.csv", args.out or run / "curves.png"))


if __name__ == "__main__":
    main()
