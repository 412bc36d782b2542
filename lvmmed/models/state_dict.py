"""State-dict plumbing for :mod:`lvmmed.weights`: unwrap, strip prefixes, detect layouts, adapt, check, load.

**Prefix rule** (documented in ``docs/weights.md``). The known wrapper prefixes are ``module.`` (DDP),
``backbone.`` (SSL frameworks), ``model.`` (LVM-Med's ViT wrapper, HF ``AutoModel``) and ``encoder.``. Repeatedly:
if *every* key starts with one of them, it is stripped (so ``module.backbone.`` goes entirely). If only *some* keys
start with it (e.g. ``backbone.*`` next to ``projector.*``), the prefixed sub-tree is kept and the rest discarded
(and reported) only when the sub-tree matches more of the target model's keys than the whole dict does.

**Adaptations** (each one reported): a 3-channel stem (``conv1.weight``, ``patch_embed.proj.weight``) loads into a
1-channel model by summing over input channels, so a grey image equals the same image replicated to RGB; a 1-channel
stem loads into a 3-channel model as the weights divided by 3 on every channel; absolute position embeddings are
resized (timm ``resample_abs_pos_embed``; bicubic for SAM's (1, H, W, C) table); relative-position tables are resized
with the linear interpolation SAM's ``get_rel_pos`` applies at run time. Classifier keys of known layouts
(torchvision ``fc.*``, timm ``head.*``, torchvision-ViT ``heads.*``) are ignored and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lvmmed.models.specs import SAM_SPECS, TIMM_DIMS

PREFIXES = ("module.", "backbone.", "model.", "encoder.")
STEM_KEYS = ("conv1.weight", "patch_embed.proj.weight")
CLASSIFIER_PREFIXES = ("fc.", "head.", "heads.")
CONTAINER_KEYS = ("state_dict", "model", "module", "backbone", "encoder", "model_state_dict", "teacher", "student")


class WeightLoadError(RuntimeError):
    """A checkpoint does not fit the model or cannot be read safely; ``report`` lists the details."""

    def __init__(self, message: str, report: LoadReport | None = None) -> None:
        super().__init__(message if report is None else f"{message}\n{report}")
        self.report = report


@dataclass
class LoadReport:
    """What happened to every key while loading a checkpoint into a model."""

    source: str = ""
    layout: str = "unknown"
    stripped_prefixes: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    loaded_keys: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return len(self.loaded_keys)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        def block(title: str, items: list, limit: int = 12) -> list[str]:
            if not items:
                return []
            rows = [f"  {title} ({len(items)}):"] + [f"    {item}" for item in items[:limit]]
            return rows + ([f"    ... and {len(items) - limit} more"] if len(items) > limit else [])

        shapes = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
        lines = [f"Load report for {self.source or '<state dict>'} (layout: {self.layout}, {self.loaded} loaded)"]
        if self.stripped_prefixes:
            lines.append(f"  stripped prefixes: {' then '.join(self.stripped_prefixes)}")
        lines += block("missing in checkpoint", self.missing)
        lines += block("unexpected in checkpoint", self.unexpected)
        lines += block("shape mismatch", shapes)
        lines += block("adapted", self.adapted)
        lines += block("ignored classifier keys", self.ignored, 4)
        lines += block("discarded outside the kept prefix", self.discarded, 4)
        return "\n".join(lines)


def nonfinite_tensors(state: Mapping[str, object]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]


def unwrap_checkpoint(obj: object) -> dict[str, torch.Tensor]:
    """Returns the tensor dict of a checkpoint (``{"state_dict": ...}``-style containers are opened)."""
    for _ in range(4):
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if not isinstance(obj, Mapping):
            raise WeightLoadError(f"checkpoint is a {type(obj).__name__}, not a state dict")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping | nn.Module)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
            raise WeightLoadError(f"no tensors found; top-level keys: {sorted(map(str, obj))[:10]}")
        obj = inner
    raise WeightLoadError("checkpoint nesting too deep")


def strip_prefixes(
    state: dict[str, torch.Tensor], model_keys: set[str] | None = None
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Applies the prefix rule; returns (state, stripped prefixes in order, discarded keys)."""
    stripped: list[str] = []
    discarded: list[str] = []
    changed = True
    while changed and state:
        changed = False
        for prefix in PREFIXES:
            inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not inside:
                continue
            if len(inside) == len(state):
                state, changed = inside, True
            elif model_keys is not None and len(inside.keys() & model_keys) > len(state.keys() & model_keys):
                discarded += [k for k in state if not k.startswith(prefix)]
                state, changed = inside, True
            if changed:
                stripped.append(prefix)
                break
    return state, stripped, discarded


@dataclass
class Layout:
    """A recognised key layout and the architecture hints read from tensor shapes."""

    kind: str  # torchvision-resnet | timm-vit | torchvision-vit | sam-vit | unknown
    architecture: str | None = None
    in_chans: int | None = None
    img_size: int | None = None
    notes: str = ""


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def detect_layout(state: Mapping[str, torch.Tensor]) -> Layout:
    """Recognises torchvision ResNets, timm ViTs, torchvision ViTs and SAM image encoders from key names."""
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        bottleneck = "layer1.0.conv3.weight" in state
        depths = tuple(_count(state, f"layer{i}.") for i in range(1, 5))
        names = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50"}
        return Layout(
            "torchvision-resnet", names.get((bottleneck, depths)), state["conv1.weight"].shape[1], None,
            f"{'bottleneck' if bottleneck else 'basic'} blocks {depths}",
        )  # fmt: skip
    if "blocks.0.attn.rel_pos_h" in state and "patch_embed.proj.weight" in state:
        width, depth = state["patch_embed.proj.weight"].shape[0], _count(state, "blocks.")
        arch = next((n for n, s in SAM_SPECS.items() if (s.embed_dim, s.depth) == (width, depth)), None)
        lengths = [state[f"blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
        global_blocks = [i for i, n in enumerate(lengths) if n != min(lengths)] or list(range(depth))
        img = (max(lengths) + 1) // 2 * state["patch_embed.proj.weight"].shape[-1]
        abs_pos = "with abs pos" if "pos_embed" in state else "no abs pos (LVM-Med layout)"
        notes = f"width {width}, depth {depth}, global blocks {global_blocks}, {abs_pos}"
        return Layout("sam-vit", arch, state["patch_embed.proj.weight"].shape[1], img, notes)
    if "cls_token" in state and "blocks.0.attn.qkv.weight" in state:
        width, depth = state["cls_token"].shape[-1], _count(state, "blocks.")
        arch = next((n for n, d in TIMM_DIMS.items() if d == (width, depth)), None)
        patch = state["patch_embed.proj.weight"].shape[-1]
        grid = round((state["pos_embed"].shape[1] - 1) ** 0.5) if "pos_embed" in state else None
        img = grid * patch if grid else None
        chans = state["patch_embed.proj.weight"].shape[1]
        return Layout("timm-vit", arch, chans, img, f"width {width}, depth {depth}, patch {patch}")
    if "conv_proj.weight" in state and "encoder.pos_embedding" in state:
        width, depth = state["class_token"].shape[-1], _count(state, "encoder.layers.")
        arch = {(768, 12): "vit_base"}.get((width, depth))
        grid = round((state["encoder.pos_embedding"].shape[1] - 1) ** 0.5)
        img = grid * state["conv_proj.weight"].shape[-1]
        chans = state["conv_proj.weight"].shape[1]
        return Layout("torchvision-vit", arch, chans, img, "converted to timm keys on load")
    return Layout("unknown")


def torchvision_vit_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames torchvision ``VisionTransformer`` keys to timm ``VisionTransformer`` keys (same math)."""
    renames = [
        ("encoder.layers.encoder_layer_", "blocks."), ("conv_proj.", "patch_embed.proj."), (".ln_1.", ".norm1."),
        (".ln_2.", ".norm2."), (".self_attention.in_proj_weight", ".attn.qkv.weight"),
        (".self_attention.in_proj_bias", ".attn.qkv.bias"), (".self_attention.out_proj.", ".attn.proj."),
        (".mlp.0.", ".mlp.fc1."), (".mlp.3.", ".mlp.fc2."), ("encoder.ln.", "norm."), ("heads.head.", "head."),
    ]  # fmt: skip
    out = {}
    for key, value in state.items():
        if key == "class_token":
            key = "cls_token"
        elif key == "encoder.pos_embedding":
            key = "pos_embed"
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    resized = F.interpolate(table.float().reshape(1, table.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
    return resized.reshape(-1, length).permute(1, 0).to(table.dtype)


def _resize_pos_embed(table: torch.Tensor, target: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    if table.dim() == 4:  # SAM: (1, H, W, C)
        grid = F.interpolate(table.float().permute(0, 3, 1, 2), size=target.shape[1:3], mode="bicubic")
        return grid.permute(0, 2, 3, 1).to(table.dtype)
    from timm.layers import resample_abs_pos_embed

    side = round((target.shape[1] - num_prefix_tokens) ** 0.5)
    return resample_abs_pos_embed(table, [side, side], num_prefix_tokens=num_prefix_tokens)


def adapt_state_dict(state: dict[str, torch.Tensor], model: nn.Module, report: LoadReport) -> dict[str, torch.Tensor]:
    """Adapts stems, position tables and classifier keys to ``model`` (see the module docstring)."""
    target = model.state_dict()
    out = {}
    for key, value in state.items():
        if key not in target and key.startswith(CLASSIFIER_PREFIXES):
            report.ignored.append(key)
            continue
        want = target.get(key)
        if want is None or want.shape == value.shape:
            out[key] = value
            continue
        src, dst = tuple(value.shape), tuple(want.shape)
        if key in STEM_KEYS and value.dim() == 4 and src[0] == dst[0] and src[2:] == dst[2:]:
            if src[1] == 3 and dst[1] == 1:
                value, how = value.sum(dim=1, keepdim=True), "summed over 3 input channels"
            elif src[1] == 1 and dst[1] == 3:
                value, how = value.repeat(1, 3, 1, 1) / 3, "replicated to 3 channels / 3"
        elif key.endswith(("rel_pos_h", "rel_pos_w")) and value.dim() == 2 and src[1] == dst[1]:
            value, how = _resize_rel_pos(value, dst[0]), "rel-pos resized (linear)"
        elif key == "pos_embed" and value.dim() == want.dim() and src[-1] == dst[-1]:
            value = _resize_pos_embed(value, want, getattr(model, "num_prefix_tokens", 0))
            how = "abs pos resized"
        if tuple(value.shape) == dst:
            report.adapted.append(f"{key}: {how} {list(src)} -> {list(dst)}")
        out[key] = value
    return out


def load_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "", strict: bool = True
) -> LoadReport:
    """Prefix rule, layout detection, adaptation, strict key check, load. Raises :class:`WeightLoadError`."""
    target = model.state_dict()
    state, stripped, discarded = strip_prefixes(dict(state), set(target))
    layout = detect_layout(state)
    if layout.kind == "torchvision-vit":
        state = torchvision_vit_to_timm(state)
    report = LoadReport(source, layout.kind, stripped, discarded)
    state = adapt_state_dict(state, model, report)
    report.missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    report.unexpected = [k for k in state if k not in target]
    report.mismatched = [
        (k, tuple(v.shape), tuple(target[k].shape))
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    if strict and not report.ok:
        raise WeightLoadError(f"checkpoint does not fit {type(model).__name__} '{getattr(model, 'name', '')}'", report)
    loadable = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(loadable, strict=False)
    report.loaded_keys = list(loadable)
    return report
