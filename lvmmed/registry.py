"""One way to choose an implementation by name: a :class:`Registry` per kind of thing.

Losses, projectors, matching solvers, backbones, downstream methods and data_prep converters are each chosen by a
config string. Each kind keeps one ``Registry``: the register call (a decorator, or a ``"module:attribute"`` path
for entries whose module is slow to import, such as MONAI-based ones), the lookup with a "did you mean ..."
message, and the list of names that configs validate against. This mirrors timm's ``register_model`` /
``create_model`` and MONAI's ``monai.utils.ComponentStore``: registration sits next to the implementation, and
the name list is never written a second time.

Example:
    >>> LOSSES_DEMO = Registry("loss")
    >>> @LOSSES_DEMO.register("mean")
    ... def mean_loss(x):
    ...     return sum(x) / len(x)
    >>> LOSSES_DEMO.get("mean")([1, 2, 3])
    2.0
    >>> LOSSES_DEMO.names()
    ('mean',)
    >>> LOSSES_DEMO.get("maen")
    Traceback (most recent call last):
    ...
    lvmmed.registry.UnknownNameError: unknown loss 'maen' (did you mean 'mean'? choices: mean)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """A name that no entry of the registry carries.

    Subclasses ``ValueError`` so a config's ``__post_init__`` check becomes a config error (exit 2) through
    :func:`lvmmed.config.load_config`, and ``KeyError`` for callers that looked names up in a dict before.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one kind.

    Args:
        kind: What the entries are, used in messages ("loss", "downstream method", ...).
        key: The config key that names an entry, used in messages when given (``"loss.name"``).
    """

    def __init__(self, kind: str, key: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None, *, overwrite: bool = False) -> Any:
        """Adds ``obj`` under ``name``; without ``obj``, returns a decorator that adds what it decorates.

        Args:
            name: The config string.
            obj: The entry, or ``"package.module:attribute"`` to import on first :meth:`get`.
            overwrite: Replace an existing entry instead of raising ``ValueError``.
        """

        def add(entry: T | str) -> T | str:
            if name in self._entries and not overwrite and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} '{name}' is already registered (pass overwrite=True to replace it)")
            self._entries[name] = entry
            return entry

        if obj is not None:
            add(obj)
            return obj
        return add

    def unregister(self, name: str) -> None:
        """Removes ``name`` (tests and plugins that registered temporarily)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def unknown(self, name: str, key: str | None = None) -> UnknownNameError:
        """The error for ``name``, naming the closest registered name and all choices.

        Args:
            name: The unregistered name.
            key: The config key to name in the message (default: the registry's ``key``, else its ``kind``).
        """
        what = f"unknown {key or self.key or self.kind} {name!r}"
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return UnknownNameError(f"{what} ({hint}choices: {', '.join(self.names())})")

    def check(self, name: str, key: str | None = None) -> None:
        """Raises :class:`UnknownNameError` unless ``name`` is registered (for config ``__post_init__``).

        Args:
            name: The configured name.
            key: The config key that holds it, for the message when it differs from the registry's ``key``
                (``"graph_matching.solver"`` for the solver registry, whose own key is ``"solver"``).
        """
        if name not in self._entries:
            raise self.unknown(name, key)

    def get(self, name: str) -> T:
        """The entry for ``name``, importing a lazy ``"module:attribute"`` entry on first use."""
        if name not in self._entries:
            raise self.unknown(name)
        entry = self._entries[name]
        if isinstance(entry, str) and ":" in entry:
            module_name, attribute = entry.split(":", 1)
            entry = getattr(importlib.import_module(module_name), attribute)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Calls the entry for ``name`` with the given arguments."""
        factory: Callable[..., Any] = self.get(name)  # type: ignore[assignment]
        return factory(*args, **kwargs)


def check_choice(value: str, choices: Iterable[str], name: str) -> None:
    """Validates a string choice field in a config's ``__post_init__`` (OmegaConf has no ``Literal``).

    For names that a :class:`Registry` holds, use its ``check`` instead (it also knows entries registered later,
    e.g. by a plugin). Also importable as ``lvmmed.config.check_choice``; it lives here so that modules which
    validate a choice do not import OmegaConf.

    Args:
        value: The configured string.
        choices: The allowed strings.
        name: The config key, for the message.

    Raises:
        ValueError: ``value`` is not one of ``choices`` (``lvmmed.config.load_config`` turns it into a
            ``ConfigError``); the message names the closest choice.
    """
    choices = tuple(choices)
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{name} must be one of {choices}, got {value!r}{hint}")
