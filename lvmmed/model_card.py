"""The ``README.md`` model card written beside every export, rendered from its ``config.json`` alone.

Sections follow the Hugging Face model-card layout (https://huggingface.co/docs/hub/model-cards: YAML metadata,
then model details, intended use, training data and procedure, how to use): architecture and input, the input
normalisation, the pretraining data sets, steps and loss, the initial weights, the code version and the licence
caveats. Nothing is invented: a field the config does not hold is left out, not guessed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from lvmmed import __version__

LVMMED_LICENCE_NOTE = (
    "The initial weights are the published LVM-Med weights (github.com/duyhominhnguyen/LVM-Med), licensed CC BY-NC-ND "
    "2.0: research use only, and adapted weights such as these may not be shared. Check that licence before "
    "distributing this model."
)


def code_version() -> dict[str, Any]:
    """``{"lvmmed": version, "git_commit": sha or None, "git_dirty": bool or None}`` of the running code."""
    root = Path(__file__).resolve().parents[1]
    commit = dirty = None

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode == 0:
            commit = head.stdout.strip()
            dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"lvmmed": __version__, "git_commit": commit, "git_dirty": dirty}


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _init_section(init: dict[str, Any] | None) -> list[str]:
    lines = ["## Initial weights", ""]
    if not init or not init.get("weights"):
        return [*lines, "Random initialisation.", ""]
    lines += [f"Pretraining continued from `{init['weights']}`", ""]
    details = [[k, f"`{init[k]}`"] for k in ("file", "sha256", "layout", "kind") if init.get(k)]
    details += [
        [k, "; ".join(map(str, init[k]))] for k in ("adapted", "ignored", "missing", "unexpected") if init.get(k)
    ]
    lines += _table(["", ""], details) if details else []
    if str(init["weights"]).startswith(("lvmmed-resnet50", "lvmmed-vitb")) or init.get("kind") == "published":
        lines += [f"**Licence:** {LVMMED_LICENCE_NOTE}", ""]
    return lines


def render_model_card(config: dict[str, Any]) -> str:
    """The model card of an export from its ``config.json`` dict."""
    arch = config.get("architecture", "backbone")
    pretrain = config.get("pretrain") or {}
    loss = pretrain.get("loss")
    title = f"{arch} pretrained with lvmmed" + (f" ({loss} loss)" if loss else "")
    lines = [
        "---", "library_name: lvmmed", "pipeline_tag: image-feature-extraction",
        "tags: [lvmmed, medical-imaging, self-supervised-learning]", "---", "", f"# {title}", "",
        "An image encoder exported by lvmmed, an open implementation of LVM-Med (Nguyen et al., NeurIPS 2023, "
        "arXiv:2306.11925). It maps an image to a pooled feature vector (`forward`) and a feature map "
        "(`forward_features`); `model.safetensors` holds the encoder only (no projector).", "",
        "## Model", "",
        *_table(["architecture", "in_chans", "img_size", "feature_dim"],
                [[arch, config.get("in_chans"), config.get("img_size"), config.get("feature_dim")]]),
    ]  # fmt: skip
    if "input_mean" in config:
        lines += ["## Input", "", f"{config.get('in_chans')} channel(s), {config.get('img_size')} px, values scaled to "
                  f"{config.get('input_range', [0.0, 1.0])}, then `(x - mean) / std` with mean {config['input_mean']} "
                  f"and std {config['input_std']}.", ""]  # fmt: skip
    if pretrain:
        keys = ("loss", "projector", "steps", "images_seen", "global_batch", "seed")
        rows = [[k.replace("_", " "), pretrain[k]] for k in keys if pretrain.get(k) is not None]
        lines += ["## Pretraining", "", *_table(["", ""], rows)]
        if datasets := pretrain.get("datasets"):
            rows = [[d.get("name"), d.get("samples", ""), ", ".join(d.get("splits", [])), f"`{d.get('location')}`"]
                    for d in datasets]  # fmt: skip
            lines += ["Data sets:", "", *_table(["name", "samples", "splits", "location"], rows)]
        lines += _init_section(pretrain.get("init"))
    version = config.get("code_version") or {"lvmmed": config.get("lvmmed_version")}
    commit = version.get("git_commit")
    lines += ["## Code version", "", f"lvmmed {version.get('lvmmed')}" + (f", git commit `{commit}`" if commit else "")
              + (" (with uncommitted changes)" if version.get("git_dirty") else "") + ".", ""]  # fmt: skip
    lines += [
        "## How to use", "", "```python", "from lvmmed.weights import load_backbone", "",
        'model = load_backbone("path/to/this/directory").eval()  # architecture and size from config.json', "```", "",
        "Embeddings of a shard set or an image folder: `python -m lvmmed embed --weights path/to/this/directory "
        "--data DIR --out OUT --plot`. ONNX: `python -m lvmmed.weights export-onnx path/to/this/directory`.", "",
        "## Limits", "",
        "Self-supervised features, not a diagnostic tool. The weights reflect the data sets above only; evaluate "
        "them on your own held-out data (`python -m downstream`) before relying on them.", "",
    ]  # fmt: skip
    return "\n".join(lines)
