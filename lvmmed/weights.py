"""Weight sources, safe loading, exports and the ``python -m lvmmed.weights`` CLI.

Sources accepted by :func:`load_pretrained`, :func:`load_backbone` and ``create_backbone(pretrained=...)``:

* an **export dir** written by :func:`save_pretrained` (``model.safetensors`` + ``config.json``);
* ``lvmmed-resnet50`` / ``lvmmed-vitb``: the published LVM-Med files ``lvmmed_resnet.torch`` (torchvision ResNet-50
  keys) and ``lvmmed_vit.pth`` (SAM ``ImageEncoderViT`` keys, no prefix, no ``pos_embed``), looked up in
  ``$LVMMED_WEIGHTS_DIR`` then ``~/.cache/lvmmed/weights``, or given explicitly as ``lvmmed-vitb=/path/file``;
* ``torchvision:/file.pth`` and ``timm:/file`` (general weights from a local file; classifier keys ignored);
* a plain file path (``.safetensors``, ``.pth``, ``.pt``, ``.torch``, ``.bin``) whose layout is detected;
* ``hf://owner/repo/path/in/repo``: a file from the local Hugging Face cache (fetched only when the network is allowed).

Exports carry a ``README.md`` model card (:mod:`lvmmed.model_card`); ``export-onnx`` writes ``model.onnx``
(:mod:`lvmmed.onnx_export`).

Every file is read with ``torch.load(weights_only=True)`` or safetensors: pickles holding other objects are refused.
Keys go through the prefix rule, the adaptations and the strict check of :mod:`lvmmed.models.state_dict`. Nothing is
downloaded unless the caller passes ``allow_network=True`` (or sets ``LVMMED_ALLOW_DOWNLOAD=1``); then a missing
published file is fetched with ``huggingface_hub.hf_hub_download`` from its mirror.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from safetensors.torch import save_file

from lvmmed import __version__
from lvmmed.errors import EXIT_CODES_HELP, run_cli
from lvmmed.model_card import code_version, render_model_card
from lvmmed.models.base import Backbone
from lvmmed.models.loading import load_backbone
from lvmmed.models.state_dict import LoadReport, WeightLoadError, detect_layout, strip_prefixes
from lvmmed.onnx_export import export_onnx
from lvmmed.weight_sources import (
    CONFIG_NAME,
    CORE_CONFIG_KEYS,
    PUBLISHED,
    WEIGHTS_NAME,
    PublishedWeights,
    ResolvedSource,
    WeightsNotFoundError,
    export_normalisation,
    load_pretrained,
    read_state_dict,
    resolve_source,
    weights_dirs,
)

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
MODEL_CARD_NAME = "README.md"

__all__ = [
    "CONFIG_NAME",
    "PUBLISHED",
    "WEIGHTS_NAME",
    "LoadReport",
    "PublishedWeights",
    "ResolvedSource",
    "WeightLoadError",
    "WeightsNotFoundError",
    "convert_file",
    "export_normalisation",
    "inspect_file",
    "load_backbone",
    "load_pretrained",
    "read_state_dict",
    "resolve_source",
    "save_pretrained",
    "weights_dirs",
]


def save_pretrained(backbone: Backbone, out_dir: str | os.PathLike, extra_config: dict | None = None) -> Path:
    """Writes ``model.safetensors`` + ``config.json`` + a ``README.md`` model card atomically (temp dir, rename).

    ``config.json`` holds ``architecture``, ``in_chans``, ``img_size``, ``feature_dim``, ``lvmmed_version``,
    ``code_version`` (lvmmed version and git commit, :func:`lvmmed.model_card.code_version`) and ``extra_config``
    (JSON-serialisable; it may not override the core keys). ``README.md`` is rendered from ``config.json``
    (:func:`lvmmed.model_card.render_model_card`).
    """
    extra = dict(extra_config or {})
    clash = sorted(set(extra) & set(CORE_CONFIG_KEYS))
    if clash:
        raise ValueError(f"extra_config may not override {clash}")
    config = {**backbone.config(), "feature_dim": backbone.feature_dim, "lvmmed_version": __version__,
              "code_version": code_version(), **extra}  # fmt: skip
    text = json.dumps(config, indent=2, sort_keys=True)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in backbone.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "architecture": config["architecture"]})
        (tmp / CONFIG_NAME).write_text(text + "\n")
        (tmp / MODEL_CARD_NAME).write_text(render_model_card(config))
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def inspect_file(path: str | os.PathLike) -> dict:
    """Layout, parameter count and key summary of a weight file or export dir."""
    state = read_state_dict(path)
    stripped_state, stripped, _ = strip_prefixes(state)
    layout = detect_layout(stripped_state)
    heads: dict[str, int] = {}
    for key in state:
        heads[key.split(".")[0]] = heads.get(key.split(".")[0], 0) + 1
    return {
        "file": str(path),
        "layout": layout.kind,
        "architecture": layout.architecture,
        "in_chans": layout.in_chans,
        "native_img_size": layout.img_size,
        "notes": layout.notes,
        "stripped_prefixes": stripped,
        "num_tensors": len(state),
        "num_parameters": int(sum(v.numel() for k, v in state.items() if not k.endswith(BUFFER_SUFFIXES))),
        "dtypes": sorted({str(v.dtype).replace("torch.", "") for v in state.values()}),
        "top_level_keys": heads,
    }  # fmt: skip


def convert_file(path: str | os.PathLike, to: str = "safetensors", out: str | os.PathLike | None = None) -> Path:
    """Converts a checkpoint to a plain safetensors file (prefixes kept, tensors made contiguous)."""
    if to != "safetensors":
        raise ValueError(f"unsupported target format '{to}' (only 'safetensors')")
    src = Path(path)
    dst = Path(out) if out else src.with_suffix(".safetensors")
    if dst.resolve() == src.resolve():
        raise ValueError(f"{src} is already a safetensors file")
    tensors = {k: v.contiguous().clone() for k, v in read_state_dict(src).items()}
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": src.name})
    tmp.replace(dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    """``python -m lvmmed.weights inspect FILE`` | ``convert FILE --to safetensors [--out F]`` |
    ``export-onnx DIR [--out F] [--opset N] [--no-check]``; returns the exit status.

    A missing file named on the command line is a usage error (exit 2); a file that is not a readable weight file
    (text, zero bytes, truncated, pickled objects), a missing onnx/onnxruntime package or a failed ONNX check is a
    run failure (exit 1). Both print one line, no traceback.
    """
    return run_cli(_run, argv, "python -m lvmmed.weights", usage_errors=(WeightsNotFoundError,))


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lvmmed.weights", description=__doc__.splitlines()[0], epilog=EXIT_CODES_HELP
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("inspect", help="print layout, parameter count and key summary").add_argument("file")
    conv = sub.add_parser("convert", help="convert a checkpoint to safetensors")
    conv.add_argument("file")
    conv.add_argument("--to", default="safetensors", choices=["safetensors"])
    conv.add_argument("--out", default=None)
    onnx = sub.add_parser("export-onnx", help="export a backbone to ONNX (dynamic batch), checked with onnxruntime")
    onnx.add_argument("source", help="an export dir (or any weight source)")
    onnx.add_argument("--out", default=None, help="the .onnx file (default: <export dir>/model.onnx)")
    onnx.add_argument("--opset", type=int, default=18)
    onnx.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        print(json.dumps(inspect_file(args.file), indent=2))
    elif args.command == "convert":
        print(f"wrote {convert_file(args.file, args.to, args.out)}")
    else:
        report = export_onnx(args.source, args.out, opset=args.opset, check=not args.no_check)
        checked = (
            f"; onnxruntime vs torch on real CT/MR slices at batch 1 and 3: max abs diff {report['max_abs_diff']:.3g}"
            if "max_abs_diff" in report
            else " (not checked)"
        )
        print(f"wrote {report['file']} (opset {report['opset']}, dynamic batch){checked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
