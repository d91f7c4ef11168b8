"""Error strings of 9P servers <-> Linux errno.

9P2000 servers answer with free text. The table holds the strings real servers send
(the C library's strerror texts, which u9fs, py9p and other Unix servers pass on;
the Plan 9 kernel's, lib9p's, ramfs's, fossil's and cwfs's own words), matched
without regard to case. Text that is not in the table is matched by the phrases
servers build their messages from ("'x' file does not exist"), and failing that it
is EIO: an unknown failure is an I/O error, never success.
"""

from __future__ import annotations

import errno as E
import os

# Plan 9 and Plan 9-derived servers' words (facts gathered from their sources and
# from the Linux client's error table).
_PLAN9 = {
    # Plan 9 kernel (port/error.h), what exportfs passes on
    "file does not exist": E.ENOENT,
    "file already exists": E.EEXIST,
    "not a directory": E.ENOTDIR,
    "file is a directory": E.EISDIR,
    "permission denied": E.EACCES,
    "inappropriate use of fd": E.EBADF,
    "bad arg in system call": E.EINVAL,
    "device or object already in use": E.EBUSY,
    "i/o error": E.EIO,
    "read or write too large": E.EINVAL,
    "read or write too small": E.EINVAL,
    "i/o on hungup channel": E.EPIPE,
    "file name syntax": E.EINVAL,
    "bad character in file name": E.EINVAL,
    "mounted directory forbids creation": E.EACCES,
    "device shut down": E.EIO,
    "interrupted": E.EINTR,
    "connection refused": E.ECONNREFUSED,
    "connection timed out": E.ETIMEDOUT,
    # lib9p (srv.c): Plan 9's and plan9port's synthetic servers
    "unknown fid": E.EBADF,
    "duplicate fid": E.EBADF,
    "duplicate tag": E.EPROTO,
    "bad offset": E.EINVAL,
    "bad count": E.EINVAL,
    "9p protocol botch": E.EPROTO,
    "create in non-directory": E.ENOTDIR,
    "create prohibited": E.EACCES,
    "out of memory": E.ENOMEM,
    "remove prohibited": E.EACCES,
    "stat prohibited": E.EACCES,
    "file not found": E.ENOENT,
    "write prohibited": E.EACCES,
    "read prohibited": E.EACCES,
    "wstat prohibited": E.EPERM,
    "walk in non-directory": E.ENOTDIR,
    "is a directory": E.EISDIR,
    "bad directory in wstat": E.EINVAL,
    "unknown specifier in attach": E.ENOENT,
    # ramfs, fossil, cwfs/kfs, vacfs, u9fs
    "file exists": E.EEXIST,
    "file or directory already exists": E.EEXIST,
    "directory not empty": E.ENOTEMPTY,
    "directory is not empty": E.ENOTEMPTY,
    "file in use": E.EBUSY,
    "file is in use": E.EBUSY,
    "file already open for i/o": E.EBUSY,
    "exclusive use file already open": E.EBUSY,
    "exclusive lock": E.EBUSY,
    "not owner": E.EPERM,
    "illegal name": E.EINVAL,
    "illegal mode": E.EINVAL,
    "illegal offset": E.EINVAL,
    "illegal path element": E.ENOENT,
    "fid unknown or out of range": E.EBADF,
    "bad use of fid": E.EBADF,
    "fid already in use": E.EBADF,
    "read/write -- on non open fid": E.EBADF,
    "open/create -- unknown mode": E.EINVAL,
    "read/write -- count too big": E.EINVAL,
    "walk -- in a non-directory": E.ENOTDIR,
    "bad offset in directory read": E.EINVAL,
    "authentication failed": E.EACCES,
    "authentication required": E.EPERM,
    "prior auth required": E.EPERM,  # diod's words, in its .u days
    "file system full": E.ENOSPC,
    "file system is full": E.ENOSPC,
    "read only file system": E.EROFS,
    "file is read only": E.EROFS,
    "file has been removed": E.ENOENT,
    "cannot remove root": E.EPERM,
    "file too big": E.EFBIG,
    "only support truncation to zero length": E.EPERM,
    "wstat can't convert between files and directories": E.EPERM,
    "not a member of proposed group": E.EPERM,
    "only owner can change group in wstat": E.EPERM,
    "unknown user": E.EINVAL,
    "unknown group": E.EINVAL,
    "protocol botch": E.EPROTO,
    "directory entry not found": E.ENOENT,
}

# Phrases that servers embed in longer messages, most specific first.
_PHRASES = (
    ("does not exist", E.ENOENT),
    ("no such file", E.ENOENT),
    ("not found", E.ENOENT),
    ("not empty", E.ENOTEMPTY),
    ("already exists", E.EEXIST),
    ("file exists", E.EEXIST),
    ("not a directory", E.ENOTDIR),
    ("is a directory", E.EISDIR),
    ("permission denied", E.EACCES),
    ("access denied", E.EACCES),
    ("read only", E.EROFS),
    ("read-only", E.EROFS),
    ("not supported", E.EOPNOTSUPP),
    ("not implemented", E.ENOSYS),
    ("prohibited", E.EACCES),
    ("not owner", E.EPERM),
    ("in use", E.EBUSY),
    ("bad fid", E.EBADF),
    ("too long", E.ENAMETOOLONG),
    ("no space", E.ENOSPC),
    ("timed out", E.ETIMEDOUT),
    ("authentication failed", E.EACCES),
    ("auth required", E.EPERM),
    ("interrupted", E.EINTR),
)

_BY_TEXT: dict[str, int] = {}
for _n in sorted(E.errorcode):
    _BY_TEXT.setdefault(os.strerror(_n).lower(), _n)
_BY_TEXT.update(_PLAN9)

# What a 9P2000 server of ours says for an errno: Plan 9's own words where Plan 9
# has them (so Plan 9 clients read them naturally), the C library's otherwise.
_TEXT_FOR = {
    E.ENOENT: "file does not exist",
    E.EEXIST: "file already exists",
    E.ENOTDIR: "not a directory",
    E.EISDIR: "file is a directory",
    E.EACCES: "permission denied",
    E.ENOTEMPTY: "directory not empty",
    E.EIO: "i/o error",
    E.EBADF: "unknown fid",
}


def errno_for(ename: str, default: int | None = E.EIO) -> int | None:
    """The Linux errno that best says what a 9P error string means (never 0).

    Text no table or phrase knows gives `default`: EIO, or None for a caller that has
    a number of its own to fall back on (a .u errno).
    """
    text = ename.strip().lower()
    n = _BY_TEXT.get(text)
    if n:
        return n
    for phrase, n in _PHRASES:
        if phrase in text:
            return n
    return default


def ename_for(errno: int) -> str:
    """The error string to send for errno on a 9P2000 connection."""
    return _TEXT_FOR.get(errno) or os.strerror(errno)
