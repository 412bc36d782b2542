"""From a weight source to a ready backbone: :func:`load_backbone` (public as ``lvmmed.weights.load_backbone``).

It reads the architecture from the source (an export's ``config.json``, a published name, or the keys and shapes of
a plain file) and builds and loads it with :func:`lvmmed.models.factory.build_and_load`. The factory, and with it
torchvision, timm and segment-anything, is imported on the first call, as :mod:`lvmmed.models` does, so that
importing :mod:`lvmmed.weights` (``python -m lvmmed.weights inspect``) stays light.
"""

from __future__ import annotations

import os

from lvmmed.models.base import Backbone
from lvmmed.models.state_dict import WeightLoadError, detect_layout, strip_prefixes
from lvmmed.weight_sources import read_state_dict, resolve_source


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
    from lvmmed.models.factory import build_and_load  # torchvision, timm and segment-anything load on first use

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
