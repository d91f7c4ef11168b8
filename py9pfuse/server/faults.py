"""A misbehaving server, on purpose: `python -m py9pfuse.server SOCKET --fault KIND`.

Each kind is a way a server, or the link to it, can break the protocol; the tests
(tests/test_faults.py) mount it and check that the client fails the one request with a
clean errno and, where the stream is still sound, carries on. A fault fires only on
requests that read the file `fault` in the root (added to the tree only in this mode):
the walk, stat, open and clunk of `fault` are answered normally so that a client can
look it up, open it and let it go, and every other file keeps working. (lying-stat is
about stat records: it fires on the Tstat of `fault` and on reads of the root.)
"""

from __future__ import annotations

import os
import sys

import trio

from .. import proto as p
from ..proto import messages as m
from .ramfs import Node

FAULT_FILE = "fault"
CONTENT = b"this file's reads are answered wrongly on purpose\n" * 8
STAT_NAME_LEN = 41  # size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8]
UNUSED_TAG = p.NOTAG - 1  # a client hands out low tags first: this one is not in flight

KINDS = {  # what each does to the reply, as the server's log line says
    # framing lost: a size field below the header size can start no frame
    "garbage": "replaced by bytes that are not a frame",
    # a reply the client cannot match: it must not take it for anyone else's
    "unknown-tag": f"sent with tag {UNUSED_TAG}, which is not in flight",
    # the second copy arrives when the tag is no longer in flight
    "duplicate-tag": "sent twice",
    # a size no client should believe, or buffer for: the limit is msize
    "oversize": "replaced by a frame of 1 GiB, over msize",
    # right tag, wrong message: a client must not read an Rclunk as its data
    "wrong-type": "replaced by an Rclunk",
    # a stalled writer: half a frame, then silence on a connection that stays open
    "partial": "cut in half; nothing more is sent on this connection",
    # stat records are parsed inside a valid frame: their own lengths can lie too
    "lying-stat": "sent with a stat record whose name runs past its end",
    # a server may take forever; it must still answer Tflush (flush(5))
    "no-reply": "never sent (a Tflush is answered)",
    # the connection dies mid-reply: the client holds half a frame at EOF
    "close-mid": "cut in half, then the connection is closed",
}


def add_fault_file(root: Node) -> Node:
    node = root.add(FAULT_FILE, 0o444)
    node.data += CONTENT
    return node


class Faults:
    """Decides which requests misbehave (`fires`) and answers them wrongly (`answer`)."""

    def __init__(self, kind: str, root: Node):
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r} (known: {', '.join(KINDS)})")
        self.kind = kind
        self.node = add_fault_file(root)

    def fires(self, conn, msg: p.Message) -> bool:
        f = conn.fids.get(getattr(msg, "fid", None))
        if f is None or f.conv is not None:
            return False
        if self.kind == "lying-stat":  # records come from Tstat and directory reads
            return (msg.NAME == "Tstat" and f.node is self.node) or \
                (msg.NAME == "Tread" and f.node is conn.root)
        if self.kind == "no-reply" and msg.NAME == "Twrite":  # a command that blocks
            return f.node is self.node
        return msg.NAME == "Tread" and f.node is self.node

    async def answer(self, conn, msg: p.Message, reply: p.Message) -> None:
        """Send what this kind sends in place of `reply` to msg (on conn.send)."""
        reply.tag = msg.tag
        frame = p.encode(reply, p.P9_2000)
        print(f"py9pfuse.server: fault {self.kind}: the {reply.NAME} to {msg.NAME} tag"
              f" {msg.tag} is {KINDS[self.kind]}", file=sys.stderr, flush=True)
        kind, half = self.kind, frame[: len(frame) // 2]
        if kind == "garbage":
            await conn.send(b"\x03\x00\x00\x00" + os.urandom(29))
        elif kind == "unknown-tag":
            reply.tag = UNUSED_TAG
            await conn.send(p.encode(reply, p.P9_2000))
        elif kind == "duplicate-tag":
            # one write: both copies land before the client can reuse the tag, so the
            # second is a stray (not the answer to the tag's next request)
            await conn.send(frame + frame)
        elif kind == "oversize":
            await conn.send((1 << 30).to_bytes(4, "little") + frame[4:] + bytes(1 << 16))
        elif kind == "wrong-type":
            await conn.send(p.encode(m.Rclunk(tag=msg.tag), p.P9_2000))
        elif kind == "partial":
            await conn.send(half)
            conn.send = _silence  # every later reply (Rflush too) is never written
        elif kind == "lying-stat":
            await conn.send(_lie(frame, reply))
        elif kind == "no-reply":
            await trio.sleep_forever()  # until Tflush cancels it; Rflush says so
        elif kind == "close-mid":
            await conn.send(half)
            await conn.stream.aclose()


async def _silence(data: bytes) -> None:
    pass


def _lie(frame: bytes, reply: p.Message) -> bytes:
    """frame with its first stat record's name length set past the record's end."""
    if reply.NAME == "Rstat":
        at = p.HEADER_SIZE + 2  # after nstat[2]
    elif reply.NAME == "Rread" and len(reply.data) > STAT_NAME_LEN + 2:
        at = p.HEADER_SIZE + 4  # after count[4]
    else:
        return frame  # an Rerror, or the end of the listing
    at += STAT_NAME_LEN
    return frame[:at] + b"\xff\xff" + frame[at + 2 :]
