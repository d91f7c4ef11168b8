"""A stand-in for plan9port's factotum: a 9P server with an `rpc` file speaking
factotum's rpc language (factotum(4): start, read, write; ok, phase, toosmall, done,
error), which runs py9pfuse's own p9any client on the other side. It lets the test
suite check that py9pfuse carries the protocol between factotum and a file server.

    python tests/factotum_standin.py SOCKET USER PASSWORD [AUTHSERVER]
"""

from __future__ import annotations

import os
import sys

import trio

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from py9pfuse.client.auth import Identity, p9any  # noqa: E402
from py9pfuse.client.p9crypt import passtokey  # noqa: E402
from py9pfuse.proto import DMDIR  # noqa: E402
from py9pfuse.server import Node, serve_unix  # noqa: E402


class Rpc:
    """One conversation: the protocol runs in a task; rpc commands drive it."""

    def __init__(self, who: Identity, nursery: trio.Nursery):
        self.who, self.nursery = who, nursery
        self.reply = b"error no conversation"
        self.need: int | None = None  # the protocol is waiting for this many server bytes

    async def start(self) -> None:
        self._ev_send, self._ev = trio.open_memory_channel(1)  # protocol -> rpc
        self._data_send, self._data = trio.open_memory_channel(1)  # rpc -> protocol
        rpc = self

        class IO:  # what the protocol sees as the afid
            async def write(self, data: bytes) -> None:
                await rpc._ev_send.send(("ok", data))

            async def read(self, count: int, timeout=None) -> bytes:
                await rpc._ev_send.send(("phase", count))
                return await rpc._data.receive()

        async def run():
            try:
                await p9any(IO(), self.who)
                await self._ev_send.send(("done", b""))
            except Exception as e:
                await self._ev_send.send(("error", str(e).encode()))

        self.nursery.start_soon(run)

    async def command(self, cmd: bytes) -> None:
        verb, _, arg = cmd.partition(b" ")
        if verb == b"start":
            await self.start()
            self.reply = b"ok"
        elif verb == b"read":
            kind, val = await self._ev.receive()
            if kind == "phase":
                self.need, self.reply = val, b"phase protocol phase error: read"
            else:
                self.reply = kind.encode() + (b" " + val if val else b"")
        elif verb == b"write" and self.need is not None:
            # a C string may be shorter than asked for; fixed messages are not
            done = len(arg) >= self.need or (arg and b"\0" in arg)
            if not done:
                self.reply = b"toosmall %d" % self.need
            else:
                self.need = None
                await self._data_send.send(arg)
                self.reply = b"ok"
        else:
            self.reply = b"error unexpected " + verb


async def serve(sock: str, who: Identity) -> None:
    async with trio.open_nursery() as nursery:
        root = Node("/", DMDIR | 0o700)
        rpc = Rpc(who, nursery)
        node = root.add("rpc", 0o600)
        node.on_write = rpc.command

        async def read(offset: int, count: int) -> bytes:
            return rpc.reply[:count]

        node.on_read = read
        await serve_unix(sock, root)


if __name__ == "__main__":
    sock, user, password = sys.argv[1:4]
    authserver = sys.argv[4] if len(sys.argv) > 4 else None
    try:
        trio.run(serve, sock, Identity(user, passtokey(password), authserver=authserver))
    except KeyboardInterrupt:
        pass
