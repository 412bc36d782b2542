"""Generated blocks in Markdown files: figures in docs are written by code from result files, never by hand.

A generated block sits between two HTML comments that Markdown renders invisibly::

    <!-- demo-excerpt:start -->
    ... written by code ...
    <!-- demo-excerpt:end -->

:func:`write_block` replaces what lies between the markers and leaves the rest of the file untouched, so a
hand-written page can quote a table that a benchmark or report regenerates. The file is replaced atomically.

Example:
    >>> import tempfile, pathlib
    >>> page = pathlib.Path(tempfile.mkdtemp()) / "page.md"
    >>> _ = page.write_text("intro\\n<!-- t:start -->\\nold\\n<!-- t:end -->\\noutro\\n")
    >>> write_block(page, "t", "| a |\\n|---|\\n| 1 |")
    True
    >>> read_block(page, "t")
    '| a |\\n|---|\\n| 1 |'
"""

from __future__ import annotations

import os
import re
from pathlib import Path


class MarkerError(ValueError):
    """The start/end markers of a generated block are missing, duplicated or out of order."""


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise MarkerError(f"block name {name!r} may hold only letters, digits, '_', '.' and '-'")
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _span(text: str, name: str, path: Path) -> tuple[int, int]:
    start, end = _markers(name)
    if text.count(start) != 1 or text.count(end) != 1:
        raise MarkerError(f"{path}: expected exactly one {start!r} and one {end!r} (add them where the block goes)")
    i, j = text.index(start) + len(start), text.index(end)
    if j < i:
        raise MarkerError(f"{path}: {end!r} comes before {start!r}")
    return i, j


def read_block(path: str | os.PathLike[str], name: str) -> str:
    """Returns the generated text between the markers of block ``name`` (without surrounding newlines)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    i, j = _span(text, name, path)
    return text[i:j].strip("\n")


def write_block(path: str | os.PathLike[str], name: str, body: str) -> bool:
    """Replaces the text between the markers of block ``name`` in ``path`` with ``body``.

    Args:
        path: Markdown file that already holds the two markers.
        name: Block name (``demo-excerpt`` → ``<!-- demo-excerpt:start -->`` … ``<!-- demo-excerpt:end -->``).
        body: New content (Markdown); surrounding newlines are normalised.

    Returns:
        True when the file changed, False when it already held ``body``.

    Raises:
        MarkerError: The markers are missing, duplicated or out of order.
        OSError: The file cannot be read or replaced.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    i, j = _span(text, name, path)
    new = text[:i] + "\n" + body.strip("\n") + "\n" + text[j:]
    if new == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    return True
