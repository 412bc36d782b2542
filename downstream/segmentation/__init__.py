"""Downstream segmentation: ``seg-unet``, ``seg-prompt-shallow``/``-deep`` (new-center protocol), ``mask-guided``.

Importing this package registers the methods in :mod:`downstream.registry` (task family ``"segmentation"``).
Entry point: :func:`downstream.segmentation.run.run_segmentation`; CLI ``python -m downstream.segmentation``.
See docs/segmentation.md.
"""

from downstream.segmentation import mask_guided, prompt_segmenter, unet  # noqa: F401  (registration)
from downstream.segmentation.config import SegmentationConfig

__all__ = ["SegmentationConfig", "run_segmentation"]


def run_segmentation(cfg: SegmentationConfig) -> dict:
    """See :func:`downstream.segmentation.run.run_segmentation`."""
    from downstream.segmentation.run import run_segmentation as _run

    return _run(cfg)
