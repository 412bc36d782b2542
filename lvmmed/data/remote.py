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

``pipe:`` runs a shell command (webdataset's design): use it only with configs you trust. A location whose last
part is a ``.tar`` name, with or without braces (``{000..004}`` or ``{train,val}``), is a pattern.

**Timeouts.** webdataset's own ``http(s)`` handler runs ``curl`` with 30 retries and no read timeout, so a
server that accepts the connection and then stalls would hang a run for ever. Ours (:func:`gopen_http`) runs
curl with ``--speed-limit 1 --speed-time T`` (abort when no byte arrives for T seconds), ``--connect-timeout T``
and ``--retry R`` (curl retries only transient failures: timeouts, HTTP 408/429/5xx), with T =
``LVMMED_REMOTE_TIMEOUT`` (default 60 s) and R = ``LVMMED_REMOTE_RETRIES`` (default 3); the variables are
inherited by DataLoader workers. Failures are described in words (HTTP error, connection refused, unknown host,
timed out) from curl's exit status.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import braceexpand
from webdataset.gopen import Pipe, gopen, gopen_schemes

from lvmmed.errors import InputError, OutputError, UsageError

MANIFEST = "manifest.json"

# fsspec protocol -> the package that implements it (the ``remote`` extra installs them).
FSSPEC_BACKENDS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
SCHEMES = ("http", "https", "file", *FSSPEC_BACKENDS)  # and pipe:
_TAR_TOKEN = re.compile(r"[^\s'\"]+\.tar\b")
_CURL_EXIT = {  # curl(1) EXIT CODES, the ones a shard read meets
    6: "unknown host (DNS lookup failed)",
    7: "connection refused (is the server running?)",
    22: "HTTP error (404 not found, 403 forbidden, ...)",
    18: "the transfer ended early (partial file)",
    28: "timed out (no data for LVMMED_REMOTE_TIMEOUT seconds)",
    35: "TLS handshake failed",
    52: "the server sent nothing",
    56: "the connection was dropped",
    60: "the server's TLS certificate was not trusted",
}


def is_remote(location: str) -> bool:
    """True for URLs (``scheme://``) and ``pipe:`` commands, False for local paths."""
    return location.startswith("pipe:") or "://" in location


def is_pattern(location: str) -> bool:
    """True for brace patterns and single ``.tar`` names (a location that lists shards rather than a set)."""
    last = location.rstrip("/").rsplit("/", 1)[-1]
    return "{" in location or last.endswith(".tar")


def scheme(location: str) -> str:
    if location.startswith("pipe:"):
        return "pipe"
    return location.split("://", 1)[0].lower() if "://" in location else ""


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw: object):
    import fsspec

    return fsspec.open(url, mode).open()


def _env_number(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return max(0, int(value)) if value else default
    except ValueError:
        raise UsageError(
            f"{name}={value!r} is not a whole number", fix=f"unset {name} or give seconds/counts"
        ) from None


def gopen_http(url: str, mode: str = "rb", bufsize: int = 8192, **kw: object) -> Pipe:
    """webdataset ``gopen`` handler for ``http(s)://`` reads: curl with a stall timeout and few retries (module doc)."""
    if mode[0] != "r":
        raise UsageError(f"{url}: lvmmed only reads remote shards", fix="write shards locally, then upload them")
    timeout = str(max(1, _env_number("LVMMED_REMOTE_TIMEOUT", 60)))
    retries = str(_env_number("LVMMED_REMOTE_RETRIES", 3))
    command = ["curl", "--connect-timeout", timeout, "--speed-limit", "1", "--speed-time", timeout]
    command += ["--retry", retries, "--retry-delay", "2", "-f", "-s", "-L", url]
    return Pipe(command, mode=mode, bufsize=bufsize, ignore_status=[141, 23])


def register_handlers() -> None:
    """Installs :func:`gopen_http` for ``http``/``https`` in webdataset (per process; idempotent)."""
    gopen_schemes["http"] = gopen_http
    gopen_schemes["https"] = gopen_http


def describe_failure(err: BaseException) -> str:
    """A read failure in words: curl's and shell commands' exit statuses are named, anything else is kept."""
    text = str(err)
    match = re.search(r"exit (\d+)", text)
    if match and "curl" in text:
        code = int(match.group(1))
        return f"curl exit {code}: {_CURL_EXIT.get(code, 'see curl(1), EXIT CODES')}"
    if match:
        return f"the command exited with status {match.group(1)}"
    return text


def require_backend(location: str) -> None:
    """Checks that the fsspec backend for an object-store URL is importable and registers it with webdataset.

    Raises:
        RemoteError: The backend package (``s3fs``, ``gcsfs``) or fsspec itself is not installed.
    """
    proto = scheme(location)
    if proto in ("http", "https"):
        register_handlers()
    if proto not in FSSPEC_BACKENDS:
        return
    package = FSSPEC_BACKENDS[proto]
    try:
        import fsspec

        fsspec.get_filesystem_class(proto)
    except ImportError:
        raise RemoteError(
            f"{location}: reading {proto}:// shards needs the fsspec backend package `{package}`, which is not "
            "installed",
            fix=f"pip install {package} (or the extra: pip install 'lvmmed[remote]')",
        ) from None
    gopen_schemes[proto] = _gopen_fsspec


class RemoteError(InputError, ValueError):
    """A remote shard-set location cannot be used (missing backend package, unreadable manifest) (exit 1)."""

    default_fix = "check the URL, and that the server or bucket is reachable from this machine"


class LocationError(UsageError, ValueError):
    """A shard-set location that is malformed: unknown scheme, bad pattern, ``pipe:`` without a shard name (exit 2)."""

    default_fix = (
        f"use a directory, {', '.join(s + '://' for s in SCHEMES)} or pipe: (docs/pretrain.md, remote shard sets)"
    )


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
        raise RemoteError(f"cannot read {url}: {describe_failure(err)}") from None
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
        LocationError: An unknown scheme, a pattern whose expansions do not share one directory (or, for ``pipe:``,
            one command template), or a ``pipe:`` command without a ``.tar`` name.
        RemoteError: The fsspec backend of an object-store URL is not installed.
    """
    if not spec.startswith("pipe:") and "://" in spec and scheme(spec) not in SCHEMES:
        raise LocationError(f"{spec}: unsupported scheme {scheme(spec)}://")
    require_backend(spec.removeprefix("pipe:").strip() if spec.startswith("pipe:") else spec)
    if spec.startswith("pipe:"):
        names, bases = [], set()
        for command in braceexpand.braceexpand(spec):
            tokens = _TAR_TOKEN.findall(command)
            if not tokens:
                raise LocationError(
                    f"{spec}: a pipe: location needs the shard's .tar name in the command",
                    fix="e.g. 'pipe:curl -s https://host/set/train-{000000..000009}.tar'",
                )
            token = tokens[-1]
            name = token.rsplit("/", 1)[-1]
            names.append(name)
            bases.add(command.replace(token, token[: len(token) - len(name)] + "{name}"))
        if len(bases) != 1:
            raise LocationError(f"{spec}: the expanded commands differ in more than the shard name")
        return Location(spec, bases.pop(), names)
    if is_pattern(spec):
        urls = list(braceexpand.braceexpand(spec))
        dirs = {u.rsplit("/", 1)[0] for u in urls}
        if len(dirs) != 1:
            raise LocationError(
                f"{spec}: all shards of one pattern must be in one directory, got {sorted(dirs)}",
                fix="give one pattern per shard set",
            )
        return Location(spec, dirs.pop(), [u.rsplit("/", 1)[1] for u in urls])
    if spec.endswith(".json"):
        return Location(spec, spec.rsplit("/", 1)[0])
    return Location(spec, spec.rstrip("/"))


def cache_name(url: str) -> str:
    """File name of a remote shard in ``data.cache_dir``: a hash of the whole URL, then its base name (webdataset's
    default keeps only the base name, so ``a/set1/train-000000.tar`` and ``b/set2/train-000000.tar`` collided)."""
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{url.rstrip('/').rsplit('/', 1)[-1]}"


def check_cache_dir(cache_dir: str) -> None:
    """Creates ``data.cache_dir`` if needed and checks that it is a writable directory.

    Raises:
        OutputError: It is a file, or cannot be created or written.
    """
    if not cache_dir:
        return
    path = Path(cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".lvmmed-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(
            f"data.cache_dir {cache_dir} is not a writable directory: {err.strerror or err}",
            fix="point data.cache_dir at a writable directory, or leave it empty to stream without a cache",
        ) from None
