"""ONNX export of a backbone, checked with onnxruntime: ``python -m lvmmed.weights export-onnx DIR``.

The graph maps ``pixel_values`` (B, in_chans, img_size, img_size), normalised as the export's ``config.json`` says,
to ``features`` (B, feature_dim), the pooled features of ``Backbone.forward``; the batch dimension is dynamic. It is
made with the torch exporter (``torch.onnx.export(dynamo=True)``, which needs ``onnxscript``), then run with
onnxruntime's CPU provider on real images (pydicom's bundled CT and MR slices, scaled and normalised like training
inputs) at two batch sizes other than the traced one. The largest absolute difference to torch's output is reported
and written to ``onnx.json``; above ``atol + rtol * max|torch output|`` the export fails and no file is kept.

Choices: opset 18 (the torch exporter's default range; override with ``--opset``); weights inside the ``.onnx``
file unless they pass 1.8 GB (protobuf's 2 GB limit), then beside it as ``model.onnx.data``; files are written into
a temporary folder and renamed into place, so an interrupted export leaves no half-written model.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lvmmed.data import samples
from lvmmed.data.channels import match_channels
from lvmmed.data.processing import normalize_intensity
from lvmmed.errors import LvmmedError
from lvmmed.models.loading import load_backbone
from lvmmed.weight_sources import input_settings, resolve_source

ONNX_NAME, REPORT_NAME = "model.onnx", "onnx.json"
ONNX_PINS = "onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2"
EXTERNAL_DATA_BYTES = 1_800_000_000


class MissingDependencyError(LvmmedError):
    """An optional package this command needs is not installed (exit 1); the fix names the install command."""

    default_fix = f"pip install 'lvmmed[onnx]' (or: pip install {ONNX_PINS})"


class OnnxCheckError(LvmmedError):
    """onnxruntime's output differs from torch's beyond the tolerance (exit 1)."""

    default_fix = "report it with the printed difference; --opset N tries another opset"


def require(module: str, purpose: str) -> Any:
    """Imports an optional module or raises :class:`MissingDependencyError` naming how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{purpose} needs the package '{module}', which is not installed") from None


def real_inputs(in_chans: int, img_size: int, mean, std, batch: int) -> torch.Tensor:
    """``batch`` real slices (pydicom's CT_small and MR_small, then their mirror images), scaled and normalised."""
    from lvmmed.data.readers import read_dicom  # pydicom and nibabel: not loaded by `python -m lvmmed.weights inspect`

    base = []
    for name in ("ct_small", "mr_small"):
        record = read_dicom(samples.path(name))[0]  # CT in Hounsfield units, as data_prep reads it
        scaled, _ = normalize_intensity(record.array.astype(np.float32), record.meta.get("modality", "OT"))
        base.append(F.interpolate(torch.from_numpy(scaled)[None, None], size=(img_size, img_size), mode="bilinear"))
    images = [base[i % 2] if i < 2 else base[i % 2].flip(-1) for i in range(batch)]
    x = match_channels(torch.cat(images), in_chans)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    if m.shape[1] not in (1, in_chans):
        m, s = m.mean(1, keepdim=True), s.mean(1, keepdim=True)
    return (x - m) / s


def export_onnx(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    opset: int = 18,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Exports the backbone of ``source`` (an export dir or any weight source) to ONNX and checks it.

    Args:
        source: An lvmmed export dir (or any :mod:`lvmmed.weights` source; input settings as it implies).
        out: The ``.onnx`` file; default ``<source dir>/model.onnx``.
        opset: ONNX opset version.
        check: Run the graph with onnxruntime against torch (needs ``onnxruntime``).
        atol, rtol: Tolerance of the check: ``max|ort - torch| <= atol + rtol * max|torch|``.

    Returns:
        The report written to ``onnx.json`` beside the file (file, opset, names, dynamic batch, max abs diff, ...).
    """
    require("onnx", "ONNX export")
    require("onnxscript", "the torch ONNX exporter (torch.onnx.export(dynamo=True))")
    ort = require("onnxruntime", "checking the exported model") if check else None
    resolved = resolve_source(source)
    model = load_backbone(source).eval()
    settings = input_settings(resolved)
    mean = settings.mean or (0.5,)
    std = settings.std or (0.5,)
    default_dir = resolved.path if resolved.path.is_dir() else resolved.path.parent
    target = Path(out) if out else default_dir / ONNX_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    example = real_inputs(model.in_chans, model.img_size, mean, std, 2)
    external = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > EXTERNAL_DATA_BYTES
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, (example,), str(tmp / target.name), dynamo=True, input_names=["pixel_values"],
                output_names=["features"], dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
                external_data=external, verbose=False,
            )  # fmt: skip
        report = {
            "file": str(target), "source": os.fspath(source), "architecture": model.name, "opset": opset,
            "input": {"name": "pixel_values", "shape": ["batch", model.in_chans, model.img_size, model.img_size],
                      "mean": list(mean), "std": list(std), "origin": settings.origin},
            "output": {"name": "features", "shape": ["batch", model.feature_dim]},
            "dynamic_batch": True, "external_data": external, "torch": torch.__version__,
        }  # fmt: skip
        if ort is not None:
            report.update(_check(ort, tmp / target.name, model, mean, std, atol, rtol))
        for produced in sorted(tmp.iterdir()):
            produced.replace(target.parent / produced.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report_path = target.with_name(REPORT_NAME if target.name == ONNX_NAME else f"{target.stem}.json")
    tmp_report = report_path.with_name(f".{report_path.name}.tmp-{os.getpid()}")
    tmp_report.write_text(json.dumps(report, indent=2) + "\n")
    tmp_report.replace(report_path)
    return report


def _check(ort: Any, path: Path, model: torch.nn.Module, mean, std, atol: float, rtol: float) -> dict[str, Any]:
    """Runs the ONNX graph at batch 1 and 3 (the graph was traced at 2) and compares it with torch."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs, scale = [], 0.0
    for batch in (1, 3):
        x = real_inputs(model.in_chans, model.img_size, mean, std, batch)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(["features"], {"pixel_values": x.numpy()})[0]
        if got.shape != expected.shape:
            raise OnnxCheckError(f"onnxruntime returned shape {got.shape} at batch {batch}, torch {expected.shape}")
        diffs.append(float(np.abs(got - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    worst = max(diffs)
    if not worst <= atol + rtol * scale:
        raise OnnxCheckError(
            f"onnxruntime and torch differ by up to {worst:.3g} (outputs up to {scale:.3g}; tolerance "
            f"{atol:g} + {rtol:g} x {scale:.3g}); the ONNX file was not kept"
        )
    return {"checked_batch_sizes": [1, 3], "max_abs_diff": worst, "max_abs_output": scale,
            "onnxruntime": ort.__version__, "check_inputs": "pydicom CT_small and MR_small slices"}  # fmt: skip
