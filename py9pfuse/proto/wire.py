"""Little-endian 9P primitives: a bounds-checked reader and the qid.

Every read checks the bytes it needs against the end of the enclosing message
*before* slicing or allocating, so a lying count or length can only ever cost an
exception, never memory proportional to the lie.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import ProtocolError

U8 = struct.Struct("<B")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
QID = struct.Struct("<BIQ")

# struct format letters of the fixed-size field kinds; a qid is three of them.
FIXED_FORMATS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "qid": "BIQ"}


class Qid(NamedTuple):
    """The server's unique identity of a file: type[1] version[4] path[8]."""

    type: int
    version: int
    path: int


def encode_str(s: str) -> bytes:
    # surrogateescape carries Linux file names that are not UTF-8 through unchanged.
    b = s.encode("utf-8", "surrogateescape")
    if len(b) > 0xFFFF:
        raise ProtocolError(f"string of {len(b)} bytes is longer than 65535")
    return U16.pack(len(b)) + b


class Reader:
    """A cursor over buf[pos:end] that raises ProtocolError instead of overrunning."""

    __slots__ = ("buf", "pos", "end", "what")

    def __init__(self, buf: bytes, pos: int, end: int, what: str):
        self.buf = buf
        self.pos = pos
        self.end = end
        self.what = what  # e.g. "Rread tag 3", prefixed to every complaint

    def fail(self, text: str) -> ProtocolError:
        return ProtocolError(f"{self.what}: {text} (at byte {self.pos} of {self.end})")

    def need(self, n: int, field: str) -> None:
        if n > self.end - self.pos:
            raise self.fail(f"{field} needs {n} bytes but only {self.end - self.pos} remain")

    def fixed(self, st: struct.Struct, field: str) -> tuple:
        self.need(st.size, field)
        values = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return values

    def u16(self, field: str) -> int:
        return self.fixed(U16, field)[0]

    def u32(self, field: str) -> int:
        return self.fixed(U32, field)[0]

    def take(self, n: int, field: str) -> bytes:
        self.need(n, field)
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def string(self, field: str) -> str:
        n = self.u16(field)
        return self.take(n, field).decode("utf-8", "surrogateescape")

    def qid(self, field: str) -> Qid:
        return Qid(*self.fixed(QID, field))
