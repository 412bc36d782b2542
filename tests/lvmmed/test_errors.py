"""The one error contract (``lvmmed.errors``): message format, exit codes, tracebacks only on request or for bugs."""

from __future__ import annotations

import ast
import errno
import importlib
import os
from pathlib import Path

import pytest

from lvmmed.config import ConfigError
from lvmmed.errors import (
    EXIT_CODES_HELP,
    DataQualityError,
    InputError,
    UsageError,
    classify,
    format_error,
    run_cli,
)

REPO = Path(__file__).resolve().parents[2]


def _raiser(err: BaseException):
    def main(argv):
        raise err

    return main


@pytest.mark.parametrize(
    ("err", "code", "fragment"),
    [
        (ConfigError("Unknown config key 'x'"), 2, "Unknown config key 'x' — fix the key or value"),
        (UsageError("bad flag"), 2, "bad flag — see --help"),
        (InputError("no such folder", fix="point --src at it"), 1, "no such folder — point --src at it"),
        (DataQualityError("13 of 45 unreadable"), 1, "13 of 45 unreadable"),
        (OSError(errno.EROFS, "Read-only file system", "/out/x"), 1, "cannot write output /out/x: read-only file"),
        (OSError(errno.ENOSPC, "No space left on device"), 1, "no space left on device — choose a writable"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/in/y"), 1, "No such file or directory: /in/y"),
    ],
)
def test_expected_errors_give_one_line_and_their_exit_code(err, code, fragment, capsys):
    assert run_cli(_raiser(err), [], "prog") == code
    err_text = capsys.readouterr().err
    assert err_text.startswith("prog: error: ") and fragment in err_text
    assert "Traceback" not in err_text and len(err_text.strip().splitlines()) == 1


def test_debug_flag_adds_the_traceback_and_is_not_passed_on(capsys):
    seen = []

    def main(argv):
        seen.extend(argv)
        raise InputError("broken input")

    assert run_cli(main, ["--debug", "a=1"], "prog") == 1
    assert seen == ["a=1"]
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().endswith("prog: error: broken input — check the input path and its contents")


def test_a_bug_keeps_its_traceback_and_exits_1(capsys):
    assert run_cli(_raiser(ZeroDivisionError("division by zero")), [], "prog") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: ZeroDivisionError" in err and "bug" in err


def test_return_values_map_to_exit_codes():
    assert run_cli(lambda argv: 3, [], "p") == 3
    assert run_cli(lambda argv: {"step": 4}, [], "p") == 0
    assert run_cli(lambda argv: None, [], "p") == 0


def test_library_errors_are_recognised_without_importing_them():
    import yaml
    from safetensors import SafetensorError

    assert classify(yaml.YAMLError("scanner"))[0] == 2
    assert classify(SafetensorError("header too large"))[0] == 1
    assert classify(ValueError("a plain bug")) is None
    assert classify(ValueError("user value"), usage_errors=(ValueError,))[0] == 2


def test_errors_from_dataloader_workers_show_their_own_message(capsys):
    from lvmmed.data.pipeline import DataQualityError as StreamQualityError

    wrapped = (
        "Caught DataQualityError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nlvmmed.data.pipeline.DataQualityError: 21 of 21 samples were unreadable\n'
    )
    assert run_cli(_raiser(StreamQualityError(wrapped)), [], "prog") == 1
    err = capsys.readouterr().err
    assert err.startswith("prog: error: 21 of 21 samples were unreadable — ") and "Traceback" not in err


def test_multi_line_messages_stay_one_error():
    text = format_error("p", "first\nsecond\n", "fix it")
    assert text == "p: error: first\n  second — fix it"


@pytest.mark.parametrize(
    ("module", "entry"),
    [
        ("data_prep.cli", "main"),
        ("pretrain.__main__", "main"),
        ("downstream.__main__", "main"),
        ("downstream.benchmark.__main__", "main"),
        ("lvmmed.weights", "main"),
        ("demo.__main__", "main"),
    ],
)
def test_every_cli_documents_its_exit_codes(module, entry, capsys):
    main = getattr(importlib.import_module(module), entry)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert " ".join(capsys.readouterr().out.split()).count("exit status: 0 success; 1 run failure") == 1


def test_lvmmed_command_documents_exit_codes(capsys):
    from lvmmed import cli

    assert cli.main(["--help"]) == 0
    assert EXIT_CODES_HELP in capsys.readouterr().out


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_factory_and_weights_do_not_import_each_other():
    factory = _imports(REPO / "lvmmed/models/factory.py")
    sources = _imports(REPO / "lvmmed/weight_sources.py")
    assert "lvmmed.weights" not in factory and "lvmmed.weights" not in sources
    assert "lvmmed.models.factory" not in sources


def test_errors_module_imports_nothing_from_the_project():
    project = ("lvmmed", "data_prep", "pretrain", "downstream")
    assert not {m for m in _imports(REPO / "lvmmed/errors.py") if m.split(".")[0] in project}


def test_no_private_names_imported_across_packages_in_lvmmed_and_pretrain():
    offenders = []
    for root in ("lvmmed", "pretrain", "data_prep"):
        for path in (REPO / root).rglob("*.py"):
            package = ".".join(path.relative_to(REPO).parts[:-1])
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith(package):
                    private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                    if private and node.level == 0:
                        offenders.append(f"{path.relative_to(REPO)}: {node.module}.{private}")
    assert not offenders, offenders


def test_unquoted_glob_overrides_are_plain_strings():
    from data_prep.config import ConvertConfig
    from lvmmed.config import load_config

    cfg = load_config(ConvertConfig, overrides=["exclude_glob=*_seg.nii.gz", "image_glob=*.nii*"])
    assert cfg.exclude_glob == "*_seg.nii.gz" and cfg.image_glob == "*.nii*"
    with pytest.raises(ConfigError, match="shard_maxcount"):
        load_config(ConvertConfig, overrides=["shard_maxcount=*x"])


def test_env_limits_are_read(monkeypatch):
    from lvmmed.data.readers.limits import DecodeLimits

    monkeypatch.setenv("LVMMED_MAX_FRAMES", "12")
    assert DecodeLimits.from_env().max_frames == 12
    monkeypatch.delenv("LVMMED_MAX_FRAMES")
    assert DecodeLimits.from_env() == DecodeLimits()
    assert os.environ.get("LVMMED_MAX_FRAMES") is None
