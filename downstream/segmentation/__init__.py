"""Downstream segmentation: ``seg-unet``, ``seg-prompt-shallow``/``-deep`` (new-center protocol), ``mask-guided``.

The methods are entries of the one method registry, :data:`downstream.registry.METHODS` (task ``"segmentation"``).
Entry point: :func:`downstream.segmentation.run.run_segmentation` with a
:class:`downstream.segmentation.config.SegmentationConfig`; CLI ``python -m downstream`` (the one CLI of both task
families). See docs/segmentation.md.
"""
