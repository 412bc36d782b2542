"""Weight sources, safe loading, exports and the ``python -m lvmmed.weights`` CLI.

Sources accepted by :func:`load_pretrained`, :func:`load_backbone` and ``create_backbone(pretrained=...)``:

* an **export dir** written by :func:`save_pretrained` (``model.safetensors`` + ``config.json``);
* ``lvmmed-resnet50`` / ``lvmmed-vitb``: the published LVM-Med files ``lvmmed_resnet.torch`` (torchvision ResNet-50
  keys) and ``lvmmed_vit.pth`` (SAM ``ImageEncoderViT`` keys, no prefix, no ``pos_embed``), looked up in
  ``$LVMMED_WEIGHTS_DIR`` then ``~/.cache/lvmmed/weights``, or given explicitly as ``lvmmed-vitb=/path/file``;
* ``torchvision:/file.pth`` and ``timm:/file`` (general weights from a local file; classifier keys ignored);
* a plain file path (``.safetensors``, ``.pth``, ``.pt``, ``.torch``, ``.bin``) whose layout is detected;
* ``hf://owner/repo/path/in/repo``: a file from the local Hugging Face cache (fetched only when the network is allowed).

Every file is read with ``torch.load(weights_only=True)`` or safetensors: pickles holding other objects are refused.
Keys go through the prefix rule, the adaptations and the strict check of :mod:`lvmmed.models.state_dict`. Nothing is
downloaded unless the caller passes ``allow_network=True`` (or sets ``LVMMED_ALLOW_DOWNLOAD=1``); then a missing
published file is fetched with ``huggingface_hub.hf_hub_download`` from its mirror.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lvmmed.models.base import Backbone
from lvmmed.models.state_dict import (
    LoadReport,
    WeightLoadError,
    detect_layout,
    load_checked,
    strip_prefixes,
    unwrap_checkpoint,
)

__all__ = [
    "PUBLISHED",
    "LoadReport",
    "WeightLoadError",
    "WeightsNotFoundError",
    "load_backbone",
    "load_pretrained",
    "read_state_dict",
    "save_pretrained",
]

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
CORE_CONFIG_KEYS = ("architecture", "in_chans", "img_size", "feature_dim", "lvmmed_version")


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is missing; the message says which file and where to get it."""


@dataclass(frozen=True)
class PublishedWeights:
    """A published LVM-Med checkpoint (github.com/duyhominhnguyen/LVM-Med, README)."""

    filename: str
    architecture: str
    layout: str
    sources: tuple[str, ...]
    hf_repo: str


PUBLISHED: dict[str, PublishedWeights] = {
    "lvmmed-resnet50": PublishedWeights(
        "lvmmed_resnet.torch", "resnet50", "torchvision-resnet",
        ("LVM-Med README (github.com/duyhominhnguyen/LVM-Med), Google Drive link 'lvmmed_resnet.torch'",
         "Hugging Face mirror ngctnnnn/lvmmed_rn50 (file layout not verified)"),
        "ngctnnnn/lvmmed_rn50",
    ),
    "lvmmed-vitb": PublishedWeights(
        "lvmmed_vit.pth", "sam_vit_b", "sam-vit",
        ("LVM-Med README (github.com/duyhominhnguyen/LVM-Med), Google Drive link 'lvmmed_vit.pth'",
         "Hugging Face mirror ngctnnnn/lvmmed_vit (file layout not verified)"),
        "ngctnnnn/lvmmed_vit",
    ),
}  # fmt: skip
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


def weights_dirs() -> list[Path]:
    """Where published files are looked up: ``$LVMMED_WEIGHTS_DIR``, then ``~/.cache/lvmmed/weights``."""
    dirs = [Path(os.environ["LVMMED_WEIGHTS_DIR"])] if os.environ.get("LVMMED_WEIGHTS_DIR") else []
    return [*dirs, Path.home() / ".cache" / "lvmmed" / "weights"]


def _missing_published(key: str) -> WeightsNotFoundError:
    pub = PUBLISHED[key]
    where = ", ".join(str(d / pub.filename) for d in weights_dirs())
    sources = "\n".join(f"  - {s}" for s in pub.sources)
    return WeightsNotFoundError(
        f"'{key}' needs the file {pub.filename} ({pub.architecture}, {pub.layout} keys); not found at {where}.\n"
        f"Known public sources (licence CC BY-NC-ND, research use):\n{sources}\n"
        f"Put the file in $LVMMED_WEIGHTS_DIR or ~/.cache/lvmmed/weights, or pass '{key}=/path/{pub.filename}'. "
        "Nothing is downloaded unless allow_network=True (or LVMMED_ALLOW_DOWNLOAD=1)."
    )


def _download_published(key: str) -> Path:
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in HF_FILENAMES:
        try:
            return Path(hf_hub_download(PUBLISHED[key].hf_repo, filename))
        except Exception as err:
            errors.append(f"{filename}: {type(err).__name__}: {err}")
    raise WeightsNotFoundError(f"download of '{key}' failed:\n  " + "\n  ".join(errors))


def _hf_file(source: str, allow_network: bool) -> Path:
    parts = source.removeprefix("hf://").split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise WeightsNotFoundError(f"'{source}': expected hf://owner/repo/filename")
    from huggingface_hub import hf_hub_download

    repo, filename = f"{parts[0]}/{parts[1]}", parts[2]
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=not allow_network))
    except Exception as err:
        hint = "" if allow_network else " It is not in the local Hugging Face cache and downloads are off."
        raise WeightsNotFoundError(
            f"'{source}' is not available.{hint} Download it once with allow_network=True "
            f"(or LVMMED_ALLOW_DOWNLOAD=1), or give a local file. Detail: {type(err).__name__}: {err}"
        ) from err


@dataclass
class ResolvedSource:
    """A weight source turned into a file or export dir, plus what it implies."""

    path: Path
    kind: str  # export | published | torchvision | timm | file
    architecture: str | None = None
    config: dict | None = None


def resolve_source(source: str | os.PathLike, allow_network: bool = False) -> ResolvedSource:
    """Maps a source string to a local path (see the module docstring). Raises :class:`WeightsNotFoundError`."""
    text = os.fspath(source)
    allow_network = allow_network or os.environ.get("LVMMED_ALLOW_DOWNLOAD") == "1"
    key, _, explicit = text.partition("=")
    if key in PUBLISHED:
        pub = PUBLISHED[key]
        if explicit:
            return ResolvedSource(_existing(Path(explicit).expanduser(), key), "published", pub.architecture)
        for folder in weights_dirs():
            if (folder / pub.filename).is_file():
                return ResolvedSource(folder / pub.filename, "published", pub.architecture)
        if allow_network:
            return ResolvedSource(_download_published(key), "published", pub.architecture)
        raise _missing_published(key)
    if text.startswith("hf://"):
        return ResolvedSource(_hf_file(text, allow_network), "file")
    kind, sep, rest = text.partition(":")
    if sep and kind in ("torchvision", "timm"):
        return ResolvedSource(_existing(Path(rest).expanduser(), text), kind)
    path = _existing(Path(text).expanduser(), text)
    if path.is_dir():
        config_path = path / CONFIG_NAME
        if not config_path.is_file() or not (path / WEIGHTS_NAME).is_file():
            raise WeightsNotFoundError(f"{path} is not an lvmmed export: it needs {CONFIG_NAME} and {WEIGHTS_NAME}")
        config = json.loads(config_path.read_text())
        return ResolvedSource(path, "export", config.get("architecture"), config)
    return ResolvedSource(path, "file")


def export_normalisation(source: str | os.PathLike) -> tuple[float, float] | None:
    """The input normalisation ``(mean, std)`` an lvmmed export was trained with, from its ``config.json``.

    Returns None for other sources (random init, published or general weights), or when the export does not
    record ``input_mean``/``input_std``. Per-channel values are averaged (grey inputs are replicated channels).
    """
    text = os.fspath(source)
    if text in ("", "random", "none") or not Path(text).expanduser().is_dir():
        return None
    config_path = Path(text).expanduser() / CONFIG_NAME
    if not config_path.is_file():
        return None
    config = json.loads(config_path.read_text())
    if "input_mean" not in config or "input_std" not in config:
        return None
    mean, std = (
        float(sum(v) / len(v)) if isinstance(v, list) else float(v) for v in (config["input_mean"], config["input_std"])
    )
    return mean, std


def _existing(path: Path, source: str) -> Path:
    if not path.exists():
        known = ", ".join(PUBLISHED)
        raise WeightsNotFoundError(
            f"weight source '{source}': {path} does not exist. Give an existing file or export dir, "
            f"'torchvision:/file', 'timm:/file', or a published name ({known})."
        )
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads tensors safely: safetensors, or ``torch.load(weights_only=True)``; export dirs read their weights."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsNotFoundError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightLoadError(
            f"refused to load {path}: it holds Python objects besides tensors, and loading uses "
            f"weights_only=True so no pickle code runs. Re-save only the state dict (torch.save(model.state_dict())) "
            f"or convert it where it was made. Detail: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightLoadError(f"cannot read {path} (truncated or not a torch file): {err}") from err
    return unwrap_checkpoint(obj)


def load_pretrained(
    model: Backbone, source: str | os.PathLike, allow_network: bool = False, strict: bool = True
) -> LoadReport:
    """Loads a weight source into ``model`` with the strict key check; returns the :class:`LoadReport`."""
    resolved = resolve_source(source, allow_network)
    if resolved.architecture and resolved.architecture != model.name:
        raise WeightLoadError(
            f"weight source '{source}' holds a {resolved.architecture}, but the backbone is '{model.name}'. "
            f"Use create_backbone('{resolved.architecture}', ...) or lvmmed.weights.load_backbone('{source}')."
        )
    state = read_state_dict(resolved.path)
    return load_checked(model, state, source=os.fspath(source), strict=strict)


def save_pretrained(backbone: Backbone, out_dir: str | os.PathLike, extra_config: dict | None = None) -> Path:
    """Writes ``model.safetensors`` + ``config.json`` atomically (temp dir in the same parent, then rename).

    ``config.json`` holds ``architecture``, ``in_chans``, ``img_size``, ``feature_dim``, ``lvmmed_version`` and
    ``extra_config`` (JSON-serialisable; it may not override those keys).
    """
    from lvmmed import __version__

    extra = dict(extra_config or {})
    clash = sorted(set(extra) & set(CORE_CONFIG_KEYS))
    if clash:
        raise ValueError(f"extra_config may not override {clash}")
    config = {**backbone.config(), "feature_dim": backbone.feature_dim, "lvmmed_version": __version__, **extra}
    text = json.dumps(config, indent=2, sort_keys=True)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in backbone.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "architecture": config["architecture"]})
        (tmp / CONFIG_NAME).write_text(text + "\n")
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


def load_backbone(
    source: str | os.PathLike,
    name: str | None = None,
    in_chans: int | None = None,
    img_size: int | None = None,
    allow_network: bool = False,
) -> Backbone:
    """Builds and loads a backbone from a source, reading the architecture from it where possible.

    Export dirs give everything through ``config.json``; published names imply their architecture; plain files are
    recognised from their keys and shapes (``in_chans`` from the stem, ``img_size`` from position tables, else 224).
    Explicit arguments win (``in_chans=1`` on a 3-channel file sums the stem).
    """
    from lvmmed.models.factory import build_and_load

    resolved = resolve_source(source, allow_network)
    layout = None
    if resolved.config is not None:
        arch = resolved.config["architecture"]
        if name is not None and name != arch:
            raise WeightLoadError(f"export {resolved.path} holds a {arch}, not a {name}")
        in_chans = in_chans or resolved.config.get("in_chans", 3)
        img_size = img_size or resolved.config.get("img_size", 224)
    else:
        state, _, _ = strip_prefixes(read_state_dict(resolved.path))
        layout = detect_layout(state)
        arch = name or resolved.architecture or layout.architecture
        if arch is None:
            raise WeightLoadError(f"cannot tell the architecture of {source} (layout {layout.kind}); pass name=...")
        in_chans = in_chans or layout.in_chans or 3
        img_size = img_size or layout.img_size or 224
    return build_and_load(arch, in_chans, img_size, os.fspath(source), allow_network)


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
    """``python -m lvmmed.weights inspect FILE`` | ``convert FILE --to safetensors [--out F]``."""
    parser = argparse.ArgumentParser(prog="python -m lvmmed.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("inspect", help="print layout, parameter count and key summary").add_argument("file")
    conv = sub.add_parser("convert", help="convert a checkpoint to safetensors")
    conv.add_argument("file")
    conv.add_argument("--to", default="safetensors", choices=["safetensors"])
    conv.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            info = inspect_file(args.file)
            print(json.dumps(info, indent=2))
        else:
            print(f"wrote {convert_file(args.file, args.to, args.out)}")
    except (WeightsNotFoundError, WeightLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
