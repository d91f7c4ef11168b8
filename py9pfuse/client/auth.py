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
import os
import shutil
from dataclasses import dataclass

import trio

from ..proto import P9_2000_L
from .errors import P9Error
from .fids import Fid

METHODS = ("auto", "none", "munge", "p9any", "p9sk1", "factotum")
AUTHRPCMAX = 4096 + 256  # factotum's rpc replies fit in this


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


@dataclass
class Identity:
    """Who we are for Plan 9 authentication; the key never appears in a message."""

    user: str
    key: bytes | None = None  # the DES key (passtokey of the password)
    authdom: str | None = None  # which of the server's domains to answer (default: first)
    authserver: str | None = None  # dial string of the auth server (port 567)
    factotum: str | None = None  # dial string of plan9port's factotum

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"Identity(user={self.user!r}, authdom={self.authdom!r})"


async def _read_cstring(io: AfidIO) -> str:
    data = await io.read(4096)
    if b"\0" not in data:
        raise P9Error(E.EPROTO, "p9any: the server's message is not NUL-terminated")
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


async def p9any(io: AfidIO, who: Identity, only: str | None = None) -> None:
    """Plan 9's negotiation (authsrv(6)): the server offers "v.2 proto@dom ..." (v.1
    has no "v.2 "), we name one with its domain, and in v.2 the server says "OK"."""
    offer = await _read_cstring(io)
    words = offer.split()
    v2 = bool(words) and words[0] == "v.2"
    offered = [w.partition("@") for w in words[1 if v2 else 0 :]]
    names = ", ".join(f"{p}@{d}" for p, _, d in offered) or "nothing"
    want = [(p, d) for p, _, d in offered if p == (only or "p9sk1")
            and (who.authdom is None or d == who.authdom)]
    if not want:
        raise P9Error(E.EPROTONOSUPPORT, f"the server offers {names}; we speak p9sk1")
    proto, dom = want[0]
    await io.write(f"{proto} {dom}".encode() + b"\0")
    if v2:
        ok = await _read_cstring(io)
        if ok != "OK":
            raise P9Error(E.EPROTO, f"p9any: the server answered {ok!r}, not OK")
    await p9sk1(io, who, dom)


async def p9sk1(io: AfidIO, who: Identity, dom: str | None = None) -> None:
    """p9sk1: our challenge; the server's ticket request; tickets from the auth server,
    or made here when we are the server's authid; the server's ticket and our
    authenticator; the server's authenticator, checked against our challenge."""
    from . import p9crypt as c

    if who.key is None:
        raise P9Error(E.EACCES, "p9sk1 needs a key: give keyfile= or $PY9PFUSE_PASSWORD")
    chc = os.urandom(c.CHALLEN)
    await io.write(chc)
    try:
        tr = c.Ticketreq.unpack(await io.read(c.TICKREQLEN))
    except ValueError as e:
        raise P9Error(E.EPROTO, f"p9sk1: {e}") from None
    if dom is not None and tr.authdom != dom:
        raise P9Error(E.EPROTO, f"p9sk1: ticket request for {tr.authdom!r}, not {dom!r}")
    tr.hostid = tr.uid = who.user
    if who.authserver:
        ctk, stk = await get_tickets(who.authserver, tr)
    elif tr.authid == who.user:  # we are the server's own identity: no auth server needed
        kn = os.urandom(c.DESKEYLEN)
        ctk = c.Ticket(c.AuthTc, tr.chal, who.user, who.user, kn).seal(who.key)
        stk = c.Ticket(c.AuthTs, tr.chal, who.user, who.user, kn).seal(who.key)
    else:
        raise P9Error(E.EACCES, f"the server is {tr.authid!r}@{tr.authdom}: tickets for"
                                f" {who.user!r} need its auth server (authserver=)")
    t = c.Ticket.open(who.key, ctk)
    if t.num != c.AuthTc or t.chal != tr.chal:
        raise P9Error(E.EACCES, "the ticket does not open with our key (wrong password?)")
    await io.write(stk + c.Authenticator(c.AuthAc, tr.chal).seal(t.key))
    try:
        a = c.Authenticator.open(t.key, await io.read(c.AUTHENTLEN))
    except ValueError as e:
        raise P9Error(E.EACCES, f"p9sk1: {e} (the server refused us?)") from None
    if a.num != c.AuthAs or a.chal != chc:
        raise P9Error(E.EACCES, "the server's authenticator is wrong: it is not who it says")


async def get_tickets(authserver: str, tr) -> tuple[bytes, bytes]:
    """Ask the auth server (authsrv(6)) for the client's and the server's tickets."""
    from . import p9crypt as c
    from .dial import open_stream, parse

    req = c.Ticketreq(c.AuthTreq, tr.authid, tr.authdom, tr.chal, tr.hostid, tr.uid).pack()

    async def read_exactly(stream, n: int) -> bytes:
        got = b""
        while len(got) < n and (data := await stream.receive_some(n - len(got))):
            got += data
        return got

    try:
        with trio.fail_after(15):
            async with await open_stream(parse(authserver)) as stream:
                await stream.send_all(req)
                kind = await read_exactly(stream, 1)
                # AuthOK: the client's ticket, then the server's; AuthErr: a message
                body = await read_exactly(stream, {bytes([c.AuthOK]): 2 * c.TICKETLEN,
                                                   bytes([c.AuthErr]): c.ERRMAX}.get(kind, 0))
    except trio.TooSlowError:
        raise P9Error(E.ETIMEDOUT, f"auth server {authserver}: no answer") from None
    if kind == bytes([c.AuthOK]) and len(body) == 2 * c.TICKETLEN:
        return body[: c.TICKETLEN], body[c.TICKETLEN :]
    if kind == bytes([c.AuthErr]):
        why = body.split(b"\0", 1)[0].decode(errors="replace")
        raise P9Error(E.EACCES, f"auth server {authserver}: {why}")
    raise P9Error(E.EPROTO, f"auth server {authserver}: not an auth server's answer")


def factotum_address() -> str:
    """plan9port's factotum posts itself in the namespace directory: $NAMESPACE, or
    /tmp/ns.$USER.$DISPLAY."""
    ns = os.environ.get("NAMESPACE")
    if not ns:
        import getpass
        ns = f"/tmp/ns.{getpass.getuser()}.{os.environ.get('DISPLAY', ':0')}"
    return f"unix!{ns}/factotum"


async def factotum(io: AfidIO, who: Identity) -> None:
    """Let plan9port's factotum speak p9any for us (auth_proxy in libauth): we carry
    bytes between its rpc file and the afid, and learn no secret ourselves."""
    from .api import connect

    addr = who.factotum or factotum_address()
    try:
        async with connect(addr, version="9P2000", auth="none") as fa, \
                fa.open("/rpc", os.O_RDWR) as rpc:
            async def call(cmd: bytes) -> tuple[str, bytes]:
                await fa.session.write(rpc, 0, cmd)
                reply = await fa.session.read(rpc, 0, AUTHRPCMAX)
                verb, _, arg = reply.partition(b" ")
                return verb.decode(errors="replace"), arg

            verb, arg = await call(f"start proto=p9any role=client user={who.user}".encode())
            if verb != "ok":
                raise P9Error(E.EACCES, f"factotum: {verb} {arg.decode(errors='replace')}")
            while True:
                verb, arg = await call(b"read")
                if verb == "done":
                    return
                if verb == "ok":  # bytes for the server
                    await io.write(arg)
                elif verb == "phase":  # it wants the server's next message
                    got = b""
                    while (r := await call(b"write " + got))[0] == "toosmall":
                        want = int(r[1] or b"0")
                        more = await io.read(max(want - len(got), 1))
                        if not more:
                            raise P9Error(E.EPROTO, "the server stopped talking")
                        got += more
                    if r[0] != "ok":
                        raise P9Error(E.EACCES, f"factotum: {r[0]} "
                                                f"{r[1].decode(errors='replace')}")
                else:  # needkey, error, ...
                    raise P9Error(E.EACCES, f"factotum: {verb} {arg.decode(errors='replace')}")
    except OSError as e:
        if isinstance(e, P9Error) and e.errno == E.EACCES:
            raise
        raise P9Error(E.EACCES, f"factotum at {addr}: {e}") from None


PROTOCOLS = {"munge": munge, "p9any": p9any, "p9sk1": p9sk1}


def choose(method: str, session, who: Identity | None) -> str:
    """The protocol to run on an afid the server gave us, for auth=method: with auto,
    MUNGE on 9P2000.L (diod's), p9any on the others (Plan 9's)."""
    if method != "auto":
        return method
    if session.dialect == P9_2000_L:
        if shutil.which("munge"):
            return "munge"
        raise P9Error(E.EACCES, "the server asks for authentication (MUNGE, as diod does?);"
                                " install munge or choose -o auth=")
    return "p9any"


async def run(method: str, session, afid: Fid, who: Identity | None = None) -> None:
    """Speak the protocol on the afid; AuthError naming what went wrong."""
    io = AfidIO(session, afid)
    who = who or Identity(session.uname or "none")
    try:
        name = choose(method, session, who)
        if name == "munge":
            await munge(io)
        elif name == "factotum":
            await factotum(io, who)
        else:  # Plan 9 servers always wrap p9sk1 in p9any's negotiation
            await p9any(io, who, only="p9sk1")
    except P9Error as e:
        why = getattr(e, "ename", None) or str(e)
        raise AuthError(session.address.text,
                        why.removeprefix("authentication failed: ")) from None
