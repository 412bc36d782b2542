"""Atomic, prunable, exactly-resumable checkpoints around ``accelerator.save_state``.

Layout: ``<output_dir>/checkpoints/checkpoint_<step:08d>/`` holding Accelerate's state (``model.safetensors``,
``optimizer.bin``, ``random_states_<rank>.pkl`` with python/numpy/torch RNG, scaler) plus ``config.yaml`` and
``trainer_state.json`` (step, counters and every rank's data position).

Write protocol (timm ``CheckpointSaver`` style): everything goes into ``checkpoint_<step>.tmp/``, every file and the
directory are fsync'ed, the directory is renamed to its final name (atomic on POSIX), the parent is fsync'ed, and
only then are old checkpoints pruned. Accelerate's own ``save_state(total_limit=...)`` deletes old checkpoints
*before* writing the new one; we never use that path. A crash at any point leaves either the previous complete
checkpoints untouched or a ``.tmp`` directory that ``find_latest`` ignores and the next save removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

STATE_NAME = "trainer_state.json"
_NAME = re.compile(r"^checkpoint_(\d{8})$")


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsyncs every file below ``root`` and the directories themselves."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def write_trainer_state(directory: Path, state: dict[str, Any], config_yaml: str) -> None:
    """Writes ``config.yaml`` and ``trainer_state.json`` (the completeness marker) into a checkpoint directory."""
    (directory / "config.yaml").write_text(config_yaml)
    (directory / STATE_NAME).write_text(json.dumps({**state, "complete": True}, indent=1))


def read_trainer_state(directory: str | Path) -> dict[str, Any] | None:
    """The trainer state of a complete checkpoint, or None if it is missing, partial or unreadable."""
    file = Path(directory) / STATE_NAME
    try:
        state = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return state if state.get("complete") is True else None


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (``.tmp`` and marker-less directories are ignored)."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and read_trainer_state(p) is not None]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def find_latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """``auto`` -> newest complete checkpoint or None; ``never`` -> None; otherwise a checkpoint directory."""
    if resume == "never":
        return None
    if resume == "auto":
        return find_latest(output_dir)
    path = Path(resume)
    if read_trainer_state(path) is None:
        raise FileNotFoundError(f"resume={resume}: not a complete checkpoint (no {STATE_NAME} marked complete)")
    return path


def prune(output_dir: str | Path, keep: int) -> list[Path]:
    """Deletes all but the newest ``keep`` complete checkpoints, and stale ``.tmp``/``.old`` directories."""
    root = checkpoints_root(output_dir)
    removed = complete_checkpoints(output_dir)[:-keep] if keep > 0 else []
    removed += [p for p in [*root.glob("checkpoint_*.tmp"), *root.glob("checkpoint_*.old")] if p.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, step: int, state: dict[str, Any], config_yaml: str, keep: int
) -> Path:
    """Saves a complete checkpoint atomically (see the module docstring). All ranks must call it."""
    root = checkpoints_root(output_dir)
    final = root / f"checkpoint_{step:08d}"
    tmp = root / f"{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_trainer_state(tmp, state, config_yaml)
        fsync_tree(tmp)
        old = root / f"{final.name}.old"
        if final.exists():  # re-saving a step (e.g. after resuming a finished run): keep it until replaced
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        _fsync_path(root)
        shutil.rmtree(old, ignore_errors=True)
        prune(output_dir, keep)
    accelerator.wait_for_everyone()
    return final
