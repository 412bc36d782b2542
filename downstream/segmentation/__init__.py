"""Downstream segmentation: ``seg-unet``, ``seg-prompt-shallow``/``-deep`` (new-center protocol), ``mask-guided``.

The methods are in the segmentation table of :mod:`downstream.registry` (task family ``"segmentation"``).
Entry point: :func:`downstream.segmentation.run.run_segmentation` with a
:class:`downstream.segmentation.config.SegmentationConfig`; CLI ``python -m downstream.segmentation``.
See docs/segmentation.md.
"""
