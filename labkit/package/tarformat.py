"""The tar format the model archive is written in: ustar headers, pax records, block padding.

Every field is fixed (mode, owner, mtime), so an archive's bytes depend on its members only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# 1980-01-01T00:00:00Z, the floor reproducible builds use for wheels: fixed, and unlike 0 a time
# every archive format can hold (zip cannot store anything earlier).
MTIME = 315532800
BLOCK = 512
# GNU tar and Python's tarfile pad the archive to whole 10 KiB records; so do we.
RECORD = 20 * BLOCK

_MODES = {"dir": 0o755, "file": 0o644, "symlink": 0o777}
_TYPEFLAGS = {"file": b"0", "symlink": b"2", "dir": b"5"}

Kind = Literal["dir", "file", "symlink"]


@dataclass(frozen=True)
class TarMember:
    """One archive entry: a directory, a file (a blob or generated text) or a symlink."""

    name: str
    kind: Kind
    size: int = 0
    linkname: str = ""
    source: Path | None = None
    data: bytes | None = None
    etag: str | None = None
    blob: str | None = None


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _total(body: int) -> int:
    """Archive size: the members, two zero blocks, padded to whole records."""
    return -(-(body + 2 * BLOCK) // RECORD) * RECORD


def _header(m: TarMember) -> bytes:
    """The member's header: a ustar block, after a pax block when a field does not fit ustar."""
    name = m.name + "/" if m.kind == "dir" else m.name
    pax: dict[str, str] = {}
    name_b = name.encode()
    if len(name_b) > 100 or not name.isascii():
        pax["path"] = name
        name_b = name.encode("ascii", "replace")[:100]
    link_b = m.linkname.encode()
    if len(link_b) > 100 or not m.linkname.isascii():
        pax["linkpath"] = m.linkname
        link_b = m.linkname.encode("ascii", "replace")[:100]
    size = m.size
    if size >= 8**11:  # 8 GiB: the ustar size field's limit
        pax["size"] = str(size)
        size = 0
    header = _ustar(name_b, _MODES[m.kind], MTIME, size, _TYPEFLAGS[m.kind], link_b)
    if not pax:
        return header
    records = b"".join(_pax_record(k, v) for k, v in pax.items())  # path, linkpath, size
    # Exactly the block Python's tarfile writes: a fixed name, mode and mtime 0 (GNU tar's
    # default name embeds the process id, which would make the bytes vary).
    ext = _ustar(b"././@PaxHeader", 0, 0, len(records), b"x", b"")
    return ext + records + bytes(_padded(len(records)) - len(records)) + header


def _ustar(
    name: bytes, mode: int, mtime: int, size: int, typeflag: bytes, linkname: bytes
) -> bytes:
    buf = b"".join(
        (
            name.ljust(100, b"\0"),
            b"%07o\0" % mode,
            b"%07o\0" % 0,  # uid
            b"%07o\0" % 0,  # gid
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b" " * 8,  # checksum, computed over the header with this field as spaces
            typeflag,
            linkname.ljust(100, b"\0"),
            b"ustar\x0000",
            bytes(32),  # uname: empty, so nothing of the packing machine leaks in
            bytes(32),  # gname
            bytes(16),  # devmajor, devminor: empty for anything but a device (as GNU tar does)
            bytes(155),  # prefix: unused, long names go to a pax record instead
            bytes(12),
        )
    )
    return buf[:148] + b"%06o\0 " % sum(buf) + buf[156:]


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body
