"""Checks that keep a user's own data from giving meaningless numbers: splits whose classes the training split
never shows, weights with NaN, shards that are truncated or cut on a sample boundary, segmentation masks without
a foreground class, and config values that cannot run (empty seeds, zero epochs, unknown backbones)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lvmmed.errors import EXIT_USAGE, InputError


def test_splits_whose_classes_training_never_shows_are_refused():
    from downstream.run import check_class_coverage

    labels = np.array([0] * 6 + [1] * 6 + [2] * 6)
    names = ["camera", "coins", "moon"]
    ok = {"train": np.arange(0, 18, 2), "val": np.arange(1, 18, 4), "test": np.arange(3, 18, 4)}
    check_class_coverage(labels, ok, names)
    with pytest.raises(InputError, match="test split has classes that the training split lacks: moon"):
        check_class_coverage(
            labels, {"train": np.arange(0, 12), "val": np.arange(0, 0), "test": np.arange(12, 18)}, names
        )
    with pytest.raises(InputError, match=r"training split has 1 class\(es\) \(camera\)"):
        check_class_coverage(
            labels, {"train": np.arange(0, 6), "val": np.arange(6, 12), "test": np.arange(12, 18)}, names
        )


def test_weights_with_nan_are_refused_naming_the_tensors(tmp_path):
    from lvmmed.models import create_backbone
    from lvmmed.models.state_dict import WeightLoadError
    from lvmmed.weight_sources import load_pretrained

    model = create_backbone("resnet18", in_chans=1)
    state = model.state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    torch.save(state, tmp_path / "diverged.pth")
    with pytest.raises(WeightLoadError, match=rf"NaN or inf values in 1 tensor\(s\), e.g. \['{first}'\]"):
        load_pretrained(create_backbone("resnet18", in_chans=1), tmp_path / "diverged.pth")


def _rewrite(shard: Path, keep=lambda i, name: True, change=lambda name, data: data) -> None:
    """Rewrites a tar keeping the members ``keep(sample index, name)`` selects, with ``change`` applied."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = list(dict.fromkeys(m.name.split(".", 1)[0] for m, _ in members))
    with tarfile.open(shard, "w") as out:
        for member, data in members:
            if keep(keys.index(member.name.split(".", 1)[0]), member.name):
                data = change(member.name, data)
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))


def test_truncated_or_short_shards_are_clear_errors(bundled_shards, tmp_path):
    from lvmmed.data.shards import ShardFormatError, load_arrays, load_manifest

    root = Path(shutil.copytree(bundled_shards["dicom_modality"], tmp_path / "set"))
    shard = root / "train-000000.tar"
    count = next(s["count"] for s in load_manifest(root).shards if s["name"] == shard.name)
    _rewrite(shard, keep=lambda i, name: i < count - 2)  # cut on a sample boundary: a valid, shorter tar
    with pytest.raises(ShardFormatError, match=rf"holds {count - 2} samples, its manifest says {count}") as err:
        load_arrays(root, "train")
    assert "data_prep verify" in err.value.fix
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ShardFormatError, match=r"cannot read shard .*train-000000\.tar"):
        load_arrays(root, "train")


def test_segmentation_masks_without_foreground_are_refused(bundled_shards, tmp_path):
    from downstream.segmentation.tasks import SegTask, load_split
    from lvmmed.data.shards import ShardFormatError

    task = SegTask("user_set", "user_set")  # a user's set: classes from its masks / manifest
    root = Path(shutil.copytree(Path(bundled_shards["mni152"]), tmp_path / task.shard_set))
    assert load_split(task, tmp_path, "train", 32).num_classes == 4  # as built: background + 3 tissues
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "mask_labels": None}))

    def zero_mask(name: str, data: bytes) -> bytes:
        if name.endswith("meta.json"):  # no class names left anywhere: they come from the mask values
            return json.dumps({k: v for k, v in json.loads(data).items() if k != "mask_labels"}).encode()
        if not name.endswith("mask.npy"):
            return data
        buf = io.BytesIO()
        np.save(buf, np.zeros_like(np.load(io.BytesIO(data))))
        return buf.getvalue()

    for shard in root.glob("*.tar"):
        _rewrite(shard, change=zero_mask)
    with pytest.raises(ShardFormatError, match="no foreground class"):
        load_split(task, tmp_path, "train", 32)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("seeds=[]", "seeds must not be empty"),
        ("optim.epochs=0", "optim.epochs"),
        ("backbone=resnet9000", "unknown backbone"),
    ],
)
def test_config_values_that_cannot_run_exit_2(override, fragment, capsys):
    from downstream.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main([override, "--print-config"])
    err = capsys.readouterr().err
    assert exit_.value.code == EXIT_USAGE and fragment in err
    last = err.strip().splitlines()[-1]  # argparse's usage lines, then one error line, no traceback
    assert last.startswith("python -m downstream: error:") and "Traceback" not in err


def test_a_failed_run_ends_with_one_contract_line(bundled_shards, tmp_path, capsys):
    from downstream.__main__ import main

    argv = [f"task=shards:{bundled_shards['dicom_modality']}", "backbone=resnet18", "img_size=32", "seeds=[0]",
            f"weights={tmp_path / 'missing.pth'}", f"output_dir={tmp_path / 'out'}", "progress=false"]  # fmt: skip
    assert main(argv) == 1
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m downstream: error: 1 of 1 runs failed; seed 0:") and "missing.pth" in last
    assert " — " in last and "nan ± nan" not in out  # a remedy, and no table of failed metrics
