"""Shard-set locations beyond local directories: HTTP(S), object stores, brace patterns and ``pipe:`` commands.

Every read goes through webdataset's own URL handling (``webdataset.gopen``): ``http(s)://`` streams through
``curl``, ``pipe:CMD`` reads the standard output of a shell command, local paths are opened directly. ``s3://``,
``gs://`` and ``gcs://`` go through fsspec, registered here as webdataset ``gopen`` handlers; they need the fsspec
backend package (``s3fs`` / ``gcsfs``, the ``remote`` extra of this package) and fail with an error naming it.

A location names one shard set; its ``manifest.json`` is read from the same place and through the same route:

==========================================  ==================================================================
``runs/shards/mni152`` (directory)          ``<dir>/manifest.json``; a parent of several sets expands to all
``https://host/sets/mni152/``               ``https://host/sets/mni152/manifest.json``
``s3://bucket/sets/mni152``                 ``s3://bucket/sets/mni152/manifest.json`` (via fsspec)
``https://host/mni152/train-{000..004}.tar``  manifest next to the shards; only the listed shards are read
``pipe:curl -s https://h/m/train-{0..4}.tar``  the manifest through the same command, its ``.tar`` name
                                            replaced by ``manifest.json``; only the listed shards are read
``.../manifest.json``                       that manifest; shards next to it
==========================================  ==================================================================

``pipe:`` runs a shell command (webdataset's design): use it only with configs you trust.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import braceexpand
from webdataset.gopen import gopen, gopen_schemes

MANIFEST = "manifest.json"

# fsspec protocol -> the package that implements it (the ``remote`` extra installs them).
FSSPEC_BACKENDS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
_TAR_TOKEN = re.compile(r"[^\s'\"]+\.tar\b")


def is_remote(location: str) -> bool:
    """True for URLs (``scheme://``) and ``pipe:`` commands, False for local paths."""
    return location.startswith("pipe:") or "://" in location


def scheme(location: str) -> str:
    if location.startswith("pipe:"):
        return "pipe"
    return location.split("://", 1)[0].lower() if "://" in location else ""


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw: object):
    import fsspec

    return fsspec.open(url, mode).open()


def require_backend(location: str) -> None:
    """Checks that the fsspec backend for an object-store URL is importable and registers it with webdataset.

    Raises:
        RemoteError: The backend package (``s3fs``, ``gcsfs``) or fsspec itself is not installed.
    """
    proto = scheme(location)
    if proto not in FSSPEC_BACKENDS:
        return
    package = FSSPEC_BACKENDS[proto]
    try:
        import fsspec

        fsspec.get_filesystem_class(proto)
    except ImportError:
        raise RemoteError(
            f"{location}: reading {proto}:// shards needs the fsspec backend package `{package}`, which is not "
            f"installed. Install it with `pip install {package}` (or the extra: `pip install 'lvmmed[remote]'`)."
        ) from None
    gopen_schemes[proto] = _gopen_fsspec


class RemoteError(ValueError):
    """A remote shard-set location cannot be used (missing backend package, unreadable manifest, bad pattern)."""


def read_bytes(url: str) -> bytes:
    """Reads a whole (small) object, e.g. a manifest, through webdataset's ``gopen``.

    Raises:
        RemoteError: The object cannot be read; the message names the URL.
    """
    require_backend(url)
    try:
        stream = gopen(url)
        try:
            data = stream.read()
        finally:
            stream.close()
    except Exception as err:  # curl, shell and fsspec raise anything from OSError to ValueError
        raise RemoteError(f"cannot read {url}: {err}") from None
    if not data:
        raise RemoteError(f"cannot read {url}: empty response")
    return data


@dataclass
class Location:
    """Where one shard set lives: how to read its manifest and how to name each shard.

    Attributes:
        spec: The location as given in the config.
        base: Directory URL/path (no trailing slash) or, for ``pipe:``, the command with ``{name}`` in place of
            the shard's file name.
        names: Shard file names listed by a pattern (None: every shard of the manifest).
    """

    spec: str
    base: str
    names: list[str] | None = None

    @property
    def is_pipe(self) -> bool:
        return self.base.startswith("pipe:")

    def url(self, name: str) -> str:
        """The URL (or ``pipe:`` command, or local path) of a file of the set."""
        if self.is_pipe:
            return self.base.replace("{name}", name)
        if is_remote(self.base):
            return f"{self.base}/{name}"
        return str(Path(self.base) / name)

    @property
    def manifest_url(self) -> str:
        return self.url(MANIFEST)


def parse_location(spec: str) -> Location:
    """Parses a remote location (see the module docstring; local directories are handled by the caller).

    Raises:
        RemoteError: A pattern whose expansions do not share one directory (or, for ``pipe:``, one command
            template), or a ``pipe:`` command without a ``.tar`` name.
    """
    require_backend(spec.removeprefix("pipe:").strip() if spec.startswith("pipe:") else spec)
    if spec.startswith("pipe:"):
        names, bases = [], set()
        for command in braceexpand.braceexpand(spec):
            tokens = _TAR_TOKEN.findall(command)
            if not tokens:
                raise RemoteError(f"{spec}: a pipe: location needs the shard's .tar name in the command")
            token = tokens[-1]
            name = token.rsplit("/", 1)[-1]
            names.append(name)
            bases.add(command.replace(token, token[: len(token) - len(name)] + "{name}"))
        if len(bases) != 1:
            raise RemoteError(f"{spec}: the expanded commands differ in more than the shard name")
        return Location(spec, bases.pop(), names)
    has_pattern = "{" in spec and ".." in spec
    if has_pattern:
        urls = list(braceexpand.braceexpand(spec))
        dirs = {u.rsplit("/", 1)[0] for u in urls}
        if len(dirs) != 1:
            raise RemoteError(f"{spec}: all shards of one pattern must be in one directory, got {sorted(dirs)}")
        return Location(spec, dirs.pop(), [u.rsplit("/", 1)[1] for u in urls])
    if spec.endswith(".json"):
        return Location(spec, spec.rsplit("/", 1)[0])
    return Location(spec, spec.rstrip("/"))
