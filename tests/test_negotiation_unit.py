"""Every way a server turns a dialect down, from a scripted server on a unix socket."""

from __future__ import annotations

import struct

import pytest
import trio

from py9pfuse import proto as p
from py9pfuse.client import VersionError, parse
from py9pfuse.client.session import negotiate


def rversion(version: str, msize: int = 8192) -> bytes:
    return p.encode(p.Rversion(msize, version, tag=p.NOTAG), p.P9_2000)


# What the scripted server does when asked for each version; "close" hangs up,
# "silent" never answers, "garbage" sends bytes that are not 9P.
SCRIPTS = {
    "unknown-then-9P2000": {"9P2000.L": rversion("unknown"), "9P2000.u": rversion("unknown"),
                            "9P2000": rversion("9P2000")},
    "rlerror-like-diod": {"9P2000.L": p.encode(p.Rlerror(5, tag=p.NOTAG), p.P9_2000_L),
                          "9P2000.u": rversion("9P2000.u")},
    "errno-only-107-like-ganesha": {"9P2000.L": struct.pack("<IBHI", 11, 107, 0xFFFF, 2),
                                    "9P2000.u": rversion("9P2000.u")},
    "exception-text-like-aio9p": {
        "9P2000.L": p.encode(p.Rerror("Exception: cannot access local variable", tag=p.NOTAG),
                             p.P9_2000) + b"\0\0\0\0",
        "9P2000.u": rversion("9P2000.u")},
    "malformed-rerror": {"9P2000.L": struct.pack("<IBHH", 9, 107, 0xFFFF, 40),
                         "9P2000.u": rversion("9P2000.u")},
    "hangs-up-on-dotl": {"9P2000.L": "close", "9P2000.u": rversion("9P2000.u")},
    "garbage-on-dotl": {"9P2000.L": "garbage", "9P2000.u": rversion("9P2000.u")},
    "silent-on-dotl": {"9P2000.L": "silent", "9P2000.u": rversion("9P2000.u")},
    "downgrade-straight-to-9P2000": {"9P2000.L": rversion("9P2000"),
                                     "9P2000.u": rversion("9P2000")},
    "py9p-minus-D": {"9P2000.L": rversion("9P2000"), "9P2000.u": rversion("9P2000.u")},
}
EXPECT = {"unknown-then-9P2000": "9P2000", "downgrade-straight-to-9P2000": "9P2000"}


async def serve(listener, script, dials):
    async def handle(stream):
        dials.append(1)
        framer = p.Framer(1 << 20)
        async with stream:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    return
                framer.feed(data)
                for frame in framer.frames():
                    asked = p.decode(frame, p.P9_2000).version
                    action = script.get(asked, rversion("unknown"))
                    if action == "close":
                        return
                    if action == "silent":
                        await trio.sleep_forever()
                    await stream.send_all(b"\xde\xad\xbe\xef" * 3 if action == "garbage"
                                          else action)

    await trio.serve_listeners(handle, [listener])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_refusals(name, nursery, tmp_path):
    path = str(tmp_path / "s")
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen()
    dials = []
    nursery.start_soon(serve, trio.SocketListener(sock), SCRIPTS[name], dials)
    stream, dialect, msize = await negotiate(parse(f"unix!{path}"), timeout=0.5)
    await stream.aclose()
    assert dialect == EXPECT.get(name, "9P2000.u") and msize == 8192
    broke = any(SCRIPTS[name].get("9P2000.L") == a for a in ("close", "garbage", "silent"))
    assert len(dials) == (2 if broke else 1)  # a fresh dial only when framing broke


async def test_nothing_in_common_names_every_answer(nursery, tmp_path):
    path = str(tmp_path / "s")
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen()
    nursery.start_soon(serve, trio.SocketListener(sock), {}, [])
    with pytest.raises(VersionError) as e:
        await negotiate(parse(f"unix!{path}"), timeout=0.5)
    assert str(e.value) == (f"unix!{path}: no common 9P dialect (9P2000.L: answered 'unknown';"
                            " 9P2000.u: answered 'unknown'; 9P2000: answered 'unknown')")
