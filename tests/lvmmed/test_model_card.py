"""Every export carries a README.md model card rendered from its config.json."""

from __future__ import annotations

import json

from lvmmed.model_card import code_version, render_model_card
from lvmmed.models import create_backbone
from lvmmed.weights import save_pretrained


def test_save_pretrained_writes_a_model_card_from_config(tmp_path):
    extra = {"input_mean": [0.5], "input_std": [0.5],
             "pretrain": {"loss": "ntxent", "steps": 40, "images_seen": 1280,
                          "datasets": [{"name": "mni152", "samples": 45, "splits": ["train"], "location": "/d/m"}],
                          "init": {"weights": None}}}  # fmt: skip
    folder = save_pretrained(create_backbone("resnet18", in_chans=1, img_size=64), tmp_path / "export", extra)
    config = json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    assert card == render_model_card(config)
    assert card.startswith("---\nlibrary_name: lvmmed\n") and "# resnet18 pretrained with lvmmed (ntxent loss)" in card
    assert "| resnet18 | 1 | 64 | 512 |" in card and "mean [0.5] and std [0.5]" in card
    assert "| mni152 | 45 | train | `/d/m` |" in card and "Random initialisation." in card
    assert "CC BY-NC-ND" not in card  # no licence caveat without published init weights
    assert config["code_version"]["lvmmed"] == config["lvmmed_version"]


def test_card_without_pretraining_metadata_and_published_init_caveat():
    bare = render_model_card({"architecture": "vit_tiny", "in_chans": 3, "img_size": 32, "feature_dim": 192})
    assert "## Pretraining" not in bare and "## Input" not in bare and "| vit_tiny | 3 | 32 | 192 |" in bare
    card = render_model_card({"architecture": "resnet50", "pretrain": {"init": {"weights": "lvmmed-resnet50",
                              "kind": "published", "adapted": ["conv1.weight: summed"]}}})  # fmt: skip
    assert "Pretraining continued from `lvmmed-resnet50`" in card and "CC BY-NC-ND 2.0" in card
    assert "conv1.weight: summed" in card


def test_code_version_names_the_git_commit_of_this_checkout():
    import subprocess
    from pathlib import Path

    import pytest

    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    version = code_version()
    assert version["git_commit"] == head.strip() and len(head.strip()) == 40
    assert isinstance(version["git_dirty"], bool)
