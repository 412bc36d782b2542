"""Tar member bytes of one sample, byte-identical to ``webdataset.TarWriter`` (a streamed ``tarfile``, PAX format).

A member is its header blocks, its data and NUL padding to the 512-byte block (the tar format:
https://www.gnu.org/software/tar/manual/html_node/Standard.html). With the fixed mtime (a float, so ``tarfile``
adds a pax ``mtime`` record), mode and owner used here, the header blocks of two members of the same size differ
only in the member name and the checksum, and both sit in the last (ustar) block. ``tarfile`` builds every header
in Python (about 20 µs a member); :func:`member_header` asks ``tarfile`` once per member size, with an empty name,
and fills in the name and the checksum (the sum of the block's bytes, the checksum field counted as spaces). Names
``tarfile`` would move into a pax record (non-ASCII, over 100 bytes) take ``tarfile``'s own path, and so does
everything when the self-check at import (a filled-in header against ``tarfile``'s) finds another layout.
"""

from __future__ import annotations

import tarfile
from functools import lru_cache

TAR_MTIME = 946684800.0  # fixed member mtime (2000-01-01) so identical inputs give identical shard bytes
TAR_MODE = 0o444  # as webdataset.TarWriter
TAR_OWNER = "lvmmed"
_NAME_FIELD = 100  # bytes 0-99 of a ustar block: the name; 148-155: the checksum ("%06o\0 ")
_BLOCK = tarfile.BLOCKSIZE


def tarfile_header(name: str, size: int) -> bytes:
    """The header blocks ``tarfile`` writes for a regular member ``name`` of ``size`` bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, TAR_MTIME, TAR_MODE
    info.uname = info.gname = TAR_OWNER
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@lru_cache(maxsize=1024)
def _template(size: int) -> tuple[bytes, bytes, int] | None:
    """``(blocks before the ustar block, its bytes past the name with a blank checksum, their sum)`` or None."""
    blocks = tarfile_header("", size)
    last = blocks[-_BLOCK:]
    if last[:_NAME_FIELD] != tarfile.NUL * _NAME_FIELD:
        return None
    rest = last[_NAME_FIELD:148] + b" " * 8 + last[156:]
    return blocks[:-_BLOCK], rest, sum(rest)


def _filled_in(name: str, size: int) -> bytes | None:
    raw = name.encode("ascii") if name.isascii() else b""
    template = _template(size) if 0 < len(raw) <= _NAME_FIELD else None
    if template is None:
        return None
    before, rest, total = template
    checksum = b"%06o\0 " % (total + sum(raw))
    return b"".join((before, raw, tarfile.NUL * (_NAME_FIELD - len(raw)), rest[:48], checksum, rest[56:]))


def _self_check() -> bool:
    probes = [("i000000_a2_s00017.image.npy", 100480), ("k.meta.json", 431), ("x" * 100, 0)]
    return all(_filled_in(name, size) == tarfile_header(name, size) for name, size in probes)


_FILL_IN = _self_check()


def member_header(name: str, size: int) -> bytes:
    """The header blocks of a member (``tarfile``'s bytes, without building them in ``tarfile`` each time)."""
    header = _filled_in(name, size) if _FILL_IN else None
    return header if header is not None else tarfile_header(name, size)


def sample_tar(key: str, members: dict[str, bytes]) -> bytes:
    """The tar bytes of a sample: its members in sorted field order (as ``webdataset.TarWriter`` writes them)."""
    parts = []
    for field_name in sorted(members):
        data = members[field_name]
        parts += (member_header(f"{key}.{field_name}", len(data)), data, tarfile.NUL * (-len(data) % _BLOCK))
    return b"".join(parts)


def end_of_archive(offset: int) -> bytes:
    """The two zero blocks that end an archive of ``offset`` bytes, padded to a whole tar record."""
    tail = tarfile.NUL * (2 * _BLOCK)
    return tail + tarfile.NUL * (-(offset + len(tail)) % tarfile.RECORDSIZE)
