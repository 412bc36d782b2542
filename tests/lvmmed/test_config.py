"""Tests for the shared config system (lvmmed.config)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from lvmmed.config import ConfigError, load_config, parse_args, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Train:
    output_dir: str = "runs/x"
    max_steps: int = 100
    precision: str = "no"
    optim: Optim = field(default_factory=Optim)

    def __post_init__(self) -> None:
        if self.precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"precision must be no/bf16/fp16, got {self.precision!r}")


def test_defaults_yaml_and_overrides_in_order(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("max_steps: 7\noptim:\n  lr: 0.5\n")
    cfg = load_config(Train, file, ["optim.lr=0.25", "output_dir=/tmp/y"])
    assert isinstance(cfg, Train) and isinstance(cfg.optim, Optim)
    assert (cfg.max_steps, cfg.optim.lr, cfg.output_dir) == (7, 0.25, "/tmp/y")
    assert cfg.optim.betas == [0.9, 0.999]


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "match"),
    [
        ("max_step: 3\n", [], "Unknown config key 'max_step'.*max_steps"),
        ("optim:\n  lrr: 1\n", [], "optim.lrr"),
        ("", ["optim.momentum=0.9"], "optim.momentum"),
        ("", ["max_steps=abc"], "max_steps"),
        ("", ["precision=fp8"], "precision must be"),
        ("", ["max_steps"], "key=value"),
    ],
)
def test_bad_keys_and_values_are_errors(tmp_path, yaml_text, overrides, match):
    file = tmp_path / "c.yaml"
    file.write_text(yaml_text or "{}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(Train, file, overrides)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Train, tmp_path / "nope.yaml")


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(Train, None, ["max_steps=11", "optim.betas=[0.5,0.6]"])
    path = save_config(cfg, tmp_path / "run")
    assert path.name == "config.yaml"
    assert yaml.safe_load(path.read_text())["max_steps"] == 11
    assert load_config(Train, path) == cfg
    assert to_dict(cfg)["optim"]["betas"] == [0.5, 0.6]


def test_parse_args_cli(capsys):
    cfg = parse_args(Train, ["max_steps=3"])
    assert cfg.max_steps == 3
    with pytest.raises(SystemExit) as exc:
        parse_args(Train, ["nonsense=1"])
    assert exc.value.code == 2
    assert "nonsense" in capsys.readouterr().err
