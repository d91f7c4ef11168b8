"""The tree the bundled server serves: plain files in memory, and synthetic files whose
reads and writes are programs' interfaces (a clock, a ctl file, a blocking event file).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable

import trio

from ..proto import DMAPPEND, DMDIR, DMEXCL, QTAPPEND, QTDIR, QTEXCL, Qid, Stat

_paths = itertools.count(1)


class Node:
    """A file or directory. A synthetic file has `on_read`/`on_write` instead of data."""

    def __init__(self, name: str, mode: int, parent: Node | None = None, uid: str = "glenda"):
        self.name = name
        self.mode = mode
        self.parent = parent or self
        self.path = next(_paths)
        self.version = 1  # 0 would tell clients "do not cache"; synthetic files say so
        self.data = bytearray()
        self.children: dict[str, Node] = {}
        self.uid = self.gid = self.muid = uid
        self.atime = self.mtime = int(time.time())
        self.on_read: Callable[[int, int], Awaitable[bytes]] | None = None
        self.on_write: Callable[[bytes], Awaitable[None]] | None = None
        self.removed = False

    @property
    def is_dir(self) -> bool:
        return bool(self.mode & DMDIR)

    @property
    def synthetic(self) -> bool:
        return self.on_read is not None or self.on_write is not None

    @property
    def qid(self) -> Qid:
        t = (QTDIR if self.is_dir else 0) | (QTAPPEND if self.mode & DMAPPEND else 0) | \
            (QTEXCL if self.mode & DMEXCL else 0)
        return Qid(t, 0 if self.synthetic else self.version, self.path)

    def stat(self) -> Stat:
        length = 0 if self.is_dir or self.synthetic else len(self.data)
        return Stat(0, 0, self.qid, self.mode, self.atime, self.mtime, length, self.name,
                    self.uid, self.gid, self.muid)

    def add(self, name: str, mode: int) -> Node:
        child = Node(name, mode, self, self.uid)
        self.children[name] = child
        self.touch()
        return child

    def touch(self) -> None:
        self.mtime = int(time.time())
        self.version += 1


class Events:
    """Each write to ctl, handed out whole by one read of events; a read waits for one.
    So a client that merged or split writes would show it here."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel(1000)

    async def write(self, data: bytes) -> None:
        await self._send.send(data)

    async def read(self, offset: int, count: int) -> bytes:
        return (await self._recv.receive())[:count]


README = b"""\
This tree is served by py9pfuse's bundled 9P2000 server and mounted through FUSE.

  cat hello.txt          an ordinary file; edit it, copy files in, mkdir, rm, mv
  cat time               a synthetic file: length 0 in ls -l, yet every read has data
  echo hi > ctl          one write(2) is one 9P Twrite: ctl takes one command per write
  cat events             blocks until something is written to ctl, then prints each
                         write whole
                         (run it in a second terminal, then echo into ctl)
"""


def demo_tree() -> Node:
    root = Node("/", DMDIR | 0o775)
    root.add("README", 0o444).data += README
    root.add("hello.txt", 0o664).data += b"hello, 9P\n"

    async def now(offset: int, count: int) -> bytes:
        return time.strftime("%Y-%m-%d %H:%M:%S\n").encode()[:count] if offset == 0 else b""

    root.add("time", 0o444).on_read = now
    events = Events()
    root.add("ctl", 0o222).on_write = events.write
    root.add("events", 0o444).on_read = events.read
    return root
