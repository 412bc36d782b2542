"""``lvmmed.registry``: the mechanism (doctest, lazy entries, messages) and that every config key that names a
registered kind validates against its registry, so one registration is all a new entry needs."""

from __future__ import annotations

import doctest
import importlib

import pytest

import lvmmed.registry
from lvmmed.config import ConfigError, load_config
from lvmmed.registry import Registry, UnknownNameError, check_choice


def test_doctest():
    assert doctest.testmod(lvmmed.registry).failed == 0


def test_lazy_entry_imports_on_first_get_and_names_keep_registration_order():
    reg: Registry = Registry("thing", key="x.name")
    reg.register("b", "json:dumps")
    reg.register("a", len)
    assert reg.names() == ("b", "a") and "b" in reg and len(reg) == 2
    assert reg.build("b", [1]) == "[1]" and reg.get("a") is len
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", max)
    reg.register("a", max, overwrite=True)
    assert reg.get("a") is max


def test_unknown_names_say_the_key_and_the_closest_name():
    reg: Registry = Registry("thing", key="x.name")
    reg.register("alpha", 1)
    with pytest.raises(UnknownNameError, match=r"unknown x\.name 'alpah' \(did you mean 'alpha'\? choices: alpha\)"):
        reg.check("alpah")
    with pytest.raises(KeyError, match=r"unknown y\.kind 'zzz' \(choices: alpha\)"):
        reg.check("zzz", "y.kind")
    with pytest.raises(ValueError, match=r"^channels must be one of \('keep', 'grey'\), got 'gray' \(did you mean"):
        check_choice("gray", ("keep", "grey"), "channels")
    check_choice("grey", ["keep", "grey"], "channels")


def _resolve(path: str):
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize(
    ("registry_path", "schema_path", "key"),
    [
        ("lvmmed.losses:LOSSES", "lvmmed.losses:LossConfig", "name"),
        ("lvmmed.matching.solvers:SOLVERS", "lvmmed.losses:GraphMatchingConfig", "solver"),
        ("pretrain.projectors:PROJECTORS", "pretrain.config:ModelConfig", "projector"),
        ("lvmmed.models.factory:BACKBONES", "pretrain.config:ModelConfig", "backbone"),
        ("data_prep.formats:FORMATS", "data_prep.config:ConvertConfig", "format"),
    ],
    ids=["loss.name", "graph_matching.solver", "model.projector", "model.backbone", "format"],
)
def test_each_config_key_validates_with_its_registry(registry_path, schema_path, key):
    registry, schema = _resolve(registry_path), _resolve(schema_path)
    with pytest.raises(ConfigError, match=rf"unknown \S*{key} 'plugin_x'"):
        load_config(schema, None, [f"{key}=plugin_x"])
    registry.register("plugin_x", object())
    try:
        assert getattr(load_config(schema, None, [f"{key}=plugin_x"]), key) == "plugin_x"
    finally:
        registry.unregister("plugin_x")
    assert "plugin_x" not in registry
