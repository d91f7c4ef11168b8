"""Plan 9's DES-based authentication pieces (authsrv(6), libsec and libauthsrv): the
7-byte keys, `encrypt`/`decrypt` over overlapping blocks, `passtokey`, and the fixed
layouts of tickets, authenticators and ticket requests. Pure functions on bytes.

The DES block cipher itself comes from pycryptodome; what is Plan 9's own is here.
"""

from __future__ import annotations

from dataclasses import dataclass

from Crypto.Cipher import DES

ANAMELEN, DOMLEN, CHALLEN, DESKEYLEN = 28, 48, 8, 7
TICKETLEN, AUTHENTLEN, TICKREQLEN = 72, 13, 141
AuthTreq, AuthOK, AuthErr = 1, 4, 5
AuthTs, AuthTc, AuthAs, AuthAc = 64, 65, 66, 67
ERRMAX = 64  # an auth server's AuthErr carries this many bytes of text


def des56to64(k56: bytes) -> bytes:
    """Spread a 7-byte key over the 8 bytes DES wants (7 key bits each, parity low)."""
    hi = int.from_bytes(k56[:4], "big")
    lo = int.from_bytes(k56[4:7] + b"\0", "big")
    vals = [hi >> 24, hi >> 17, hi >> 10, hi >> 3, hi << 4 | lo >> 28, lo >> 21, lo >> 14,
            lo >> 7]
    return bytes(v & 0xFE for v in vals)


def _cipher(key: bytes):
    if len(key) != DESKEYLEN:
        raise ValueError(f"a Plan 9 DES key is {DESKEYLEN} bytes, not {len(key)}")
    return DES.new(des56to64(key), DES.MODE_ECB)


def encrypt(key: bytes, data: bytes) -> bytes:
    """Plan 9's encrypt(): DES over 8-byte windows stepping 7 bytes, the last window
    moved back to end at the last byte. Any length of 8 or more; not ECB, not CBC."""
    if len(data) < 8:
        raise ValueError("encrypt needs at least 8 bytes")
    c, buf = _cipher(key), bytearray(data)
    n = len(buf) - 1
    r, n = n % 7, n // 7
    for i in range(n):
        buf[7 * i : 7 * i + 8] = c.encrypt(bytes(buf[7 * i : 7 * i + 8]))
    if r:
        at = 7 * n - 7 + r
        buf[at : at + 8] = c.encrypt(bytes(buf[at : at + 8]))
    return bytes(buf)


def decrypt(key: bytes, data: bytes) -> bytes:
    """The inverse of encrypt: the same windows, undone last to first."""
    if len(data) < 8:
        raise ValueError("decrypt needs at least 8 bytes")
    c, buf = _cipher(key), bytearray(data)
    n = len(buf) - 1
    r, n = n % 7, n // 7
    if r:
        at = 7 * n - 7 + r
        buf[at : at + 8] = c.decrypt(bytes(buf[at : at + 8]))
    for i in range(n - 1, -1, -1):
        buf[7 * i : 7 * i + 8] = c.decrypt(bytes(buf[7 * i : 7 * i + 8]))
    return bytes(buf)


def passtokey(password: str) -> bytes:
    """The 7-byte DES key of a Plan 9 password (libauthsrv passtokey.c)."""
    p = password.encode("utf-8")[: ANAMELEN - 1]
    n = len(p)
    buf = bytearray(b" " * 8 + b"\0" * (ANAMELEN - 8))
    buf[:n] = p
    buf[n] = 0
    t = 0
    while True:
        key = bytes(((buf[t + i] >> i) + (buf[t + i + 1] << (8 - (i + 1)))) & 0xFF
                    for i in range(DESKEYLEN))
        if n <= 8:
            return key
        n -= 8
        t += 8
        if n < 8:
            t -= 8 - n
            n = 8
        buf[t : t + 8] = encrypt(key, bytes(buf[t : t + 8]))


def _fixed(s: str, size: int) -> bytes:
    b = s.encode("utf-8")[: size - 1]
    return b + b"\0" * (size - len(b))


def _str(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class Ticketreq:
    type: int
    authid: str
    authdom: str
    chal: bytes
    hostid: str
    uid: str

    def pack(self) -> bytes:
        return (bytes([self.type]) + _fixed(self.authid, ANAMELEN) +
                _fixed(self.authdom, DOMLEN) + self.chal + _fixed(self.hostid, ANAMELEN) +
                _fixed(self.uid, ANAMELEN))

    @classmethod
    def unpack(cls, b: bytes) -> "Ticketreq":
        if len(b) != TICKREQLEN:
            raise ValueError(f"a ticket request is {TICKREQLEN} bytes, not {len(b)}")
        a, d = 1 + ANAMELEN, 1 + ANAMELEN + DOMLEN
        return cls(b[0], _str(b[1:a]), _str(b[a:d]), b[d : d + CHALLEN],
                   _str(b[d + 8 : d + 8 + ANAMELEN]), _str(b[d + 8 + ANAMELEN :]))


@dataclass
class Ticket:
    num: int
    chal: bytes
    cuid: str
    suid: str
    key: bytes

    def seal(self, key: bytes) -> bytes:
        clear = (bytes([self.num]) + self.chal + _fixed(self.cuid, ANAMELEN) +
                 _fixed(self.suid, ANAMELEN) + self.key)
        return encrypt(key, clear)

    @classmethod
    def open(cls, key: bytes, sealed: bytes) -> "Ticket":
        if len(sealed) != TICKETLEN:
            raise ValueError(f"a ticket is {TICKETLEN} bytes, not {len(sealed)}")
        b = decrypt(key, sealed)
        return cls(b[0], b[1:9], _str(b[9:37]), _str(b[37:65]), b[65:72])


@dataclass
class Authenticator:
    num: int
    chal: bytes
    id: int = 0

    def seal(self, key: bytes) -> bytes:
        return encrypt(key, bytes([self.num]) + self.chal + self.id.to_bytes(4, "little"))

    @classmethod
    def open(cls, key: bytes, sealed: bytes) -> "Authenticator":
        if len(sealed) != AUTHENTLEN:
            raise ValueError(f"an authenticator is {AUTHENTLEN} bytes, not {len(sealed)}")
        b = decrypt(key, sealed)
        return cls(b[0], b[1:9], int.from_bytes(b[9:13], "little"))
