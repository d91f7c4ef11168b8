"""Every 9P2000, 9P2000.u and 9P2000.L message, and its encoding for each dialect.

One table describes each message once: its number, the dialects that have it, and
its fields in wire order. A field that only some dialects carry (n_uname, the .u
errno, Tcreate's extension) names those dialects and has a default, so the same
message class serves every dialect and `decode(encode(m, d), d) == m` holds for a
message whose dialect-only fields are at their defaults where the dialect lacks them.

Field kinds: u8 u16 u32 u64 (little-endian), u32? (a last u32 that may be absent:
None), qid (13 bytes), str (len[2] UTF-8),
wnames (n[2] then n strings, n <= 16), wqids (n[2] then n qids, n <= 16),
data (count[4] then count bytes; count is derived from the bytes), stat (n[2] then
one stat record, laid out by dialect).
"""

from __future__ import annotations

import struct
from dataclasses import field, make_dataclass
from typing import Any

from .constants import DIALECTS, MAXWELEM, NONUNAME, NOTAG, P9_2000, P9_2000_L, P9_2000_U
from .errors import ProtocolError
from .stat import Stat, pack_stat, read_stat
from .wire import FIXED_FORMATS, QID, U16, U32, Qid, Reader, encode_str

HEADER = struct.Struct("<IBH")  # size[4] type[1] tag[2]

ALL = DIALECTS
CLASSIC = (P9_2000, P9_2000_U)  # the messages 9P2000.L dropped (open, create, stat, wstat)
UL = (P9_2000_U, P9_2000_L)  # dialects with n_uname
U = (P9_2000_U,)
L = (P9_2000_L,)

# (type, name, dialects, fields); a field is (name, kind) or (name, kind, default, dialects).
_TABLE: list[tuple[int, str, tuple, list]] = [
    # 9P2000 and what .u adds to it (intro(5); the 9P2000.u draft)
    (100, "Tversion", ALL, [("msize", "u32"), ("version", "str")]),
    (101, "Rversion", ALL, [("msize", "u32"), ("version", "str")]),
    (102, "Tauth", ALL, [("afid", "u32"), ("uname", "str"), ("aname", "str"),
                         ("n_uname", "u32", NONUNAME, UL)]),
    (103, "Rauth", ALL, [("aqid", "qid")]),
    (104, "Tattach", ALL, [("fid", "u32"), ("afid", "u32"), ("uname", "str"), ("aname", "str"),
                           ("n_uname", "u32", NONUNAME, UL)]),
    (105, "Rattach", ALL, [("qid", "qid")]),
    # In .L a type-107 reply carries only an errno (nfs-ganesha sends it; Linux reads it
    # so). The .u errno is optional: py9p leaves it out of some of its Rerrors.
    (107, "Rerror", ALL, [("ename", "str", "", CLASSIC), ("errno", "u32?", None, UL)]),
    (108, "Tflush", ALL, [("oldtag", "u16")]),
    (109, "Rflush", ALL, []),
    (110, "Twalk", ALL, [("fid", "u32"), ("newfid", "u32"), ("wnames", "wnames")]),
    (111, "Rwalk", ALL, [("wqids", "wqids")]),
    (112, "Topen", CLASSIC, [("fid", "u32"), ("mode", "u8")]),
    (113, "Ropen", CLASSIC, [("qid", "qid"), ("iounit", "u32")]),
    (114, "Tcreate", CLASSIC, [("fid", "u32"), ("name", "str"), ("perm", "u32"), ("mode", "u8"),
                               ("extension", "str", "", U)]),
    (115, "Rcreate", CLASSIC, [("qid", "qid"), ("iounit", "u32")]),
    (116, "Tread", ALL, [("fid", "u32"), ("offset", "u64"), ("count", "u32")]),
    (117, "Rread", ALL, [("data", "data")]),
    (118, "Twrite", ALL, [("fid", "u32"), ("offset", "u64"), ("data", "data")]),
    (119, "Rwrite", ALL, [("count", "u32")]),
    (120, "Tclunk", ALL, [("fid", "u32")]),
    (121, "Rclunk", ALL, []),
    (122, "Tremove", ALL, [("fid", "u32")]),
    (123, "Rremove", ALL, []),
    (124, "Tstat", CLASSIC, [("fid", "u32")]),
    (125, "Rstat", CLASSIC, [("stat", "stat")]),
    (126, "Twstat", CLASSIC, [("fid", "u32"), ("stat", "stat")]),
    (127, "Rwstat", CLASSIC, []),
    # 9P2000.L (the draft in ericvh/9p-rfc; Linux include/net/9p/9p.h for numbers)
    (7, "Rlerror", L, [("ecode", "u32")]),
    (8, "Tstatfs", L, [("fid", "u32")]),
    (9, "Rstatfs", L, [("type", "u32"), ("bsize", "u32"), ("blocks", "u64"), ("bfree", "u64"),
                       ("bavail", "u64"), ("files", "u64"), ("ffree", "u64"), ("fsid", "u64"),
                       ("namelen", "u32")]),
    (12, "Tlopen", L, [("fid", "u32"), ("flags", "u32")]),
    (13, "Rlopen", L, [("qid", "qid"), ("iounit", "u32")]),
    (14, "Tlcreate", L, [("fid", "u32"), ("name", "str"), ("flags", "u32"), ("mode", "u32"),
                         ("gid", "u32")]),
    (15, "Rlcreate", L, [("qid", "qid"), ("iounit", "u32")]),
    (16, "Tsymlink", L, [("fid", "u32"), ("name", "str"), ("symtgt", "str"), ("gid", "u32")]),
    (17, "Rsymlink", L, [("qid", "qid")]),
    (18, "Tmknod", L, [("dfid", "u32"), ("name", "str"), ("mode", "u32"), ("major", "u32"),
                       ("minor", "u32"), ("gid", "u32")]),
    (19, "Rmknod", L, [("qid", "qid")]),
    (20, "Trename", L, [("fid", "u32"), ("dfid", "u32"), ("name", "str")]),
    (21, "Rrename", L, []),
    (22, "Treadlink", L, [("fid", "u32")]),
    (23, "Rreadlink", L, [("target", "str")]),
    (24, "Tgetattr", L, [("fid", "u32"), ("request_mask", "u64")]),
    (25, "Rgetattr", L, [("valid", "u64"), ("qid", "qid"), ("mode", "u32"), ("uid", "u32"),
                         ("gid", "u32"), ("nlink", "u64"), ("rdev", "u64"), ("size", "u64"),
                         ("blksize", "u64"), ("blocks", "u64"),
                         ("atime_sec", "u64"), ("atime_nsec", "u64"),
                         ("mtime_sec", "u64"), ("mtime_nsec", "u64"),
                         ("ctime_sec", "u64"), ("ctime_nsec", "u64"),
                         ("btime_sec", "u64"), ("btime_nsec", "u64"),
                         ("gen", "u64"), ("data_version", "u64")]),
    (26, "Tsetattr", L, [("fid", "u32"), ("valid", "u32"), ("mode", "u32"), ("uid", "u32"),
                         ("gid", "u32"), ("size", "u64"),
                         ("atime_sec", "u64"), ("atime_nsec", "u64"),
                         ("mtime_sec", "u64"), ("mtime_nsec", "u64")]),
    (27, "Rsetattr", L, []),
    (30, "Txattrwalk", L, [("fid", "u32"), ("newfid", "u32"), ("name", "str")]),
    (31, "Rxattrwalk", L, [("size", "u64")]),
    (32, "Txattrcreate", L, [("fid", "u32"), ("name", "str"), ("attr_size", "u64"),
                             ("flags", "u32")]),
    (33, "Rxattrcreate", L, []),
    (40, "Treaddir", L, [("fid", "u32"), ("offset", "u64"), ("count", "u32")]),
    (41, "Rreaddir", L, [("data", "data")]),
    (50, "Tfsync", L, [("fid", "u32"), ("datasync", "u32")]),
    (51, "Rfsync", L, []),
    (52, "Tlock", L, [("fid", "u32"), ("type", "u8"), ("flags", "u32"), ("start", "u64"),
                      ("length", "u64"), ("proc_id", "u32"), ("client_id", "str")]),
    (53, "Rlock", L, [("status", "u8")]),
    (54, "Tgetlock", L, [("fid", "u32"), ("type", "u8"), ("start", "u64"), ("length", "u64"),
                         ("proc_id", "u32"), ("client_id", "str")]),
    (55, "Rgetlock", L, [("type", "u8"), ("start", "u64"), ("length", "u64"), ("proc_id", "u32"),
                         ("client_id", "str")]),
    (70, "Tlink", L, [("dfid", "u32"), ("fid", "u32"), ("name", "str")]),
    (71, "Rlink", L, []),
    (72, "Tmkdir", L, [("dfid", "u32"), ("name", "str"), ("mode", "u32"), ("gid", "u32")]),
    (73, "Rmkdir", L, [("qid", "qid")]),
    (74, "Trenameat", L, [("olddirfid", "u32"), ("oldname", "str"), ("newdirfid", "u32"),
                          ("newname", "str")]),
    (75, "Rrenameat", L, []),
    (76, "Tunlinkat", L, [("dirfid", "u32"), ("name", "str"), ("flags", "u32")]),
    (77, "Runlinkat", L, []),
]

_PYTYPES = {"u8": int, "u16": int, "u32": int, "u64": int, "u32?": int, "qid": Qid, "str": str,
            "wnames": list, "wqids": list, "data": bytes, "stat": Stat}


class Message:
    """Base of every message class; each has TYPE, FIELDS, DIALECTS, and a `tag`.

    `extra` holds bytes a peer sent after the last field. They are tolerated (aio9p
    appends an errno to 9P2000 Rerrors, as the Linux client tolerates) and kept, so
    re-encoding a captured message gives back the same bytes.
    """

    __slots__ = ()
    TYPE: int
    NAME: str
    FIELDS: tuple
    DIALECTS: tuple


def _make_class(type_: int, name: str, dialects: tuple, fields: list) -> type:
    specs = []
    for f in fields:
        fname, kind = f[0], f[1]
        if len(f) == 2:
            specs.append((fname, _PYTYPES[kind]))
        else:
            specs.append((fname, _PYTYPES[kind], field(default=f[2])))
    specs.append(("tag", int, field(default=NOTAG, kw_only=True)))
    specs.append(("extra", bytes, field(default=b"", kw_only=True, repr=False)))
    norm = tuple((f[0], f[1], f[3] if len(f) == 4 else ALL) for f in fields)
    return make_dataclass(name, specs, bases=(Message,), slots=True,
                          namespace={"TYPE": type_, "NAME": name, "FIELDS": norm,
                                     "DIALECTS": dialects, "__module__": __name__})


class _Layout:
    """One message's wire layout in one dialect: runs of fixed fields become one struct."""

    __slots__ = ("cls", "steps")

    def __init__(self, cls: type, dialect: str):
        self.cls = cls
        self.steps: list[tuple] = []
        run: list[tuple[str, str]] = []
        for fname, kind, dialects in cls.FIELDS:
            if dialect not in dialects:
                continue
            if kind in FIXED_FORMATS:
                run.append((fname, kind))
                continue
            self._flush(run)
            run = []
            self.steps.append((kind, fname))
        self._flush(run)

    def _flush(self, run: list) -> None:
        if run:
            fmt = "<" + "".join(FIXED_FORMATS[k] for _, k in run)
            self.steps.append(("fixed", struct.Struct(fmt), tuple(run),
                               " ".join(n for n, _ in run)))


def _decode_fields(layout: _Layout, r: Reader, dialect: str) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for step in layout.steps:
        kind = step[0]
        if kind == "fixed":
            vals = r.fixed(step[1], step[3])
            i = 0
            for fname, k in step[2]:
                if k == "qid":
                    kw[fname] = Qid(vals[i], vals[i + 1], vals[i + 2])
                    i += 3
                else:
                    kw[fname] = vals[i]
                    i += 1
        elif kind == "str":
            kw[step[1]] = r.string(step[1])
        elif kind == "u32?":
            kw[step[1]] = r.u32(step[1]) if r.pos < r.end else None
        elif kind == "data":
            kw[step[1]] = r.take(r.u32("count"), "data")
        elif kind == "wnames":
            n = r.u16("nwname")
            if n > MAXWELEM:
                raise r.fail(f"nwname {n} is more than {MAXWELEM}")
            kw[step[1]] = [r.string("wname") for _ in range(n)]
        elif kind == "wqids":
            n = r.u16("nwqid")
            if n > MAXWELEM:
                raise r.fail(f"nwqid {n} is more than {MAXWELEM}")
            kw[step[1]] = [r.qid("wqid") for _ in range(n)]
        else:  # stat: n[2] then the record, whose own size must agree with n
            n = r.u16("stat length")
            r.need(n, "stat")
            start = r.pos
            kw[step[1]] = read_stat(r, dialect)
            if r.pos - start != n:
                raise r.fail(f"stat length {n} disagrees with record size {r.pos - start}")
    return kw


def _encode_fields(layout: _Layout, msg: Message, dialect: str, out: list) -> None:
    for step in layout.steps:
        kind = step[0]
        if kind == "fixed":
            vals: list = []
            for fname, k in step[2]:
                v = getattr(msg, fname)
                if k == "qid":
                    vals.extend(v)
                else:
                    vals.append(v)
            out.append(step[1].pack(*vals))
            continue
        v = getattr(msg, step[1])
        if kind == "str":
            out.append(encode_str(v))
        elif kind == "u32?":
            if v is not None:
                out.append(U32.pack(v))
        elif kind == "data":
            out.append(U32.pack(len(v)))
            out.append(v)
        elif kind == "wnames" or kind == "wqids":
            if len(v) > MAXWELEM:
                raise ProtocolError(f"{msg.NAME}: {len(v)} walk elements, at most {MAXWELEM}")
            out.append(U16.pack(len(v)))
            if kind == "wnames":
                out.extend(encode_str(s) for s in v)
            else:
                out.extend(QID.pack(*q) for q in v)
        else:
            st = pack_stat(v, dialect)
            out.append(U16.pack(len(st)))
            out.append(st)


MESSAGES: dict[str, type] = {}
_BY_TYPE: dict[str, dict[int, _Layout]] = {d: {} for d in DIALECTS}
_BY_CLASS: dict[str, dict[type, _Layout]] = {d: {} for d in DIALECTS}

for _t, _name, _dialects, _fields in _TABLE:
    _cls = _make_class(_t, _name, _dialects, _fields)
    MESSAGES[_name] = _cls
    globals()[_name] = _cls
    for _d in _dialects:
        _lay = _Layout(_cls, _d)
        _BY_TYPE[_d][_t] = _lay
        _BY_CLASS[_d][_cls] = _lay

__all__ = ["HEADER", "Message", "MESSAGES", "decode", "encode", "message_types", *MESSAGES]


def message_types(dialect: str) -> list[type]:
    """The message classes a dialect has, in type-number order."""
    return [lay.cls for _, lay in sorted(_BY_TYPE[dialect].items())]


def encode(msg: Message, dialect: str) -> bytes:
    """The whole frame, size field included, for `msg` in `dialect`."""
    layout = _BY_CLASS[dialect].get(type(msg))
    if layout is None:
        raise ProtocolError(f"{type(msg).__name__} is not a message of {dialect}")
    out = [b""]
    try:
        _encode_fields(layout, msg, dialect, out)
        out.append(msg.extra)
        size = sum(map(len, out)) + HEADER.size
        out[0] = HEADER.pack(size, msg.TYPE, msg.tag)
    except (struct.error, TypeError, AttributeError) as e:
        raise ProtocolError(f"{msg.NAME} tag {msg.tag}: cannot encode: {e}") from None
    return b"".join(out)


def decode(frame: bytes, dialect: str) -> Message:
    """Decode one whole frame (size field included) in `dialect`; ProtocolError if invalid."""
    if len(frame) < HEADER.size:
        raise ProtocolError(f"message of {len(frame)} bytes is shorter than the 7-byte header")
    size, type_, tag = HEADER.unpack_from(frame)
    if size != len(frame):
        raise ProtocolError(f"size field says {size} but the message has {len(frame)} bytes")
    layout = _BY_TYPE[dialect].get(type_)
    if layout is None:
        raise ProtocolError(f"unknown message type {type_} for {dialect} (tag {tag})",
                            type_, tag)
    r = Reader(frame, HEADER.size, size, f"{layout.cls.NAME} tag {tag}")
    try:
        kw = _decode_fields(layout, r, dialect)
    except ProtocolError as e:
        e.type, e.tag = type_, tag
        raise
    msg = layout.cls(**kw, tag=tag)
    if r.pos < size:
        msg.extra = bytes(frame[r.pos:])
    return msg
