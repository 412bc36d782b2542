"""One config system for every stage: typed dataclasses, YAML files and ``key=value`` overrides.

The precedence is dataclass defaults < YAML file(s) < command-line ``key=value`` overrides, as in dinov2 and
nanoGPT. The dataclass is the schema: an unknown key anywhere (YAML or CLI) is an error that names the key and
the valid keys at that level, and values are type-checked by OmegaConf. The resolved config is written next to
every run (``save_config``) and can be reloaded exactly (``load_config(schema, path)``).

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Optim:
    ...     lr: float = 1e-3
    >>> @dataclass
    ... class Train:
    ...     output_dir: str = "runs/x"
    ...     optim: Optim = field(default_factory=Optim)
    >>> cfg = load_config(Train, overrides=["optim.lr=0.5"])
    >>> cfg.optim.lr
    0.5

Design choice: OmegaConf structured configs (already pulled in by lightly through hydra-core) rather than Hydra
itself, so that there are no config groups and no working-directory changes. Literal-like choices are plain
``str`` fields validated in the dataclass's ``__post_init__``, because OmegaConf does not support ``Literal``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from lvmmed.errors import EXIT_CODES_HELP, UsageError
from lvmmed.registry import check_choice as check_choice  # re-exported: configs import it from here

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A config file or override does not match the schema (unknown key, wrong type, bad value); exit status 2."""

    default_fix = "fix the key or value (--print-config shows the resolved config, --help the syntax)"


def _valid_keys_hint(schema_node: DictConfig, full_key: str) -> str:
    """Names the valid keys at the level of ``full_key`` and the closest match."""
    parts = full_key.split(".")
    node: Any = schema_node
    for part in parts[:-1]:
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
        else:
            break
    if not isinstance(node, DictConfig):
        return ""
    keys = sorted(str(k) for k in node)
    close = difflib.get_close_matches(parts[-1], keys, n=1)
    hint = f" Did you mean '{'.'.join([*parts[:-1], close[0]])}'?" if close else ""
    return f"{hint} Valid keys here: {', '.join(keys)}."


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None) or str(err)
        raise ConfigError(f"Unknown config key '{key}' in {source}.{_valid_keys_hint(base, str(key))}") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "?")
        reason = str(err.msg if hasattr(err, "msg") else err).strip().splitlines()  # OmegaConf appends key/type lines
        text = reason[0].rstrip(".") if reason else "invalid"
        if "is not a ListConfig" in text:
            text = f"'{key}' takes a list: {key}='[a, b]' (quote it in a shell; brace patterns too)"
        raise ConfigError(f"Invalid value for '{key}' in {source}: {text}") from None


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """``key=value`` strings -> one DictConfig. Values are YAML scalars/lists; a value YAML cannot parse
    (an unquoted glob such as ``exclude_glob=*_seg.nii.gz``, where ``*`` starts a YAML alias) is kept as the
    plain string it was typed as."""
    merged = OmegaConf.create()
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"Override '{item}' is not of the form key=value (for example max_steps=20).")
        key, _, value = item.partition("=")
        if any(not part for part in key.split(".")):
            raise ConfigError(f"Override '{item}' has an empty key part (expected dotted.key=value).")
        try:
            parsed = OmegaConf.from_dotlist([item])
        except Exception:  # yaml ScannerError/ParserError or OmegaConf grammar errors: keep the text verbatim
            node: Any = value
            for part in reversed(key.split(".")):
                node = {part: node}
            parsed = OmegaConf.create(node)
        merged = OmegaConf.merge(merged, parsed)
    return merged  # type: ignore[return-value]


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Builds a typed config from defaults, an optional YAML file and ``key=value`` overrides.

    Args:
        schema: The dataclass type that defines the keys, types and defaults.
        path: Optional YAML file. May be a previously saved resolved config.
        overrides: ``key=value`` strings with dotted keys, e.g. ``["optim.lr=0.1", "max_steps=20"]``.
            Values are parsed as YAML scalars/lists (``a=[1,2]``, ``b=null``).

    Returns:
        An instance of ``schema`` (``__post_init__`` validation has run).

    Raises:
        ConfigError: On an unknown key, a type mismatch, a missing file or a failed validation.
    """
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    cfg = OmegaConf.structured(schema)
    OmegaConf.set_struct(cfg, True)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # yaml.YAMLError (scanner/parser), UnicodeDecodeError, OSError
            raise ConfigError(f"{path} is not valid YAML: {_first_line(err)}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        cfg = _merge(cfg, loaded, str(path))
    if overrides:
        cfg = _merge(cfg, _parse_overrides(overrides), "command-line overrides")
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Config is incomplete or invalid: {err}") from None
    except (ValueError, TypeError) as err:  # raised by __post_init__ validators
        raise ConfigError(str(err)) from None
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Returns the config as plain Python containers (for JSON, trackers and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim.lr": 0.1, ...}``: the leaves of a nested config dict under dotted keys (lists stay leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def to_yaml(cfg: Any) -> str:
    """Returns the config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Writes the resolved config as YAML (atomically: temp file then rename).

    Args:
        cfg: A config dataclass instance.
        path: Destination file, or a directory (then ``config.yaml`` inside it).

    Returns:
        The written path.
    """
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        path = path / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(path)
    return path


def parse_args(
    schema: type[T], argv: Sequence[str] | None = None, prog: str | None = None, description: str | None = None
) -> T:
    """Parses ``[--config FILE] [key=value ...]`` into a typed config (the CLI of every stage).

    ``--print-config`` prints the resolved config and exits, like ``--cfg job`` in Hydra.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Overrides are dotted key=value pairs, e.g. output_dir=/tmp/x max_steps=20. Unknown keys are errors. "
        + EXIT_CODES_HELP,
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(schema, args.config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    if args.print_config:
        print(to_yaml(cfg))
        raise SystemExit(0)
    return cfg
