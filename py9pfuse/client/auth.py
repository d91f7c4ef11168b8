"""Authentication through the afid: Tauth, a protocol spoken by Twrite/Tread on the
afid, then Tattach with it (attach(5)). The protocol bytes are not 9P; each protocol
here is an async function given the afid's reader/writer.

    none    never send Tauth
    munge   write one MUNGE credential (diod's auth; from the `munge` command)
    auto    (default) send Tauth; an Rerror means no authentication is needed; an
            Rauth is answered with the one protocol we can tell the server speaks
"""

from __future__ import annotations

import errno as E
import shutil
from dataclasses import dataclass

import trio

from ..proto import P9_2000_L
from .errors import P9Error
from .fids import Fid

METHODS = ("auto", "none", "munge")


class AuthError(P9Error):
    """Authentication failed or could not start: one line, EACCES."""

    def __init__(self, address: str, reason: str):
        super().__init__(E.EACCES, f"{address}: authentication failed: {reason}")


@dataclass
class AfidIO:
    """Reads and writes on the afid, at running offsets; secrets never reach the trace."""

    session: object
    fid: Fid
    offset_r: int = 0
    offset_w: int = 0

    async def write(self, data: bytes) -> None:
        n = await self.session.write(self.fid, self.offset_w, data)
        if n != len(data):
            raise P9Error(E.EIO, f"short write on the afid ({n} of {len(data)} bytes)")
        self.offset_w += n

    async def read(self, count: int, timeout: float | None = 10.0) -> bytes:
        data = await self.session.read(self.fid, self.offset_r, count, timeout=timeout)
        self.offset_r += len(data)
        return data


async def munge_credential() -> bytes:
    """A credential for our uid from the local munged (the `munge` command)."""
    if shutil.which("munge") is None:
        raise P9Error(E.ENOENT, "the munge command is not installed (apt-get install munge)")
    try:
        r = await trio.run_process(["munge", "-n"], capture_stdout=True, capture_stderr=True,
                                   check=False)
    except OSError as e:
        raise P9Error(E.EIO, f"cannot run munge: {e}") from None
    if r.returncode != 0:
        why = r.stderr.decode(errors="replace").strip().splitlines()
        raise P9Error(E.EIO, f"munge: {why[-1] if why else 'failed'}")
    return r.stdout.strip()


async def munge(io: AfidIO) -> None:
    """diod's MUNGE: one credential, written to the afid; the server checks its uid
    against the attach's n_uname."""
    await io.write(await munge_credential())


PROTOCOLS = {"munge": munge}


async def choose(method: str, session) -> str:
    """The protocol to run on an afid the server gave us, for auth=method."""
    if method != "auto":
        return method
    if session.dialect == P9_2000_L and shutil.which("munge"):
        return "munge"  # what diod, the .L server that authenticates, speaks
    raise P9Error(E.EACCES, "the server asks for authentication; choose a protocol with"
                            " -o auth=munge")


async def run(method: str, session, afid: Fid) -> None:
    """Speak the protocol on the afid; AuthError naming what went wrong."""
    io = AfidIO(session, afid)
    try:
        name = await choose(method, session)
        await PROTOCOLS[name](io)
    except P9Error as e:
        raise AuthError(session.address.text, getattr(e, "ename", None) or str(e)) from None
