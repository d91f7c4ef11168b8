"""The server half of p9any/p9sk1 on an afid, and a minimal auth server (authsrv(6)):
test instruments, so that the whole Plan 9 exchange runs in the test suite."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import trio

from ..client import p9crypt as c


@dataclass
class AuthConfig:
    """The file server's identity: who it is (authid), in which domain, and its key."""

    authid: str
    authdom: str
    key: bytes


class AfidConversation:
    """One afid: the client's writes come in, the protocol's messages go out as reads."""

    def __init__(self, cfg: AuthConfig):
        self.cfg = cfg
        self._in_send, self._in = trio.open_memory_channel(16)
        self._out_send, self._out = trio.open_memory_channel(16)
        self._pending = b""
        self.user: str | None = None  # set once the client has proved who it is
        self.error: str | None = None

    # what the 9P server does on Twrite/Tread of the afid
    async def client_wrote(self, data: bytes) -> None:
        await self._in_send.send(data)

    async def client_reads(self) -> bytes:
        if self.error:
            raise PermissionError(self.error)
        msg = await self._out.receive()
        if isinstance(msg, Exception):
            raise msg
        return msg

    # what the protocol does
    async def _recv(self, n: int | None = None) -> bytes:
        while n is None and not self._pending or n is not None and len(self._pending) < n:
            self._pending += await self._in.receive()
        n = len(self._pending) if n is None else n
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    async def run(self) -> None:
        try:
            await self._p9any()
        except (ValueError, PermissionError) as e:
            self.error = f"authentication failed: {e}"
            await self._out_send.send(PermissionError(self.error))

    async def _p9any(self) -> None:
        cfg = self.cfg
        await self._out_send.send(f"v.2 p9sk1@{cfg.authdom}".encode() + b"\0")
        choice = (await self._recv()).split(b"\0", 1)[0].decode(errors="replace")
        if choice != f"p9sk1 {cfg.authdom}":
            raise ValueError(f"unknown protocol {choice!r}")
        await self._out_send.send(b"OK\0")
        chc = await self._recv(c.CHALLEN)
        chs = os.urandom(c.CHALLEN)
        await self._out_send.send(c.Ticketreq(c.AuthTreq, cfg.authid, cfg.authdom, chs, "",
                                              "").pack())
        msg = await self._recv(c.TICKETLEN + c.AUTHENTLEN)
        t = c.Ticket.open(cfg.key, msg[: c.TICKETLEN])
        if t.num != c.AuthTs or t.chal != chs:
            raise PermissionError("bad ticket (not sealed with our key)")
        a = c.Authenticator.open(t.key, msg[c.TICKETLEN :])
        if a.num != c.AuthAc or a.chal != chs:
            raise PermissionError("bad authenticator")
        self.user = t.cuid
        await self._out_send.send(c.Authenticator(c.AuthAs, chc).seal(t.key))


@dataclass
class AuthServer:
    """Tickets for users whose keys it holds (authsrv(6), the AuthTreq exchange only)."""

    authdom: str
    keys: dict[str, bytes] = field(default_factory=dict)

    async def handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            req = b""
            with trio.move_on_after(10):
                while len(req) < c.TICKREQLEN:
                    data = await stream.receive_some(c.TICKREQLEN - len(req))
                    if not data:
                        return
                    req += data
            try:
                tr = c.Ticketreq.unpack(req)
            except ValueError:
                return
            reply = self.tickets(tr)
            await stream.send_all(reply)

    def tickets(self, tr: c.Ticketreq) -> bytes:
        def err(text: str) -> bytes:
            return bytes([c.AuthErr]) + text.encode()[: c.ERRMAX - 1].ljust(c.ERRMAX, b"\0")

        if tr.type != c.AuthTreq:
            return err("unsupported request")
        if tr.authdom != self.authdom:
            return err(f"not the auth server of {tr.authdom}")
        ks, kc = self.keys.get(tr.authid), self.keys.get(tr.hostid)
        if ks is None or kc is None:
            return err("unknown user")
        if tr.uid != tr.hostid:
            return err(f"{tr.hostid} cannot speak for {tr.uid}")
        kn = os.urandom(c.DESKEYLEN)
        return (bytes([c.AuthOK]) +
                c.Ticket(c.AuthTc, tr.chal, tr.hostid, tr.uid, kn).seal(kc) +
                c.Ticket(c.AuthTs, tr.chal, tr.hostid, tr.uid, kn).seal(ks))


async def serve_authserver(path: str, server: AuthServer, *,
                           task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The auth server on a unix socket (tests dial it as unix!path)."""
    if os.path.exists(path):
        os.unlink(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen(16)
    task_status.started(path)
    await trio.serve_listeners(server.handle, [trio.SocketListener(sock)])
