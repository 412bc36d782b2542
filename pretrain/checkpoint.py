"""Atomic, prunable, exactly-resumable checkpoints around ``accelerator.save_state``.

Layout: ``<output_dir>/checkpoints/checkpoint_<step:08d>/`` holding Accelerate's state (``model.safetensors``,
``optimizer.bin``, ``random_states_<rank>.pkl`` with python/numpy/torch RNG, scaler) plus ``config.yaml`` and
``trainer_state.json`` (step, counters and every rank's data position).

Write protocol (timm ``CheckpointSaver`` style): everything goes into ``checkpoint_<step>.tmp/``, every file and the
directory are fsync'ed, the directory is renamed to its final name (atomic on POSIX), the parent is fsync'ed, and
only then are old checkpoints pruned. Accelerate's own ``save_state(total_limit=...)`` deletes old checkpoints
*before* writing the new one; we never use that path. A crash at any point leaves either the previous complete
checkpoints untouched or a ``.tmp`` directory that ``find_latest`` ignores and the next save removes.

Validation (resume never trusts a checkpoint it has not read): before the rename, ``checkpoint_manifest.json``
records every file's size and sha256. ``resume=auto`` walks the complete checkpoints newest first and takes the
first one whose files are all present with the recorded sizes and hashes, and whose containers open (safetensors
header, torch zip archives: CRCs checked, no pickle executed); each skipped checkpoint is logged with its reason.
Checkpoints written before the manifest existed are validated by opening them. If checkpoints exist but none is
valid, resuming fails with :class:`lvmmed.errors.CheckpointError` (exit 1) listing each and why. A save that fails
(disk full, read-only) removes its ``.tmp`` directory and raises :class:`lvmmed.errors.OutputError` naming the
previous checkpoint, which was never touched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator

from lvmmed.config import flatten_config, to_dict
from lvmmed.errors import CheckpointError, OutputError, output_error

STATE_NAME = "trainer_state.json"
MANIFEST_NAME = "checkpoint_manifest.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d{8})$")
log = logging.getLogger("pretrain.checkpoint")


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
    return [p for p in named_checkpoints(output_dir) if read_trainer_state(p) is not None]


def named_checkpoints(output_dir: str | Path) -> list[Path]:
    """Every ``checkpoint_<step>`` directory of a run, oldest first, complete or not. A save is renamed to this name
    only after its trainer state is written, so one without a valid state was damaged after it was saved."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    named = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(named, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def find_latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None (not validated; see :func:`find_valid`)."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """Records size and sha256 of every file in a checkpoint directory (``checkpoint_manifest.json``)."""
    files = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
    (directory / MANIFEST_NAME).write_text(json.dumps({"files": files}, indent=1))
    return files


def _container_problem(path: Path) -> str | None:
    """Opens a checkpoint file's container without running pickle code; returns what is wrong, or None."""
    if path.stat().st_size == 0:
        return f"{path.name} is empty (0 bytes)"
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        elif path.suffix in (".bin", ".pkl", ".pt", ".pth"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"{path.name}: CRC mismatch in {bad}"
        elif path.suffix == ".json":
            json.loads(path.read_text())
    except Exception as err:  # broad on purpose: any decoder failure means "not loadable"
        return f"{path.name} is not loadable ({type(err).__name__}: {err})"
    return None


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is valid (see the module docstring)."""
    directory = Path(directory)
    if read_trainer_state(directory) is None:
        return f"no {STATE_NAME} marked complete"
    manifest_file = directory / MANIFEST_NAME
    if manifest_file.is_file():
        try:
            files = json.loads(manifest_file.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"{MANIFEST_NAME} unreadable ({type(err).__name__})"
        for name, rec in files.items():
            path = directory / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != rec["size"]:
                return f"{name} has {path.stat().st_size} bytes, {rec['size']} were written"
        for name, rec in files.items():
            if sha256_file(directory / name) != rec["sha256"]:
                return f"{name} does not match its sha256 (corrupted after writing)"
        return None
    names = {p.name for p in directory.iterdir()}
    if not any(n.startswith(("model", "pytorch_model")) for n in names):
        return "no model weights file"
    for path in sorted(directory.iterdir()):
        if path.is_file():
            problem = _container_problem(path)
            if problem:
                return problem
    return None


def find_valid(output_dir: str | Path) -> Path | None:
    """The newest valid checkpoint; logs each newer one skipped and why; None when the run has no checkpoint.

    Raises:
        CheckpointError: checkpoints exist but none is valid.
    """
    candidates = named_checkpoints(output_dir)  # damaged ones too: they are reported, never silently passed over
    skipped = []
    for path in reversed(candidates):
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped:
                log.warning("resume: skipped %s; resuming from %s", "; ".join(skipped), path.name)
            return path
        skipped.append(f"{path.name} ({problem})")
    if skipped:
        raise CheckpointError(
            f"no valid checkpoint to resume from in {checkpoints_root(output_dir)}: " + "; ".join(skipped),
            fix="restore a checkpoint, or start afresh with resume=never (or another output_dir)",
        )
    return None


def resolve_resume(resume: str, output_dir: str | Path) -> Path | None:
    """``auto`` -> newest valid checkpoint or None; ``never`` -> None; otherwise a checkpoint directory (validated)."""
    if resume == "never":
        return None
    if resume == "auto":
        return find_valid(output_dir)
    path = Path(resume)
    problem = checkpoint_problem(path) if path.is_dir() else "not a directory"
    if problem is not None:
        raise CheckpointError(f"resume={resume} is not a valid checkpoint: {problem}")
    return path


def prune(output_dir: str | Path, keep: int) -> list[Path]:
    """Deletes all but the newest ``keep`` complete checkpoints, and stale ``.tmp``/``.old`` directories."""
    root = checkpoints_root(output_dir)
    removed = complete_checkpoints(output_dir)[:-keep] if keep > 0 else []
    removed += [p for p in [*root.glob("checkpoint_*.tmp"), *root.glob("checkpoint_*.old")] if p.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _agreed_failure(accelerator: Accelerator, error: OSError | None) -> str | None:
    """Every rank learns whether any rank failed (one collective on all ranks, so nobody waits forever)."""
    local = None if error is None else str(output_error(error) or error)
    if accelerator.num_processes == 1:
        return local
    from accelerate.utils import gather_object

    failures = [f for f in gather_object([local]) if f is not None]
    return failures[0] if failures else None


def _write_failure(err: Exception, root: Path) -> OSError:
    """An ``OSError`` for a save that failed with a non-OS exception: ENOSPC when the disk is (nearly) full."""
    detail = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    try:
        full = shutil.disk_usage(root).free < 64 * 2**20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, f"no space left on device ({detail})", str(root))
    return OSError(f"writing the checkpoint failed: {detail}")


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, step: int, state: dict[str, Any], config_yaml: str, keep: int
) -> Path:
    """Saves a complete checkpoint atomically (see the module docstring). All ranks must call it.

    Raises:
        OutputError: on every rank, when any rank could not write (disk full, read-only); the ``.tmp`` directory
            is removed and the previous checkpoints are untouched.
    """
    root = checkpoints_root(output_dir)
    final = root / f"checkpoint_{step:08d}"
    tmp = root / f"{final.name}.tmp"
    error: OSError | None = None
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
    except OSError as err:
        error = err
    failure = _agreed_failure(accelerator, error)
    if failure is None:
        try:
            accelerator.save_state(str(tmp), safe_serialization=True)
        except Exception as err:  # torch's zip writer and safetensors report a full disk as RuntimeError & co.
            error = err if isinstance(err, OSError) else _write_failure(err, root)
        failure = _agreed_failure(accelerator, error)
    if failure is None and accelerator.is_main_process:
        try:
            write_trainer_state(tmp, state, config_yaml)
            write_manifest(tmp)
            fsync_tree(tmp)
            old = root / f"{final.name}.old"
            if final.exists():  # re-saving a step (e.g. after resuming a finished run): keep it until replaced
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
            tmp.rename(final)
            _fsync_path(root)
            shutil.rmtree(old, ignore_errors=True)
            prune(output_dir, keep)
        except OSError as err:
            error = err
    failure = _agreed_failure(accelerator, error) if failure is None else failure
    if failure is not None:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space the partial save took
        previous = [p.name for p in complete_checkpoints(output_dir)]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        raise OutputError(
            f"could not save checkpoint {final.name}: {failure}; {kept}",
            fix="free disk space or point output_dir at a writable file system, then re-run (resume=auto)",
        ) from error
    accelerator.wait_for_everyone()
    return final


RESUME_FREE_KEYS = ("resume", "output_dir", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                    "export_at_end", "data.shards", "data.cache_dir", "monitor.", "init.", "log_with",
                    "trackers")  # fmt: skip


def config_changes(saved: Path, cfg: Any) -> list[str]:
    """``key (old → new)`` for every setting that differs from the checkpoint's ``config.yaml``, except the ones
    that do not change the trajectory (:data:`RESUME_FREE_KEYS`: paths, budget, logging, the monitor, and the
    init weights, which a resumed run never re-loads)."""
    try:
        old = flatten_config(yaml.safe_load(saved.read_text()) or {})
    except (OSError, yaml.YAMLError):
        return []
    new = flatten_config(to_dict(cfg))
    return [f"{k} ({old.get(k)!r} → {new.get(k)!r})" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not k.startswith(RESUME_FREE_KEYS)]  # fmt: skip
