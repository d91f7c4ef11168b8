"""Directory entries: the 9P2000/.u stat record (stat(5)) and the .L readdir entry."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import NONUNAME, P9_2000_U
from .errors import ProtocolError
from .wire import U16, Qid, Reader, encode_str

# type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8]
_STAT_FIXED = struct.Struct("<HIBIQIIIQ")
_STAT_U_TAIL = struct.Struct("<III")  # n_uid n_gid n_muid
_DIRENT_FIXED = struct.Struct("<BIQQB")  # qid offset[8] type[1]

_NOT8 = 0xFFFFFFFFFFFFFFFF
_NOT4 = 0xFFFFFFFF


@dataclass(slots=True)
class Stat:
    """One stat record. In 9P2000 the .u fields stay at their defaults and are not sent."""

    type: int
    dev: int
    qid: Qid
    mode: int
    atime: int
    mtime: int
    length: int
    name: str
    uid: str
    gid: str
    muid: str
    extension: str | None = ""  # None: a .u record without its .u part (py9p -D sends them)
    n_uid: int = NONUNAME
    n_gid: int = NONUNAME
    n_muid: int = NONUNAME

    @classmethod
    def dont_touch(cls, **changes) -> "Stat":
        """A wstat record that changes only `changes` (stat(5): ~0 and "" mean keep).

        With no changes it asks the server to commit the file to stable storage.
        """
        st = cls(0xFFFF, _NOT4, Qid(0xFF, _NOT4, _NOT8), _NOT4, _NOT4, _NOT4, _NOT8,
                 "", "", "", "", "", _NOT4, _NOT4, _NOT4)
        for k, v in changes.items():
            setattr(st, k, v)
        return st


def pack_stat(st: Stat, dialect: str) -> bytes:
    """The record with its leading size[2], as it sits in Rstat, Twstat and directory reads."""
    try:
        body = [_STAT_FIXED.pack(st.type, st.dev, *st.qid, st.mode, st.atime, st.mtime, st.length),
                encode_str(st.name), encode_str(st.uid), encode_str(st.gid), encode_str(st.muid)]
        if dialect == P9_2000_U and st.extension is not None:
            body += [encode_str(st.extension), _STAT_U_TAIL.pack(st.n_uid, st.n_gid, st.n_muid)]
    except struct.error as e:
        raise ProtocolError(f"stat {st.name!r}: {e}") from None
    b = b"".join(body)
    if len(b) > 0xFFFF:
        raise ProtocolError(f"stat {st.name!r} is {len(b)} bytes, more than 65535")
    return U16.pack(len(b)) + b


def read_stat(r: Reader, dialect: str) -> Stat:
    """Read one size-prefixed record; its size must hold its fields exactly."""
    size = r.u16("stat size")
    r.need(size, "stat record")
    end = r.pos + size
    inner = Reader(r.buf, r.pos, end, r.what + " stat")
    t, dev, qt, qv, qp, mode, atime, mtime, length = inner.fixed(_STAT_FIXED, "stat fields")
    names = [inner.string(f) for f in ("name", "uid", "gid", "muid")]
    st = Stat(t, dev, Qid(qt, qv, qp), mode, atime, mtime, length, *names)
    if dialect == P9_2000_U and inner.pos == end:
        st.extension = None  # a plain 9P2000 record on a .u connection: tolerated
    elif dialect == P9_2000_U:
        st.extension = inner.string("extension")
        st.n_uid, st.n_gid, st.n_muid = inner.fixed(_STAT_U_TAIL, "n_uid n_gid n_muid")
    if inner.pos != end:
        raise inner.fail(f"stat size {size} leaves {end - inner.pos} bytes unused")
    r.pos = end
    return st


def unpack_stats(data: bytes, dialect: str) -> list[Stat]:
    """The entries of a 9P2000/.u directory read (Rread data: whole stat records)."""
    r = Reader(data, 0, len(data), "directory data")
    out = []
    while r.pos < r.end:
        out.append(read_stat(r, dialect))
    return out


def pack_stats(stats: list[Stat], dialect: str) -> bytes:
    return b"".join(pack_stat(st, dialect) for st in stats)


@dataclass(slots=True)
class Dirent:
    """One 9P2000.L Rreaddir entry; offset is what the next Treaddir passes to go on."""

    qid: Qid
    offset: int
    type: int  # the d_type of Linux (DT_DIR 4, DT_REG 8, ...)
    name: str


def unpack_dirents(data: bytes) -> list[Dirent]:
    r = Reader(data, 0, len(data), "readdir data")
    out = []
    while r.pos < r.end:
        qt, qv, qp, off, dt = r.fixed(_DIRENT_FIXED, "dirent")
        out.append(Dirent(Qid(qt, qv, qp), off, dt, r.string("dirent name")))
    return out


def pack_dirents(entries: list[Dirent]) -> bytes:
    try:
        return b"".join(_DIRENT_FIXED.pack(*e.qid, e.offset, e.type) + encode_str(e.name)
                        for e in entries)
    except struct.error as e:
        raise ProtocolError(f"dirent: {e}") from None

