"""``python -m data_prep demo --out DIR``: bundled data → shards, a summary table and a PNG contact sheet.

Writes ``DIR/shards/<set>/`` (shard sets), ``DIR/summary.md`` + ``summary.json`` (datasets, modalities,
samples per split, shards) and ``DIR/contact_sheet.png`` (random samples per set with their label or mask).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.data.shards import load_arrays, load_manifest

from .bundled import build_bundled


def summarize(sets: dict[str, Path]) -> list[dict[str, Any]]:
    """One row per shard set: name, modalities, counts per split, shards, masks/labels."""
    rows = []
    for name, root in sets.items():
        m = load_manifest(root)
        modality = m.data.get("modality")
        rows.append({
            "dataset": name,
            "modalities": ", ".join(modality) if isinstance(modality, list) else str(modality),
            **{k: m.data["counts"][k] for k in ("train", "val", "test", "total")},
            "shards": len(m.shards),
            "MB": round(sum(s["bytes"] for s in m.shards) / 1e6, 2),
            "labels": ", ".join(m.label_names or []) or "-",
            "mask": ", ".join(m.mask_labels or []) or "-",
        })  # fmt: skip
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`summarize` rows (also readable in a terminal)."""
    cols = ["dataset", "modalities", "train", "val", "test", "total", "shards", "MB", "labels", "mask"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    total = sum(r["total"] for r in rows)
    lines.append(f"\n{len(rows)} datasets, {total} samples, {sum(r['shards'] for r in rows)} shards")
    return "\n".join(lines)


def contact_sheet(sets: dict[str, Path], path: Path, per_set: int = 6, seed: int = 0) -> Path:
    """Saves a grid of random samples (rows = sets) with label / mask overlays (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = random.Random(seed)
    fig, axes = plt.subplots(len(sets), per_set, figsize=(1.8 * per_set, 2.0 * len(sets)), squeeze=False)
    for row, (name, root) in enumerate(sets.items()):
        samples = load_arrays(root)
        chosen = rng.sample(samples, min(per_set, len(samples)))
        for col in range(per_set):
            ax = axes[row][col]
            ax.axis("off")
            if col >= len(chosen):
                continue
            s = chosen[col]
            image = s["image"].astype(np.float32)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            meta = s["meta"]
            if s["mask"] is not None and s["mask"].any():
                ax.imshow(np.ma.masked_equal(s["mask"], 0), cmap="tab10", alpha=0.35, vmin=0, vmax=9)
                text = f"{meta['split']} a{meta.get('axis')} #{meta.get('slice_index')}"
            else:
                text = f"{meta['split']}: {meta.get('label_name') or meta.get('modality')}"
            ax.set_title(text, fontsize=7)
        axes[row][0].text(-0.1, 0.5, name, transform=axes[row][0].transAxes, rotation=90, ha="right", va="center")
    fig.suptitle("lvmmed data_prep: bundled real data (random samples; colour = mask label)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(out: str | Path, profile: str = "demo", workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Builds the bundled shard sets under ``out/shards``, prints and writes the summary and the contact sheet."""
    out = Path(out)
    sets = build_bundled(out / "shards", profile=profile, workers=workers, progress=progress)
    rows = summarize(sets)
    table = format_table(rows)
    print(table)
    (out / "summary.md").write_text(f"# data_prep demo ({profile} profile)\n\n{table}\n")
    (out / "summary.json").write_text(json.dumps({"profile": profile, "datasets": rows}, indent=1))
    sheet = contact_sheet(sets, out / "contact_sheet.png")
    print(f"contact sheet: {sheet}")
    return {"sets": {k: str(v) for k, v in sets.items()}, "rows": rows, "contact_sheet": str(sheet)}
