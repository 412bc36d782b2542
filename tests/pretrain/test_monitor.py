"""The online k-NN monitor (``pretrain.monitor``) on real bundled shards: rows at the expected steps, off without an
eval set, bad eval sets stop the run at start-up with exit 2, the training trajectory is unchanged (bit for bit,
with exact resume), and two DDP ranks write each row once without hanging."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[2]
MONITOR_KEYS = ("monitor_knn_acc", "monitor_lp_acc", "monitor_seconds")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def _column(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key) not in (None, "")}


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt.find_latest(run_dir) / "model.safetensors"))


@pytest.fixture(scope="module")
def mni(bundled_shards) -> Path:
    return bundled_shards["mni152"]


@pytest.fixture(scope="module")
def unlabelled(mni, tmp_path_factory) -> Path:
    """The real MNI152 shard set with its masks taken out of every tar: samples with neither labels nor masks."""
    import shutil
    import tarfile

    root = tmp_path_factory.mktemp("unlabelled") / "mni152_images_only"
    root.mkdir()
    shutil.copy(mni / "manifest.json", root / "manifest.json")
    for shard in sorted(mni.glob("*.tar")):
        with tarfile.open(shard) as src, tarfile.open(root / shard.name, "w") as dst:
            for member in src.getmembers():
                if not member.name.endswith((".mask.npy", ".mask.png")):
                    dst.addfile(member, src.extractfile(member))
    return root


def test_rows_before_training_on_schedule_and_at_the_last_step(tmp_path, mni, bundled_shards, run_pretrain,
                                                               tiny_overrides):  # fmt: skip
    from pretrain.plot import plot_metrics

    out = tmp_path / "run"
    monitor = [f"monitor.eval_set={mni}", "monitor.eval_every=2", "monitor.linear_probe=true"]
    run_pretrain(tiny_overrides(out, mni, "max_steps=5", "checkpoint_every=0", "log_every=3", *monitor))
    rows = _rows(out)
    steps = [int(r["step"]) for r in rows]
    assert steps == [0, 2, 3, 4, 5]  # log rows at 3 and 5, monitor rows at 0, 2, 4 and the last step 5
    assert len(set(steps)) == len(steps)
    knn, probe = _column(rows, "monitor_knn_acc"), _column(rows, "monitor_lp_acc")
    assert sorted(knn) == sorted(probe) == [0, 2, 4, 5]
    assert all(0.0 <= v <= 1.0 for v in [*knn.values(), *probe.values()])
    assert all(v > 0 for v in _column(rows, "monitor_seconds").values())
    assert sorted(_column(rows, "loss")) == [2, 3, 4, 5]  # step 0 is before training: no loss yet

    with_monitor = plot_metrics(out / "metrics.csv", tmp_path / "with.png")
    plain = tmp_path / "plain.csv"
    plain.write_text("step,loss,match_acc\n1,1.0,0.1\n2,0.9,0.2\n")
    without = plot_metrics(plain, tmp_path / "without.png")
    import matplotlib.image

    wide, narrow = matplotlib.image.imread(with_monitor), matplotlib.image.imread(without)
    assert wide.shape[1] > 1.3 * narrow.shape[1]  # a third panel: the monitor's accuracies


def test_image_labels_and_channels_follow_the_pipeline(bundled_shards):
    """Colour tiles become 1-channel inputs at the pretraining size, normalised as the training views are."""
    from lvmmed.config import load_config
    from pretrain.config import PretrainConfig
    from pretrain.monitor import load_eval_tensors

    overrides = [f"monitor.eval_set={bundled_shards['color2d']}", "augment.size=48", "augment.mean=[0.25]"]
    cfg = load_config(PretrainConfig, "configs/pretrain/tiny_cpu.yaml", [*overrides, "augment.std=[2.0]"])
    data = load_eval_tensors(cfg)
    manifest = json.loads((bundled_shards["color2d"] / "manifest.json").read_text())
    assert data.kind == "image" and data.num_classes == len(manifest["label_names"])
    assert len(data.train_y) == manifest["counts"]["train"] and len(data.test_y) == manifest["counts"]["val"]
    assert data.train_x.shape[1:] == (1, 48, 48) and data.train_x.dtype == torch.float16
    lo, hi = (0 - 0.25) / 2.0, (1 - 0.25) / 2.0  # [0, 1] images after (x - mean) / std
    assert lo - 1e-3 <= float(data.train_x.min()) and float(data.train_x.max()) <= hi + 1e-3


@pytest.mark.parametrize("backbone", [[], ["model.backbone=resnet18", "augment.size=64"]], ids=["vit", "resnet"])
def test_monitor_changes_nothing_in_training_and_resumes_exactly(tmp_path, mni, run_pretrain, tiny_overrides,
                                                                 crash_after_checkpoint, backbone):  # fmt: skip
    """Monitor off == monitor on at every step (probe too) == monitor on with a crash and resume: same losses, same
    weights bit for bit. The resumed run keeps its step-2 row and does not evaluate step 2 again. Perturbed
    black-box gradients draw Gumbel noise from torch's global generator at every step, so a monitor that moved that
    RNG would change the trajectory; with ResNet's BatchNorm, so would a monitor that ran the backbone in train mode
    or left it in eval mode."""
    noise = ["loss.graph_matching.perturb_samples=2", "loss.graph_matching.perturb_noise=0.1"]
    args = ["max_steps=4", "checkpoint_every=2", *noise, *backbone]
    monitor = [f"monitor.eval_set={mni}", "monitor.eval_every=1", "monitor.linear_probe=true"]
    monitor.append("monitor.max_samples=100")  # the memory's size does not matter here
    off, on, resumed = tmp_path / "off", tmp_path / "on", tmp_path / "resumed"
    run_pretrain(tiny_overrides(off, mni, *args))
    run_pretrain(tiny_overrides(on, mni, *args, *monitor))

    crash_after_checkpoint(2)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(tiny_overrides(resumed, mni, *args, *monitor))
    crash_after_checkpoint(None)
    run_pretrain(tiny_overrides(resumed, mni, *args, *monitor))

    off_rows, on_rows, resumed_rows = _rows(off), _rows(on), _rows(resumed)
    assert not any(key in off_rows[0] for key in MONITOR_KEYS)  # no eval set: no monitor
    assert [int(r["step"]) for r in resumed_rows] == [0, 1, 2, 3, 4]
    assert sorted(_column(on_rows, "monitor_knn_acc")) == [0, 1, 2, 3, 4]
    assert _column(on_rows, "monitor_knn_acc") == _column(resumed_rows, "monitor_knn_acc")
    for key in ("loss", "match_acc", "grad_norm"):
        assert _column(off_rows, key) == _column(on_rows, key) == _column(resumed_rows, key), key
    reference = _final_weights(off)
    for other in (_final_weights(on), _final_weights(resumed)):
        assert other.keys() == reference.keys()
        assert all(torch.equal(reference[k], other[k]) for k in reference)


@pytest.mark.parametrize(
    ("eval_set", "expected"),
    [
        ("missing", "does not exist"),
        ("parent", "is not a shard set"),
        ("pretrain_extra", "has no samples in split(s) ['val']"),
        ("mni152:labels=image", "needs meta.label on every sample"),
        ("unlabelled", "has no labels"),
    ],
)
def test_bad_eval_set_is_a_config_error_before_any_step(tmp_path, mni, bundled_shards, unlabelled, tiny_overrides,
                                                        capsys, eval_set, expected):  # fmt: skip
    from accelerate.state import AcceleratorState, GradientState

    from pretrain.__main__ import cli

    name, _, extra = eval_set.partition(":")
    where = {"missing": tmp_path / "nowhere", "parent": Path(mni).parent, "unlabelled": unlabelled}.get(name)
    where = where or bundled_shards[name]
    out = tmp_path / "run"
    argv = tiny_overrides(out, mni, "max_steps=3", f"monitor.eval_set={where}", *([f"monitor.{extra}"] * bool(extra)))
    try:
        code = cli(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "monitor.eval_set=" in err
    assert not (out / "checkpoints").exists() and not (out / "metrics.csv").exists()  # stopped before training


@pytest.mark.parametrize("override", ["monitor.test_split=test", "monitor.train_split=test", "monitor.k=0"])
def test_test_split_and_bad_values_are_refused_by_the_config(tmp_path, mni, tiny_overrides, override):
    from pretrain.__main__ import cli

    with pytest.raises(SystemExit) as exc:
        cli(tiny_overrides(tmp_path, mni, f"monitor.eval_set={mni}", override))
    assert exc.value.code == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch`` of two real gloo ranks on CPU (``ACCELERATE_USE_CPU=1 --multi_gpu``), under a timeout."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
        "-m", "pretrain", *argv,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ranks_write_each_monitor_row_once(tmp_path, mni, tiny_overrides):
    out = tmp_path / "ddp"
    argv = tiny_overrides(out, mni, "max_steps=3", "checkpoint_every=0", f"monitor.eval_set={mni}",
                          "monitor.eval_every=2", "log_every=2")  # fmt: skip
    proc = _launch_two(argv)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads(p.read_text()) for p in sorted((out / "processes").glob("rank*.json"))]
    assert [r["world_size"] for r in ranks] == [2, 2] and {r["backend"] for r in ranks} == {"gloo"}
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [0, 2, 3]
    knn = _column(rows, "monitor_knn_acc")
    assert sorted(knn) == [0, 2, 3] and all(0.0 <= v <= 1.0 for v in knn.values())
    assert proc.stderr.count("monitor monitor_knn_acc") == 3  # evaluated by one rank only


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_ranks_stop_together_on_a_bad_eval_set(tmp_path, mni, tiny_overrides):
    out = tmp_path / "ddp_bad"
    proc = _launch_two(tiny_overrides(out, mni, "max_steps=3", f"monitor.eval_set={tmp_path / 'nowhere'}"))
    assert proc.returncode != 0
    assert proc.stderr.count("error: monitor.eval_set=") == 2, proc.stderr[-4000:]  # both ranks, one line each
    assert not (out / "checkpoints").exists()
