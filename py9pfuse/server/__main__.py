"""python -m py9pfuse.server SOCKET [options]: serve the demo tree on a unix socket.

With --authid/--authdom/--keyfile it requires p9any/p9sk1 (the key file holds the
server's password). With --authserver SOCKET2 --users FILE it also runs an auth
server, whose users file has one "name password" per line. With --fault KIND, reads of
an extra file `fault` are answered wrongly on purpose (server/faults.py).
"""

import argparse
import sys

import trio

from ..client.p9crypt import passtokey
from . import demo_tree, serve_unix
from .faults import KINDS, Faults
from .p9auth import AuthConfig, AuthServer, serve_authserver


def _password(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\n")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m py9pfuse.server")
    ap.add_argument("socket")
    ap.add_argument("--authid")
    ap.add_argument("--authdom", default="py9pfuse.test")
    ap.add_argument("--keyfile")
    ap.add_argument("--authserver", help="also serve an auth server on this unix socket")
    ap.add_argument("--users", help="the auth server's users: 'name password' lines")
    ap.add_argument("--fault", choices=KINDS, help="answer reads of /fault wrongly this way")
    a = ap.parse_args()
    auth = None
    if a.authid:
        if not a.keyfile:
            sys.exit("--authid needs --keyfile")
        auth = AuthConfig(a.authid, a.authdom, passtokey(_password(a.keyfile)))

    async def run():
        async with trio.open_nursery() as n:
            if a.authserver:
                keys = {}
                with open(a.users, encoding="utf-8") as f:
                    for line in f:
                        name, _, pw = line.rstrip("\n").partition(" ")
                        keys[name] = passtokey(pw)
                await n.start(serve_authserver, a.authserver, AuthServer(a.authdom, keys))
            root = demo_tree()
            faults = Faults(a.fault, root) if a.fault else None
            await serve_unix(a.socket, root, auth=auth, faults=faults)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


main()
