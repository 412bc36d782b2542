"""Pseudonymisation: salted hashes of patient/volume identifiers and an allow-list for sample metadata.

De-identification here is by construction: readers keep raw identifiers in
``ImageRecord.identity`` and everything written to a shard passes :func:`sanitize_meta`, which keeps only
:data:`lvmmed.data.shards.META_FIELDS` and JSON-native values. Identifiers are replaced by
``HMAC-SHA256(salt, value)`` hex prefixes (a keyed, salted SHA-256): stable for one salt, so patient-level splits
are reproducible, and not reversible by a dictionary attack without the salt. The salt comes from the
``LVMMED_SALT`` environment variable or a private salt file (mode 0600) created on first use; it is never written
into shards or manifests. Burned-in pixel text cannot be found from headers (pydicom#375): readers flag
``meta["burned_in_risk"]`` and data_prep decides what to exclude.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.data.shards import META_FIELDS

SALT_ENV = "LVMMED_SALT"
DEFAULT_SALT_FILE = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "lvmmed" / "salt"
MIN_SALT_CHARS = 16


def pseudonym(value: str, salt: str, length: int = 16) -> str:
    """Stable salted SHA-256 (HMAC) hex prefix of ``value``.

    Args:
        value: The identifier (patient id, series UID, ...).
        salt: Secret salt from :func:`load_salt`.
        length: Hex characters kept (16 = 64 bits; collisions are negligible for any realistic collection).
    """
    if not salt:
        raise ValueError("an empty salt would make pseudonyms reversible by dictionary attack")
    if not 8 <= length <= 64:
        raise ValueError(f"length must be in [8, 64], got {length}")
    return hmac.new(salt.encode(), str(value).encode(), hashlib.sha256).hexdigest()[:length]


def load_salt(path_or_env: str | os.PathLike | None = None) -> str:
    """Returns the pseudonymisation salt.

    Resolution order: ``path_or_env`` as ``"env:NAME"`` reads environment variable NAME (error if unset);
    otherwise the ``LVMMED_SALT`` environment variable if set; otherwise the salt file ``path_or_env`` (default
    ``$XDG_CONFIG_HOME/lvmmed/salt``), created with 32 random bytes (hex) and mode 0600 on first use.

    Raises:
        ValueError: the named variable is unset, or the salt is shorter than 16 characters.
    """
    if isinstance(path_or_env, str) and path_or_env.startswith("env:"):
        name = path_or_env[4:]
        salt = os.environ.get(name)
        if not salt:
            raise ValueError(f"environment variable {name} holding the salt is not set")
        return _checked(salt, name)
    if os.environ.get(SALT_ENV):
        return _checked(os.environ[SALT_ENV], SALT_ENV)
    path = Path(path_or_env) if path_or_env is not None else DEFAULT_SALT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_salt_file(path)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        warnings.warn(f"salt file {path} is readable by other users; chmod 600 it", stacklevel=2)
    return _checked(path.read_text().strip(), str(path))


def _create_salt_file(path: Path) -> None:
    """Writes a fresh salt atomically: concurrent first uses (worker pools) all end up with the same salt."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process created the salt first: theirs wins
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _checked(salt: str, where: str) -> str:
    if len(salt) < MIN_SALT_CHARS:
        raise ValueError(f"salt from {where} is shorter than {MIN_SALT_CHARS} characters")
    return salt


def _json_native(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _json_native(value.tolist())
    if isinstance(value, np.generic):
        return _json_native(value.item())
    if isinstance(value, (list, tuple)):
        return [_json_native(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"meta value of type {type(value).__name__} is not allowed in a shard")


def sanitize_meta(meta: dict) -> dict:
    """Keeps only :data:`~lvmmed.data.shards.META_FIELDS` (in that order) with JSON-native values."""
    return {key: _json_native(meta[key]) for key in META_FIELDS if key in meta}


def identity_hashes(record, salt: str, length: int = 16) -> dict[str, str]:
    """``{"patient": ..., "volume": ...}`` pseudonyms for an :class:`~lvmmed.data.readers.ImageRecord`.

    Patient key: PatientID, else PatientName + BirthDate, else StudyInstanceUID, else the volume key.
    Volume key: SeriesInstanceUID (plus SOPInstanceUID when the record comes from one file), else the
    source path (anonymous NIfTI/PNG sources: one "patient" per file, a choice callers can override by
    grouping). Only hashes leave this function.
    """
    ident = record.identity or {}
    volume_key = ident.get("series_uid")
    if volume_key and ident.get("instance_uid"):
        volume_key = f"{volume_key}/{ident['instance_uid']}"
    if not volume_key:
        volume_key = "path:" + str(record.meta.get("source", ""))
    if ident.get("patient_id"):
        patient_key = "id:" + ident["patient_id"]
    elif ident.get("patient_name"):
        patient_key = "name:" + ident["patient_name"] + "|" + ident.get("birth_date", "")
    elif ident.get("study_uid"):
        patient_key = "study:" + ident["study_uid"]
    else:
        patient_key = "volume:" + volume_key
    return {"patient": pseudonym(patient_key, salt, length), "volume": pseudonym(volume_key, salt, length)}
