"""ONNX export of exported backbones, checked with onnxruntime (dynamic batch), and its CLI errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from lvmmed.models import create_backbone
from lvmmed.onnx_export import MissingDependencyError, export_onnx, real_inputs
from lvmmed.weights import load_backbone, main, save_pretrained

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def export_dir(tmp_path):
    def make(name: str, in_chans: int, img_size: int):
        torch.manual_seed(0)
        model = create_backbone(name, in_chans=in_chans, img_size=img_size)
        return save_pretrained(model, tmp_path / name, {"input_mean": [0.5], "input_std": [0.25]})

    return make


@pytest.mark.parametrize(
    ("name", "in_chans", "img_size"), [("resnet18", 1, 64), pytest.param("vit_tiny", 3, 32, marks=pytest.mark.slow)]
)
def test_onnx_matches_torch_at_other_batch_sizes(export_dir, name, in_chans, img_size):
    folder = export_dir(name, in_chans, img_size)
    report = export_onnx(folder)
    assert report["max_abs_diff"] < 1e-4 and report["checked_batch_sizes"] == [1, 3]
    assert json.loads((folder / "onnx.json").read_text())["max_abs_diff"] == report["max_abs_diff"]
    # Our own run at batch 5 (traced at 2): the batch dimension is dynamic and the features match torch.
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = real_inputs(in_chans, img_size, [0.5], [0.25], 5)
    assert x.std() > 0.1  # real images, not a constant
    got = session.run(["features"], {"pixel_values": x.numpy()})[0]
    with torch.no_grad():
        expected = load_backbone(folder).eval()(x).numpy()
    assert got.shape == (5, expected.shape[1])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_cli_reports_the_difference_and_errors_follow_the_contract(export_dir, tmp_path, capsys, monkeypatch):
    folder = export_dir("resnet18", 1, 32)
    assert main(["export-onnx", str(folder), "--out", str(tmp_path / "r18.onnx")]) == 0
    out = capsys.readouterr().out
    assert "r18.onnx (opset 18, dynamic batch); onnxruntime vs torch" in out and "max abs diff" in out
    assert (tmp_path / "r18.json").is_file() and not list(tmp_path.glob(".*tmp*"))

    assert main(["export-onnx", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match="needs the package 'onnxruntime'"):
        export_onnx(folder)
    assert main(["export-onnx", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'lvmmed[onnx]'" in err and "onnxruntime==" in err
