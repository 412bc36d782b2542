"""Safe handling of user archives and shard member names (CVE-2007-4559 class of bugs).

Inputs given as ``.tar``/``.tar.gz``/``.tgz``/``.zip`` are extracted into a private folder next to the output,
member by member, after checking every name: absolute paths, ``..`` components, links and device files are
refused with :class:`UnsafeArchiveError` (tar extraction also uses ``filter="data"``). Shard tars are never
extracted; :func:`check_member_name` validates their member names when they are inspected or verified.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


class UnsafeArchiveError(ValueError):
    """An archive or shard holds a member that could escape its folder (absolute, ``..``, link, device)."""


def is_archive(path: Path) -> bool:
    """True for the archive suffixes that :func:`extract_archive` accepts."""
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def check_member_name(name: str, where: str) -> None:
    """Raises :class:`UnsafeArchiveError` for absolute or parent-relative member names."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if not name or posix.is_absolute() or ".." in posix.parts or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{where}: unsafe member name {name!r} (absolute path or '..'); refusing it")


def _check_tar(tar: tarfile.TarFile, where: str) -> None:
    for member in tar.getmembers():
        check_member_name(member.name, where)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(f"{where}: member {member.name!r} is a link; refusing links in archives")
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"{where}: member {member.name!r} is a device/fifo; refusing it")


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extracts a user archive safely into ``dest`` (created fresh) and returns ``dest``.

    Raises:
        UnsafeArchiveError: A member name is absolute or contains ``..``, or a member is a link/device.
        ValueError: The archive is truncated or not an archive (message names the file).
    """
    archive = Path(archive)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    check_member_name(info.filename, str(archive))
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symlink; refusing it")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tar:
                _check_tar(tar, str(archive))
                tar.extractall(dest, filter="data")
    except UnsafeArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        shutil.rmtree(dest, ignore_errors=True)
        raise ValueError(
            f"{archive}: cannot read archive (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err
    return dest
