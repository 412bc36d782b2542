"""One error contract for every command-line entry point (``data_prep``, ``pretrain``, ``downstream``, ...).

Expected failures print ONE line on stderr, ``<prog>: error: <what went wrong> — <how to fix it>``, and exit with

* ``2`` for usage and config errors (bad arguments, unknown config key, wrong value type, malformed YAML);
* ``1`` for run failures (missing or unreadable input, bad weights file, read-only or full output, data quality
  below the configured threshold, a failed verification).

A traceback is printed only with ``--debug`` (or ``-v``/``--verbose`` where a command has it, or
``LVMMED_DEBUG=1``), or for an unexpected exception (a bug), which keeps its traceback and exits 1. This follows
argparse's own ``prog: error:`` convention and the BSD ``sysexits`` split of usage (EX_USAGE) from run failures,
narrowed to the two codes shells and CI runners look at.

Project exceptions subclass :class:`LvmmedError` (or carry an ``exit_code`` attribute); exceptions from libraries
and other packages are recognised by :data:`KNOWN_ERRORS` without importing those packages here (a type is only
looked up when its module is already loaded, so this module stays import-free and cycle-free).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

EXIT_CODES_HELP = (
    "exit status: 0 success; 1 run failure (missing or unreadable input, bad weights, read-only or full output, "
    "data-quality threshold exceeded, failed check); 2 usage or config error. Expected errors print one line "
    "'prog: error: what — fix'; add --debug (or set LVMMED_DEBUG=1) for a traceback."
)

OUTPUT_ERRNOS = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
                 errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}  # fmt: skip


class LvmmedError(Exception):
    """Base of the project's expected errors. ``fix`` is the one-line remedy printed after the message."""

    exit_code = EXIT_FAILURE
    default_fix = ""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = self.default_fix if fix is None else fix


class UsageError(LvmmedError):
    """Bad command-line arguments or config values (exit 2)."""

    exit_code = EXIT_USAGE
    default_fix = "see --help"


class InputError(LvmmedError):
    """Input that is missing, unreadable, corrupt or not what the command expects (exit 1)."""

    default_fix = "check the input path and its contents"


class WeightsError(InputError):
    """A weights file or source that cannot be used (exit 1)."""

    default_fix = "give a .safetensors/.pth state dict or an lvmmed export dir (python -m lvmmed.weights inspect FILE)"


class OutputError(LvmmedError):
    """The output location cannot be written: read-only, full, or not permitted (exit 1)."""

    default_fix = "choose a writable output location with free space"


class DataQualityError(LvmmedError):
    """More of the data was unusable than the configured threshold allows (exit 1)."""

    default_fix = "inspect the named files (python -m data_prep verify) or raise the threshold knowingly"


class CheckpointError(LvmmedError):
    """No usable checkpoint to resume from, or a checkpoint could not be written (exit 1)."""

    default_fix = "resume=never starts afresh; resume=<dir> picks a checkpoint"


def output_error(err: OSError, what: str = "output") -> OutputError | None:
    """An :class:`OutputError` for an ``OSError`` caused by a read-only, full or forbidden location, else None."""
    reason = OUTPUT_ERRNOS.get(err.errno or -1)
    if reason is None:
        return None
    where = f" {err.filename}" if err.filename else ""
    return OutputError(f"cannot write {what}{where}: {reason}")


# (module, class name, exit code, fix). Looked up only when the module is already imported.
KNOWN_ERRORS: tuple[tuple[str, str, int, str], ...] = (
    ("lvmmed.config", "ConfigError", EXIT_USAGE, "fix the key or value (--print-config shows the resolved config)"),
    ("yaml", "YAMLError", EXIT_USAGE, "quote values with special characters, e.g. 'key=\"*_seg.nii.gz\"'"),
    ("omegaconf.errors", "OmegaConfBaseException", EXIT_USAGE, "fix the key or value"),
    ("data_prep.catalog", "LayoutError", EXIT_USAGE, "point --src at the layout the entry expects"),
    ("data_prep.safety", "UnsafeArchiveError", EXIT_USAGE, "extract the archive yourself and check its members"),
    ("data_prep.writer", "ResumeError", EXIT_USAGE, "use a new --out, or --overwrite to replace the old run"),
    ("lvmmed.data.samples", "MissingSampleError", EXIT_FAILURE, "reinstall the package that ships the sample"),
    ("lvmmed.data.shard_sets", "DataQualityError", EXIT_FAILURE, DataQualityError.default_fix),
    ("lvmmed.data.readers.record", "ReaderError", EXIT_FAILURE, InputError.default_fix),
    ("lvmmed.models.state_dict", "WeightLoadError", EXIT_FAILURE, WeightsError.default_fix),
    ("safetensors", "SafetensorError", EXIT_FAILURE, "the .safetensors file is truncated or not safetensors"),
    ("pydicom.errors", "InvalidDicomError", EXIT_FAILURE, "the file is not DICOM (or pass force=True)"),
    ("downstream.tasks", "TaskDataError", EXIT_FAILURE, "build the task's shards with python -m data_prep"),
    ("downstream.segmentation.tasks", "TaskUnavailable", EXIT_FAILURE, "build the task's data first"),
    ("downstream.segmentation.mask_guided", "OptionalDependencyMissing", EXIT_FAILURE, "install the named package"),
    ("lvmmed.markers", "MarkerError", EXIT_FAILURE, "restore the <!-- name:start/end --> markers in the file"),
    ("builtins", "FloatingPointError", EXIT_FAILURE, "lower optim.lr or raise optim.clip_grad_norm; see the last log"),
)


def classify(err: BaseException, usage_errors: tuple[type[BaseException], ...] = ()) -> tuple[int, str, str] | None:
    """``(exit code, message, fix)`` for an expected error, or None for a bug (which keeps its traceback).

    Order: project errors, then :data:`KNOWN_ERRORS`, then a full/read-only/forbidden output, then the caller's
    ``usage_errors`` (exit 2), then missing files (exit 1).
    """
    if isinstance(err, LvmmedError):
        return err.exit_code, str(err), err.fix
    for module_name, class_name, code, fix in KNOWN_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(err, cls):
            return code, str(err), fix
    out = output_error(err) if isinstance(err, OSError) else None
    if out is not None:
        return out.exit_code, str(out), out.fix
    if usage_errors and isinstance(err, usage_errors):
        return EXIT_USAGE, str(err), "see --help"
    if isinstance(err, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        return EXIT_FAILURE, f"{err.strerror or err}: {err.filename}" if err.filename else str(err), ""
    return None


def worker_message(text: str) -> str:
    """The original message of an error re-raised from a DataLoader worker (whose text embeds a traceback)."""
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    name, sep, message = last.partition(": ")
    return message if sep and " " not in name else last


def _one_line(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return "\n  ".join(lines) if lines else "(no message)"


def format_error(prog: str, message: str, fix: str = "") -> str:
    """``prog: error: message — fix`` (continuation lines of a long message are indented)."""
    message = worker_message(message)
    tail = f" — {fix}" if fix and fix not in message else ""
    return f"{prog}: error: {_one_line(message)}{tail}"


def debug_requested(argv: Sequence[str]) -> bool:
    """True when ``--debug``/``-v``/``--verbose`` is among the arguments or ``LVMMED_DEBUG=1`` is set."""
    return os.environ.get("LVMMED_DEBUG") == "1" or any(a in ("--debug", "-v", "--verbose") for a in argv)


def run_cli(
    main: Callable[[list[str]], Any],
    argv: Sequence[str] | None = None,
    prog: str = "lvmmed",
    usage_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Runs ``main(argv)`` under the error contract and returns the exit status (never raises, except SystemExit).

    ``--debug`` is removed from ``argv`` before ``main`` sees it. ``main`` may return an int (the exit status),
    None (success) or any other value (success, e.g. a result dict). ``SystemExit`` from argparse passes through.
    ``usage_errors`` are further exception types that a command treats as its user's mistake (exit 2).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [a for a in args if a != "--debug"]
    try:
        result = main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the contract: classify, or report as a bug with its traceback
        known = classify(err, usage_errors)
        if known is None:
            traceback.print_exc()
            print(f"{prog}: internal error: {type(err).__name__}: {err} — this is a bug; please report it with "
                  "the traceback above", file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
        code, message, fix = known
        if debug:
            traceback.print_exc()
        print(format_error(prog, message, fix), file=sys.stderr)
        return code
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK
