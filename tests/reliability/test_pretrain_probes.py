"""Reliability probes of ``python -m pretrain``: bad data, damaged checkpoints, a full disk during a save.

Each case runs the real CLI entry in this process (tiny ViT on the bundled MR shards) and asserts the exit status,
the one-line message, and that nothing good was lost (the previous checkpoint stays valid and loadable).
"""

from __future__ import annotations

import errno
import io
import logging
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain import checkpoint as ckpt


def _no_traceback(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return err


def _rewrite_tar(src: Path, dst: Path, damage) -> int:
    """Copies a shard, passing each member through ``damage(index, info, data) -> data``; returns samples damaged."""
    damaged = 0
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        keys: list[str] = []
        for info in tin.getmembers():
            data = tin.extractfile(info).read()
            key = info.name.split(".")[0]
            if key not in keys:
                keys.append(key)
            new = damage(len(keys) - 1, info, data)
            damaged += new is not data and info.name.endswith("image.npy")
            info.size = len(new)
            tout.addfile(info, io.BytesIO(new))
    return damaged


# ---------------------------------------------------------------- data problems
@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("no-manifest", "no manifest.json"),
        ("text-tars", "unreadable"),
        ("truncated-shard", "max_skip_fraction"),
        ("a-third-unreadable", "max_skip_fraction"),
    ],
)
def test_bad_training_data_fails_clearly(damage, fragment, shard_copy, tmp_path, pretrain_cli, capsys):
    shards = shard_copy("data")
    train = shards / "train-000000.tar"
    if damage == "no-manifest":
        (shards / "manifest.json").unlink()
    elif damage == "text-tars":
        _rewrite_tar(Path(shutil.copy(train, tmp_path / "orig.tar")), train, lambda i, info, data: b"just text\n")
    elif damage == "truncated-shard":
        train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    else:  # every third image is not an npy: 15 of 45, fewer skips in 2 steps than min_skips_to_fail=20
        orig = Path(shutil.copy(train, tmp_path / "orig.tar"))
        n = _rewrite_tar(orig, train, lambda i, info, data: b"garbage" if i % 3 == 0 and "image" in info.name else data)
        assert n == 15
    out = tmp_path / "run"
    code = pretrain_cli([f"output_dir={out}", f"data.shards=[{shards}]", "max_steps=2", "checkpoint_every=0"])
    err = _no_traceback(capsys)
    assert code == 1, err[-3000:]
    assert "python -m pretrain: error:" in err and fragment in err, err[-3000:]
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("python -m pretrain: error:"), lines[-3:]  # no progress bar after the message
    if damage in ("truncated-shard", "a-third-unreadable"):
        assert str(train) in err  # the message names the shard, with its whole path (sets may share names)
        assert ckpt.checkpoint_problem(ckpt.find_latest(out)) is None  # the trained steps were kept
        assert not (out / "export").exists()  # but nothing was published


def test_config_error_exits_2_in_one_line(tmp_path, pretrain_cli, capsys):
    code = pretrain_cli([f"output_dir={tmp_path}", "optim.lrr=0.1"])
    err = _no_traceback(capsys)
    assert code == 2 and "Did you mean 'optim.lr'" in err


# ---------------------------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def trained_run(mni_shards, tmp_path_factory, tiny_pretrain_args):
    """A 2-step run with checkpoints at steps 1 and 2 (both kept)."""
    from lvmmed.errors import run_cli
    from pretrain.__main__ import main

    out = tmp_path_factory.mktemp("rel_run") / "run"
    argv = [*tiny_pretrain_args, *_resume_args(out, mni_shards)]
    try:
        assert run_cli(main, argv, "python -m pretrain") == 0
    finally:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return out


def _resume_args(out: Path, shards: Path) -> list[str]:
    return [f"output_dir={out}", f"data.shards=[{shards}]", "max_steps=2", "checkpoint_every=1", "keep_checkpoints=2"]


@pytest.mark.parametrize("damaged_file", ["model.safetensors", "optimizer.bin"])
def test_resume_skips_a_truncated_newest_checkpoint(
    damaged_file, trained_run, mni_shards, tmp_path, pretrain_cli, capsys, caplog
):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    newest = ckpt.checkpoints_root(out) / "checkpoint_00000002"
    (newest / damaged_file).write_bytes(b"")
    assert ckpt.checkpoint_problem(newest).startswith(f"{damaged_file} has 0 bytes")
    with caplog.at_level(logging.WARNING, logger="pretrain.checkpoint"):
        code = pretrain_cli(_resume_args(out, mni_shards))
    _no_traceback(capsys)
    assert code == 0
    assert any("checkpoint_00000002" in r.message and damaged_file in r.message for r in caplog.records)
    # resumed from step 1 and trained step 2 again: the newest checkpoint is whole again
    assert ckpt.checkpoint_problem(newest) is None and ckpt.read_trainer_state(newest)["step"] == 2
    load_file(str(newest / "model.safetensors"))


def test_resume_fails_clearly_when_no_checkpoint_is_valid(trained_run, mni_shards, tmp_path, pretrain_cli, capsys):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    for path in ckpt.complete_checkpoints(out):
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    code = pretrain_cli(_resume_args(out, mni_shards))
    err = _no_traceback(capsys)
    assert code == 1
    assert "no valid checkpoint" in err and "checkpoint_00000001" in err and "checkpoint_00000002" in err
    assert "resume=never" in err


def test_checkpoints_without_manifest_are_validated_by_loading(trained_run, tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    newest = ckpt.checkpoints_root(out) / "checkpoint_00000002"
    (newest / ckpt.MANIFEST_NAME).unlink()  # as written before manifests existed
    assert ckpt.checkpoint_problem(newest) is None
    data = (newest / "optimizer.bin").read_bytes()
    (newest / "optimizer.bin").write_bytes(data[: len(data) // 2])
    assert "optimizer.bin is not loadable" in ckpt.checkpoint_problem(newest)
    assert ckpt.find_valid(out).name == "checkpoint_00000001"


def test_flipped_byte_in_a_checkpoint_is_caught_by_its_hash(trained_run, tmp_path):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    newest = ckpt.checkpoints_root(out) / "checkpoint_00000002"
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-10] ^= 0x01  # inside a tensor: the file still opens, only the hash knows
    (newest / "model.safetensors").write_bytes(bytes(data))
    assert "sha256" in ckpt.checkpoint_problem(newest)


def test_disk_full_during_a_checkpoint_save_keeps_the_previous_one(
    mni_shards, tmp_path, pretrain_cli, capsys, monkeypatch
):
    real_write = ckpt.write_trainer_state
    calls = []

    def full_disk(directory, *a, **kw):  # the second save: model and optimiser written, then the disk is full
        calls.append(directory)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory / ckpt.STATE_NAME))
        return real_write(directory, *a, **kw)

    monkeypatch.setattr(ckpt, "write_trainer_state", full_disk)
    out = tmp_path / "run"
    code = pretrain_cli(_resume_args(out, mni_shards))
    err = _no_traceback(capsys)
    assert code == 1
    assert "no space left on device" in err and "checkpoint_00000001 is intact" in err, err[-2000:]
    previous = ckpt.checkpoints_root(out) / "checkpoint_00000001"
    assert ckpt.checkpoint_problem(previous) is None
    load_file(str(previous / "model.safetensors"))
    assert not (ckpt.checkpoints_root(out) / "checkpoint_00000002.tmp").exists()


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_trainer_state_is_reported_and_never_restarts_over_checkpoints(damage, trained_run, tmp_path, caplog):
    out = Path(shutil.copytree(trained_run, tmp_path / "run"))
    states = [path / ckpt.STATE_NAME for path in ckpt.named_checkpoints(out)]
    assert len(states) == 2

    def spoil(file: Path) -> None:
        file.write_text(file.read_text()[:20]) if damage == "truncated" else file.unlink()

    spoil(states[-1])
    with caplog.at_level(logging.WARNING, logger="pretrain.checkpoint"):
        assert ckpt.find_valid(out).name == "checkpoint_00000001"
    assert any("checkpoint_00000002" in r.message and ckpt.STATE_NAME in r.message for r in caplog.records)
    spoil(states[0])  # every checkpoint damaged: refuse, never start afresh over them
    with pytest.raises(ckpt.CheckpointError, match=r"no valid checkpoint .*checkpoint_00000002 .*checkpoint_00000001 "):
        ckpt.find_valid(out)


def test_a_save_that_fails_inside_torch_on_a_full_disk_removes_its_tmp(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as RuntimeError('... unexpected pos ...'), not OSError."""

    class Accelerator:  # one process; save_state fails half-way, as on a full disk
        num_processes, is_main_process = 1, True

        def save_state(self, directory, **kw):
            (Path(directory) / "model.safetensors").write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2112 vs 2008")

        def wait_for_everyone(self):
            pass

    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(ckpt.OutputError, match="no space left on device") as err:
        ckpt.save_checkpoint(Accelerator(), tmp_path, 3, {"step": 3}, "", keep=2)
    assert "no earlier checkpoint exists" in str(err.value)
    assert not list(ckpt.checkpoints_root(tmp_path).iterdir())  # the partial .tmp is gone


def test_non_finite_weights_are_not_exported(tmp_path):
    from lvmmed.errors import LvmmedError
    from pretrain.__main__ import check_finite_weights

    layer = torch.nn.Linear(4, 2)
    check_finite_weights(layer, tmp_path / "checkpoint_00000004")
    with torch.no_grad():
        layer.weight[0, 0] = float("inf")
    with pytest.raises(LvmmedError, match=r"NaN or inf in 1 tensor\(s\), e.g. \['weight'\]; nothing was exported"):
        check_finite_weights(layer, tmp_path / "checkpoint_00000004")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lr=.nan", "finite lr"),
        ("optim.lr=.inf", "finite lr"),
        ("data.num_workers=-1", "data.num_workers must be >= 0"),
        ("model.backbone=bogus", "unknown model.backbone 'bogus'"),
        ("augment.size=8", "smaller than a ViT patch"),
    ],
)
def test_config_values_that_cannot_train_exit_2(override, fragment, tmp_path, pretrain_cli, capsys):
    code = pretrain_cli([f"output_dir={tmp_path}", override, "--print-config"])
    err = _no_traceback(capsys)
    last = err.strip().splitlines()[-1]  # argparse's usage lines, then one error line
    assert code == 2 and last.startswith("python -m pretrain: error:") and fragment in last, err


def test_floating_point_errors_are_run_failures():
    from lvmmed.errors import EXIT_FAILURE, classify

    code, message, fix = classify(FloatingPointError("GraphMatchingLoss: the embeddings contain NaN or inf"))
    assert code == EXIT_FAILURE and "NaN" in message and "optim.lr" in fix


def test_resume_with_another_worker_count_is_a_config_error():
    from lvmmed.config import ConfigError
    from lvmmed.data.pipeline import StreamPosition

    position = StreamPosition(2)
    with pytest.raises(
        ConfigError, match=r"written with data.num_workers=0 or 1; exact resume needs the same \(got 2\)"
    ):
        position.load_state_dict({"num_workers": 1, "consumed": 0, "epoch": [0], "next_index": [0], "batches": [0]})


def test_resuming_with_another_config_names_the_changes(trained_run, tmp_path):
    from lvmmed.config import load_config
    from pretrain.config import PretrainConfig

    newest = ckpt.named_checkpoints(trained_run)[-1]
    saved = load_config(PretrainConfig, newest / "config.yaml")
    assert ckpt.config_changes(newest / "config.yaml", saved) == []
    moved = load_config(PretrainConfig, newest / "config.yaml", ["max_steps=9", f"output_dir={tmp_path}", "seed=7"])
    changes = ckpt.config_changes(newest / "config.yaml", moved)
    assert changes == [f"seed ({saved.seed!r} → 7)"]  # budget and paths do not change the trajectory
