"""The ``lvmmed`` wrapper CLI: usage, unknown stages, delegation to a stage module by name."""

from __future__ import annotations

from pathlib import Path

from lvmmed import cli

REPO = Path(__file__).resolve().parents[2]


def test_cli_usage_and_unknown_stage(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(stage in out for stage in ("prep", "pretrain", "downstream", "benchmark", "demo"))
    assert cli.main([]) == 2
    assert cli.main(["nope"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_cli_delegates_to_the_stage_module(capsys):
    code = cli.main(["benchmark", "--config", str(REPO / "configs/benchmark/demo.yaml"), "seeds=[4]", "--print-config"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "name: demo" in printed and "- 4" in printed
    assert cli.main(["benchmark", "--config", str(REPO / "configs/benchmark/demo.yaml"), "no_such_key=1"]) == 2
