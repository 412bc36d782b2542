"""Generated Markdown blocks: replaced between markers, the rest untouched, bad markers refused."""

from __future__ import annotations

import pytest

from lvmmed.markers import MarkerError, read_block, write_block


def test_write_block_replaces_only_between_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# T\nkeep\n<!-- x:start -->\nold\n<!-- x:end -->\ntail\n")
    assert write_block(page, "x", "new line 1\nnew line 2\n") is True
    assert page.read_text() == "# T\nkeep\n<!-- x:start -->\nnew line 1\nnew line 2\n<!-- x:end -->\ntail\n"
    assert read_block(page, "x") == "new line 1\nnew line 2"
    assert write_block(page, "x", "new line 1\nnew line 2") is False


@pytest.mark.parametrize(
    "text",
    ["no markers\n", "<!-- x:start -->\n<!-- x:start -->\n<!-- x:end -->\n", "<!-- x:end -->\n<!-- x:start -->\n"],
)
def test_bad_markers_are_refused(tmp_path, text):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(MarkerError):
        write_block(page, "x", "body")
    assert page.read_text() == text
