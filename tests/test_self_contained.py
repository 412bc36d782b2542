"""The project stands on its own: code and docs cite papers, public URLs and files inside this repository only.

Flags references to notes that are not part of the repository (``style.md``, ``lvmmed.md §1.2``, ``shared/...``),
to issue numbers, and to ``docs/*.md`` pages that do not exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "runs", "results", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt"}
# Note files that once lived next to the repository; a bare mention of one points outside it.
OUTSIDE_NOTES = ("style", "lvmmed", "design", "data", "env", "downstream")
RULES = [
    (re.compile(r"shared/reference|\.\./shared\b|/work/shared"), "path outside the repository"),
    (re.compile(r"(?<![\w/.-])(?<!\]\()(?:" + "|".join(OUTSIDE_NOTES) + r")\.md\b"), "note outside the repository"),
    (re.compile(r"\.md`?\s*§"), "section of a Markdown note"),
    (re.compile(r"\bissues?\s*#?\d+\b", re.IGNORECASE), "issue number"),
    (re.compile(r"\b(?:research|reference) notes\b", re.IGNORECASE), "reference notes"),
]
REPO_PATH = re.compile(r"(?<![\w/.<>-])((?:docs|bench)/[\w.-]+\.md)\b")


def offending_lines(text: str, exists=lambda rel: (REPO / rel).is_file()) -> list[tuple[int, str]]:
    """``(line, reason)`` for every reference to a file outside the repository in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        found += [(number, reason) for pattern, reason in RULES if pattern.search(line)]
        found += [(number, f"missing file {m}") for m in REPO_PATH.findall(line) if not exists(m)]
    return found


def scanned_files() -> list[Path]:
    files = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        files += [Path(root, n) for n in names if Path(n).suffix in SUFFIXES or n == "Makefile"]
    return sorted(f for f in files if f.resolve() != Path(__file__).resolve())


def test_detector_flags_each_kind_of_outside_reference():
    text = "\n".join(
        [
            "ok: Nguyen et al., arXiv:2306.11925, https://github.com/duyhominhnguyen/LVM-Med, pydicom#340",
            "ok: see [docs/pretrain.md](docs/pretrain.md), the [methods](downstream.md) table, runs/x/report.md",
            "ok: Saeed et al. 2023 §2.1",
            "bad: see shared/reference/data.md",
            "bad: (style.md 'PHI')",
            "bad: (see downstream.md)",
            "bad: keys as in downstream.md §9",
            "bad: Targets (issue 3): fast",
            "bad: see docs/no_such_page.md",
            "bad: per the research notes",
        ]
    )
    flagged = sorted({n for n, _ in offending_lines(text, exists=lambda rel: rel == "docs/pretrain.md")})
    assert flagged == [4, 5, 6, 7, 8, 9, 10]


def test_no_reference_to_a_file_outside_the_repository():
    files = scanned_files()
    assert any(f.name == "README.md" for f in files) and any(f.suffix == ".py" for f in files)
    hits = [
        f"{path.relative_to(REPO)}:{n}: {reason}"
        for path in files
        for n, reason in offending_lines(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not hits, "references outside the repository:\n" + "\n".join(hits)
