"""The 2-D map of an embedding run (``--plot``): one scatter panel per colouring (label, dataset, center).

Projection: UMAP (McInnes et al. 2018, arXiv:1802.03426; package ``umap-learn``) when installed, else PCA from
scikit-learn (linear, deterministic); ``tsne`` (van der Maaten & Hinton 2008, scikit-learn's ``TSNE``) on request.
Features are L2-normalised first, as similarity searches on SSL embeddings compare directions. Above ``max_points``
a seeded random subset is drawn. Colours are categorical; beyond 19 categories the rarest are grouped as "other".
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from lvmmed.errors import UsageError

METHODS = ("auto", "umap", "pca", "tsne")
MAX_CATEGORIES = 19


def _umap_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def project_2d(features: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, D) features to (N, 2) coordinates; returns the coordinates and the method used."""
    if method not in METHODS:
        raise ValueError(f"plot method must be one of {METHODS}, got {method!r}")
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if method == "auto":
        method = "umap" if _umap_available() else "pca"
    if len(x) < 3:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1])))), "none (fewer than 3 points)"
    if method == "umap":
        if not _umap_available():
            raise UsageError("--plot-method umap needs umap-learn (not installed)", fix="pip install umap-learn")
        import warnings

        import umap

        with warnings.catch_warnings():  # umap warns that a fixed random_state disables its parallelism
            warnings.simplefilter("ignore", UserWarning)
            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed)
            return reducer.fit_transform(x), "umap"
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x), "tsne"
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x), "pca"


def _categories(values: list[str]) -> tuple[list[str], list[str]]:
    """Per-point category names, with all but the most frequent ``MAX_CATEGORIES`` grouped as "other"."""
    counts = Counter(values)
    keep = {name for name, _ in counts.most_common(MAX_CATEGORIES)} if len(counts) > MAX_CATEGORIES + 1 else set(counts)
    names = [v if v in keep else "other" for v in values]
    return names, sorted(set(names), key=lambda n: (n == "other", n))


def plot_map(
    features: np.ndarray,
    rows: list[dict[str, str]],
    path: str | Path,
    color_by: tuple[str, ...] = ("label", "dataset", "center"),
    method: str = "auto",
    max_points: int = 100_000,
    title: str = "",
    seed: int = 0,
) -> dict:
    """Writes the PNG (atomically) and returns ``{"path", "method", "points", "panels"}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = np.arange(len(features))
    if len(index) > max_points:
        index = np.sort(np.random.default_rng(seed).choice(len(index), max_points, replace=False))
    coords, used = project_2d(np.asarray(features[index], dtype=np.float32), method, seed)
    panels = [c for c in color_by if any(rows[i].get(c) for i in index)] or ["dataset"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    size = float(np.clip(2000 / max(len(index), 1), 1, 20))
    for ax, column in zip(axes[0], panels):
        names, order = _categories([rows[i].get(column) or "(none)" for i in index])
        colours = plt.get_cmap("tab20" if len(order) > 10 else "tab10")
        for k, name in enumerate(order):
            mask = np.array([n == name for n in names])
            ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=colours(k % colours.N), label=name, alpha=0.8)
        ax.set_title(f"coloured by {column}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=max(1.0, 6 / size), loc="best", frameon=False)
    fig.suptitle(f"{title} ({used}, {len(index)} of {len(features)} points)".strip())
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return {"path": str(path), "method": used, "points": len(index), "panels": panels}
