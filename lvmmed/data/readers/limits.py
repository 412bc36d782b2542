"""Decode limits: refuse an image whose *declared* size is implausible before any pixel memory is allocated.

A compressed file can declare far more pixels than it holds: an RLE DICOM of a few kilobytes may declare
60000 x 60000 pixels, and decoding it allocates the declared size first (a "decompression bomb"). Every reader
checks the header against these limits before decoding and raises :class:`~lvmmed.data.readers.record.ReaderError`
naming the limit, which ``data_prep`` records as a per-file failure.

Defaults (chosen to pass every medical image we know of with a wide margin, and to stop bombs early):

* ``max_pixels_per_frame = 100_000_000`` (10^8, e.g. 10000 x 10000; Pillow's own default warns at ~8.9e7 and
  refuses at twice that — https://pillow.readthedocs.io/en/stable/reference/Image.html#PIL.Image.open);
* ``max_frames = 10_000`` (frames of one DICOM object, or slices of one volume);
* ``max_bytes = 4 GiB`` (the decoded size of one object: pixels x frames x samples x bytes per sample).

Change them per call (``decode_file(path, limits=DecodeLimits(...))``) or for a whole process, including
``data_prep``'s worker processes, with the environment variables ``LVMMED_MAX_PIXELS_PER_FRAME``,
``LVMMED_MAX_FRAMES`` and ``LVMMED_MAX_DECODED_BYTES``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lvmmed.data.readers.record import ReaderError

ENV_NAMES = {
    "max_pixels_per_frame": "LVMMED_MAX_PIXELS_PER_FRAME",
    "max_frames": "LVMMED_MAX_FRAMES",
    "max_bytes": "LVMMED_MAX_DECODED_BYTES",
}


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds on what one image object may declare (see the module docstring for the defaults)."""

    max_pixels_per_frame: int = 100_000_000
    max_frames: int = 10_000
    max_bytes: int = 4 * 2**30

    @classmethod
    def from_env(cls) -> DecodeLimits:
        """The defaults, overridden by ``LVMMED_MAX_PIXELS_PER_FRAME`` / ``_FRAMES`` / ``_DECODED_BYTES``."""
        values = {}
        for key, env in ENV_NAMES.items():
            text = os.environ.get(env)
            if text:
                try:
                    values[key] = int(float(text))
                except ValueError:
                    raise ValueError(f"{env}={text!r} is not a number") from None
        return cls(**values)

    def check(self, path: str | Path, rows: int, cols: int, frames: int = 1, bytes_per_pixel: int = 1) -> None:
        """Raises :class:`ReaderError` naming the exceeded limit when the declared size is over a limit."""
        pixels = int(rows) * int(cols)
        if rows <= 0 or cols <= 0 or frames <= 0:
            raise ReaderError(path, f"declares an empty image ({rows} x {cols} pixels, {frames} frames)")
        if pixels > self.max_pixels_per_frame:
            raise ReaderError(
                path,
                f"declares {rows} x {cols} = {pixels:,} pixels per frame, over the decode limit max_pixels_per_frame="
                f"{self.max_pixels_per_frame:,} ({ENV_NAMES['max_pixels_per_frame']}); refused before decoding",
            )
        if frames > self.max_frames:
            raise ReaderError(
                path,
                f"declares {frames:,} frames, over the decode limit max_frames={self.max_frames:,} "
                f"({ENV_NAMES['max_frames']}); refused before decoding",
            )
        total = pixels * int(frames) * int(bytes_per_pixel)
        if total > self.max_bytes:
            raise ReaderError(
                path,
                f"would decode to {total / 2**30:.2f} GiB ({rows} x {cols} x {frames} frames x {bytes_per_pixel} "
                f"bytes), over the decode limit max_bytes={self.max_bytes / 2**30:.2f} GiB "
                f"({ENV_NAMES['max_bytes']}); refused before decoding",
            )


def resolve_limits(limits: DecodeLimits | None) -> DecodeLimits:
    """``limits`` or, when None, the process-wide defaults (:meth:`DecodeLimits.from_env`)."""
    return limits if limits is not None else DecodeLimits.from_env()
