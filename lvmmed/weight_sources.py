"""Weight sources and safe reading: where a weight source lives, how its tensors are read, and loading into a backbone.

The reading half of :mod:`lvmmed.weights` (which adds exports, conversion and the CLI). It depends only on
:mod:`lvmmed.models.base` and :mod:`lvmmed.models.state_dict`, so :mod:`lvmmed.models.factory` can import it at
the top and :mod:`lvmmed.weights` can import the factory: no import circle.

Every file is read with safetensors or ``torch.load(weights_only=True)``: pickles holding other objects are refused
and no pickle code runs. Anything that is not a readable weight file (text, zero bytes, truncated) raises
:class:`WeightLoadError` naming the file and what was wrong, never a bare decoder exception.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from lvmmed.models.base import Backbone
from lvmmed.models.state_dict import LoadReport, WeightLoadError, load_checked, nonfinite_tensors, unwrap_checkpoint

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
CORE_CONFIG_KEYS = ("architecture", "in_chans", "img_size", "feature_dim", "lvmmed_version")


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is missing; the message says which file and where to get it."""


@dataclass(frozen=True)
class PublishedWeights:
    """A published LVM-Med checkpoint (listed in the LVM-Med README, https://github.com/duyhominhnguyen/LVM-Med)."""

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
# ImageNet statistics on [0, 1] inputs: what torchvision/timm weights expect, and SAM's pixel_mean/pixel_std
# ([123.675, 116.28, 103.53] / [58.395, 57.12, 57.375] on 0-255; Kirillov et al., "Segment Anything", 2023).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PUBLISHED_IMG_SIZE = {"lvmmed-resnet50": 224, "lvmmed-vitb": 1024}


@dataclass(frozen=True)
class InputSettings:
    """What a weight source expects as input: channels, square size and per-channel normalisation of [0, 1] images.

    ``None`` fields are unknown (the caller decides); ``origin`` says where the values come from.
    """

    in_chans: int | None = None
    img_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    origin: str = ""

    def as_dict(self) -> dict:
        return {"in_chans": self.in_chans, "img_size": self.img_size, "mean": list(self.mean or []) or None,
                "std": list(self.std or []) or None, "origin": self.origin}  # fmt: skip


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


def input_settings(source: str | os.PathLike | ResolvedSource, allow_network: bool = False) -> InputSettings:
    """The input a weight source was trained on (downstream's ``norm_from_weights`` rules, :mod:`downstream.inputs`).

    An lvmmed export: ``in_chans``, ``img_size``, ``input_mean``/``input_std`` of its ``config.json``. The published
    LVM-Med files: 3 channels, ImageNet statistics, 224 px (ResNet-50) or 1024 px (ViT-B). ``torchvision:``/``timm:``
    files and other files of a recognised layout: 3 channels and ImageNet statistics (the convention of those
    libraries; ``origin`` says it is assumed), the stem's channel count where the file shows it.
    """
    resolved = source if isinstance(source, ResolvedSource) else resolve_source(source, allow_network)
    if resolved.config is not None:
        config = resolved.config
        mean, std = _floats(config.get("input_mean")), _floats(config.get("input_std"))
        origin = str(resolved.path / CONFIG_NAME)
        return InputSettings(config.get("in_chans"), config.get("img_size"), mean, std, origin)
    if resolved.kind == "published":
        key = next(k for k, p in PUBLISHED.items() if p.architecture == resolved.architecture)
        return InputSettings(3, PUBLISHED_IMG_SIZE[key], IMAGENET_MEAN, IMAGENET_STD, f"published {key}")
    if resolved.kind in ("torchvision", "timm"):
        return InputSettings(3, None, IMAGENET_MEAN, IMAGENET_STD, f"{resolved.kind} convention (ImageNet)")
    return InputSettings(None, None, IMAGENET_MEAN, IMAGENET_STD, "assumed ImageNet statistics (plain weight file)")


def _floats(value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    return tuple(float(v) for v in (value if isinstance(value, list | tuple) else [value]))


def _existing(path: Path, source: str) -> Path:
    if not path.exists():
        known = ", ".join(PUBLISHED)
        raise WeightsNotFoundError(
            f"weight source '{source}': {path} does not exist. Give an existing file or export dir, "
            f"'torchvision:/file', 'timm:/file', or a published name ({known})."
        )
    return path


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with a little-endian u64 header length followed by ``{``."""
    return len(head) == 8 and 0 < int.from_bytes(head, "little") < size and not head.startswith((b"PK", b"\x80"))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads tensors safely: safetensors, or ``torch.load(weights_only=True)``; export dirs read their weights."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise WeightsNotFoundError(f"weight file {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise WeightLoadError(f"cannot read {path}: the file is empty (0 bytes); copy or download it again")
    with path.open("rb") as fh:
        head = fh.read(8)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightLoadError(
                f"cannot read {path} as safetensors (truncated, or not a safetensors file): {err}"
            ) from None
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # a torch zip archive, or a legacy pickle (protocol 2+)
        raise WeightLoadError(
            f"cannot read {path}: not a torch checkpoint (starts with {head!r}; expected a zip archive or a pickle) "
            "nor a .safetensors file"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightLoadError(
            f"refused to load {path}: it holds Python objects besides tensors, and loading uses "
            f"weights_only=True so no pickle code runs. Re-save only the state dict (torch.save(model.state_dict())) "
            f"or convert it where it was made. Detail: {str(err).splitlines()[0]}"
        ) from err
    except Exception as err:  # broad on purpose: corrupt zips/pickles raise RuntimeError, EOFError, KeyError, ...
        detail = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise WeightLoadError(f"cannot read {path} (truncated or not a torch file): {detail}") from err
    return unwrap_checkpoint(obj)


def load_pretrained(
    model: Backbone, source: str | os.PathLike, allow_network: bool = False, strict: bool = True
) -> LoadReport:
    """Loads a weight source into ``model`` with the strict key check; returns the :class:`LoadReport`."""
    resolved = resolve_source(source, allow_network)
    if resolved.architecture and resolved.architecture != model.name:
        raise WeightLoadError(
            f"weight source '{source}' holds a {resolved.architecture}, but the backbone is '{model.name}'. "
            f"On the command line give backbone={resolved.architecture}; in Python, "
            f"create_backbone('{resolved.architecture}', ...) or lvmmed.weights.load_backbone('{source}')."
        )
    state = read_state_dict(resolved.path)
    nonfinite = nonfinite_tensors(state)
    if nonfinite:
        raise WeightLoadError(
            f"weight source '{source}' holds NaN or inf values in {len(nonfinite)} tensor(s), e.g. {nonfinite[:3]}: "
            "the run that wrote it diverged or the file was damaged; use an earlier checkpoint or export"
        )
    return load_checked(model, state, source=os.fspath(source), strict=strict)
