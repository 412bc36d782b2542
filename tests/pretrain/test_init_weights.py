"""Continue pretraining from existing weights (``init.weights``): a published-layout LVM-Med ResNet-50 file made here,
strict reports, the config errors, resume semantics, the export's metadata and model card, and a 2-process launch."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from pretrain import checkpoint as ckpt
from pretrain.export import backbone_state

REPO = Path(__file__).resolve().parents[2]
# A tiny learning rate keeps the weights next to the init after a few steps, so "was it loaded" is measurable.
R50_ARGS = ("model.backbone=resnet50", "optim.lr=1e-9", "checkpoint_every=0", "export_at_end=true")


@pytest.fixture(scope="module")
def published_r50(tmp_path_factory) -> Path:
    """``lvmmed_resnet.torch`` exactly as LVM-Med publishes it: a torchvision ResNet-50 state dict with ``fc.*``."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("published") / "lvmmed_resnet.torch"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def _close_to_file(weights: dict[str, torch.Tensor], published: Path) -> None:
    """The trained backbone is the published file after a few 1e-9 steps: conv1 summed to 1 channel, rest equal."""
    reference = torch.load(published, weights_only=True)
    backbone = backbone_state(weights)
    torch.testing.assert_close(backbone["conv1.weight"], reference["conv1.weight"].sum(1, keepdim=True), atol=1e-5,
                               rtol=0)  # fmt: skip
    for key in ("layer1.0.conv1.weight", "layer4.2.conv3.weight", "bn1.weight"):
        torch.testing.assert_close(backbone[key], reference[key], atol=1e-5, rtol=0)
    random_init = torchvision.models.resnet50(weights=None).state_dict()["layer4.2.conv3.weight"]
    assert (random_init - reference["layer4.2.conv3.weight"]).abs().max() > 1e-2  # the check can fail


@pytest.mark.slow
def test_continue_from_published_resnet50_then_resume_without_the_file(
    tmp_path, bundled_shards, published_r50, run_pretrain, tiny_overrides
):
    init = tmp_path / "lvmmed_resnet.torch"
    shutil.copy(published_r50, init)
    out = tmp_path / "run"
    args = [*R50_ARGS, f"init.weights=lvmmed-resnet50={init}", "log_with=[tensorboard,jsonl]"]
    result = run_pretrain(tiny_overrides(out, bundled_shards["mni152"], "max_steps=2", *args))
    assert result["step"] == 2
    record = json.loads((out / "init_weights.json").read_text())
    assert record["ok"] and record["layout"] == "torchvision-resnet" and record["kind"] == "published"
    assert record["ignored"] == ["fc.weight", "fc.bias"] and record["missing"] == record["unexpected"] == []
    assert record["adapted"] == ["conv1.weight: summed over 3 input channels [64, 3, 7, 7] -> [64, 1, 7, 7]"]
    assert record["source_input"]["mean"] == [0.485, 0.456, 0.406]
    _close_to_file(load_file(ckpt.find_latest(out) / "model.safetensors"), published_r50)
    assert "init:\n  weights: lvmmed-resnet50=" in (out / "config.yaml").read_text()

    config = json.loads((out / "export" / "config.json").read_text())
    assert config["pretrain"]["init"]["sha256"] == record["sha256"] and config["pretrain"]["steps"] == 2
    assert config["pretrain"]["datasets"][0]["name"] == "mni152" and config["pretrain"]["datasets"][0]["samples"] > 0
    assert config["code_version"]["lvmmed"] and config["pretrain"]["images_seen"] == 16
    card = (out / "export" / "README.md").read_text()
    assert "# resnet50 pretrained with lvmmed (graph_matching loss)" in card and "CC BY-NC-ND" in card
    assert "summed over 3 input channels" in card and "| mni152 |" in card

    # Resume: the checkpoint holds the weights, so the init file is not read again (here: it is gone).
    init.unlink()
    again = run_pretrain(tiny_overrides(out, bundled_shards["mni152"], "max_steps=4", *args))
    assert again["step"] == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["loss"] is not None for r in rows)
    assert list((out / "pretrain").rglob("events.out.tfevents.*"))  # TensorBoard event files
    _close_to_file(load_file(ckpt.find_latest(out) / "model.safetensors"), published_r50)


def _torchvision_r18(path: Path, drop: tuple[str, ...] = ()) -> Path:
    state = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items() if k not in drop}
    torch.save(state, path)
    return path


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from accelerate.state import AcceleratorState, GradientState

    from pretrain.__main__ import cli

    try:
        code = cli(argv)
    except SystemExit as exit_:  # argparse's config errors (exit 2) leave through SystemExit
        code = exit_.code
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return code, capsys.readouterr().err.strip().splitlines()[-1]


def test_strict_mismatch_is_one_line_and_strict_false_records_it(tmp_path, bundled_shards, tiny_overrides, capsys,
                                                                  monkeypatch):  # fmt: skip
    monkeypatch.chdir(REPO)
    file = _torchvision_r18(tmp_path / "r18.pth", drop=("layer4.1.conv2.weight",))
    argv = tiny_overrides(tmp_path / "run", bundled_shards["mni152"], "max_steps=1", "model.backbone=resnet18",
                          f"init.weights=torchvision:{file}")  # fmt: skip
    code, last = _cli(argv, capsys)
    assert code == 1 and "does not fit resnet18: 1 missing ['layer4.1.conv2.weight']" in last
    assert "init.strict=false" in last and "Traceback" not in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "init_weights.json").read_text())["missing"] == ["layer4.1.conv2.weight"]

    code, _ = _cli([*argv, "init.strict=false", f"output_dir={tmp_path / 'loose'}"], capsys)
    record = json.loads((tmp_path / "loose" / "init_weights.json").read_text())
    assert code == 0 and not record["ok"] and record["missing"] == ["layer4.1.conv2.weight"]
    assert record["loaded"] == len(torchvision.models.resnet18().state_dict()) - 1 - 2  # minus the dropped key, fc.*


@pytest.mark.parametrize(
    ("override", "code", "expected"),
    [
        ("model.backbone=vit_tiny", 2, "holds a resnet18, but model.backbone=vit_tiny; set model.backbone=resnet18"),
        ("model.pretrained=x.pth", 2, "model.pretrained is replaced by init.weights: give init.weights=x.pth"),
        ("init.weights=/nonexistent/w.pth", 1, "/nonexistent/w.pth does not exist"),
        ("log_with=[nosuch]", 2, "log_with: unknown logger 'nosuch'"),
    ],
)
def test_init_and_logger_errors_follow_the_contract(tmp_path, bundled_shards, tiny_overrides, capsys, monkeypatch,
                                                    override, code, expected):  # fmt: skip
    monkeypatch.chdir(REPO)
    file = _torchvision_r18(tmp_path / "r18.pth")
    argv = tiny_overrides(tmp_path / "run", bundled_shards["mni152"], "max_steps=1", "model.backbone=resnet18",
                          f"init.weights={file}", override)  # fmt: skip
    got, last = _cli(argv, capsys)
    assert got == code and expected in last, last
    assert last.startswith("python -m pretrain: error:")


def test_a_tracker_that_is_not_installed_is_a_config_error(tmp_path, bundled_shards, tiny_overrides, capsys):
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    got, last = _cli(tiny_overrides(tmp_path / "run", bundled_shards["mni152"], "log_with=[mlflow]"), capsys)
    assert got == 2 and "'mlflow' needs the package 'mlflow', which is not installed: pip install mlflow" in last
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_accelerate_launch_continues_from_published_resnet50(
    tmp_path, bundled_shards, published_r50, tiny_overrides
):
    out = tmp_path / "ddp"
    argv = tiny_overrides(out, bundled_shards["mni152"], "max_steps=2", *R50_ARGS,
                          f"init.weights=lvmmed-resnet50={published_r50}")  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "pretrain", *argv]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads(p.read_text()) for p in sorted((out / "processes").glob("rank*.json"))]
    assert [r["world_size"] for r in ranks] == [2, 2] and {r["backend"] for r in ranks} == {"gloo"}
    assert json.loads((out / "init_weights.json").read_text())["kind"] == "published"
    _close_to_file(load_file(ckpt.find_latest(out) / "model.safetensors"), published_r50)
    config = json.loads((out / "export" / "config.json").read_text())
    assert config["pretrain"]["global_batch"] == 16 and config["pretrain"]["init"]["layout"] == "torchvision-resnet"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows][-2:] == [1, 2]


def test_random_means_random_init():
    from lvmmed.config import load_config
    from pretrain.config import PretrainConfig

    assert load_config(PretrainConfig).init.source is None  # the default: random init
    for value, expected in (("random", None), ("w.pth", "w.pth")):
        assert load_config(PretrainConfig, overrides=[f"init.weights={value}"]).init.source == expected
