"""Training curves from ``metrics.csv``: loss terms, graph-matching and monitor accuracy against steps, as a PNG.

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


MONITOR_LABELS = {"monitor_knn_acc": "k-NN", "monitor_lp_acc": "linear probe"}


def _series(cols: dict[str, list[float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one column without its empty cells (rows of other metrics leave gaps otherwise)."""
    pairs = [(s, v) for s, v in zip(cols["step"], cols[key]) if v == v]  # v == v: not NaN
    return [s for s, _ in pairs], [v for _, v in pairs]


def plot_metrics(csv_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Plots ``loss`` and every ``loss_*`` term, ``match_acc`` if logged, and the monitor's accuracies if logged
    (``monitor_knn_acc``, ``monitor_lp_acc``: ``pretrain.monitor``), side by side against steps."""
    cols = read_metrics(csv_path)
    if not cols.get("step"):
        raise ValueError(f"{csv_path} has no metric rows yet")
    panels = ["loss"] + ["match"] * ("match_acc" in cols) + ["monitor"] * any(k in cols for k in MONITOR_LABELS)
    fig, axes = plt.subplots(1, len(panels), figsize=(0.5 + 4.75 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "loss":
            for key in [k for k in cols if k == "loss" or k.startswith("loss_")]:
                ax.plot(*_series(cols, key), label=key, lw=2 if key == "loss" else 1)
            ax.set_ylabel("loss")
            ax.legend(fontsize=8)
        elif panel == "match":
            ax.plot(*_series(cols, "match_acc"), color="tab:green")
            ax.set_ylabel("graph-matching accuracy")
            ax.set_ylim(0, 1)
        else:
            for key, label in MONITOR_LABELS.items():
                if key in cols:
                    ax.plot(*_series(cols, key), marker="o", ms=3, label=label)
            ax.set_ylabel("monitor accuracy (eval set)")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
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
