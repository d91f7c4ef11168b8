"""Path-level 9P for scripts, over the fid-level session.

    async with py9pfuse.connect("tcp!127.0.0.1!564", aname="/srv") as fs:
        for e in await fs.listdir("/"):
            print(e.name)
        data = await fs.read_bytes("/etc/motd")
"""

from __future__ import annotations

import errno as E
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .dialects import Attr, Dialect, DirEntry, dialect_for
from .errors import P9Error, ServerError
from .fids import Fid
from .session import Session, open_session


def split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class Client:
    """Operations by path. Every fid it walks is clunked before the call returns."""

    def __init__(self, session: Session, dialect: Dialect):
        self.session = session
        self.fs = dialect

    @asynccontextmanager
    async def fid(self, path: str) -> AsyncIterator[Fid]:
        fid = await self.session.walk(self.session.root, split(path))
        try:
            yield fid
        finally:
            await self.session.clunk(fid)

    async def stat(self, path: str) -> Attr:
        async with self.fid(path) as fid:
            return await self.fs.getattr(fid)

    async def listdir(self, path: str = "/") -> list[DirEntry]:
        async with self.fid(path) as fid:
            return await self.fs.readdir(fid)

    @asynccontextmanager
    async def open(self, path: str, flags: int = os.O_RDONLY) -> AsyncIterator[Fid]:
        """An open fid for path (Linux open flags), clunked at the end of the block."""
        fid = await self.session.walk(self.session.root, split(path))
        try:
            await self.fs.open(fid, flags)
            yield fid
        finally:
            await self.session.clunk(fid)

    async def chunks(self, path: str, size: int | None = None) -> AsyncIterator[bytes]:
        """The file's bytes as they come, until a read returns nothing (end of file;
        a length of 0 in its stat says nothing about a synthetic file's data)."""
        async with self.open(path) as fid:
            if size is None:
                a = await self.fs.getattr(fid)
                # a synthetic file (length 0) gets one Tread at a time: a Tread sent
                # ahead of need would take, and lose, its next answer
                size = self.session.iounit(fid) * (self.session.window if a.size else 1)
            offset = 0
            while data := await self.session.read(fid, offset, size):
                offset += len(data)
                yield data

    async def read_bytes(self, path: str) -> bytes:
        return b"".join([c async for c in self.chunks(path)])

    @asynccontextmanager
    async def open_for_write(self, path: str, mode: int = 0o644,
                             truncate: bool = True) -> AsyncIterator[Fid]:
        """An open fid for writing path, made if it does not exist."""
        names = split(path)
        if not names:
            raise P9Error(E.EISDIR, "/: is a directory")
        async with self.fid("/".join(names[:-1])) as parent:
            fid = await self.session.walk(parent, [])
            try:
                try:
                    target = await self.session.walk(parent, names[-1:])
                except ServerError as e:
                    if e.errno != E.ENOENT:
                        raise
                    await self.fs.create(fid, names[-1], os.O_WRONLY, mode)
                else:
                    await self.session.clunk(fid)
                    fid = target
                    await self.fs.open(fid, os.O_WRONLY | (os.O_TRUNC if truncate else 0))
                yield fid
            finally:
                await self.session.clunk(fid)

    async def write_at(self, fid: Fid, offset: int, data: bytes) -> int:
        """Write all of data at offset; EIO if the server stops taking it."""
        done = 0
        while done < len(data):
            n = await self.session.write(fid, offset + done, data[done:])
            if n == 0:
                raise P9Error(E.EIO, "the server accepted no more data")
            done += n
        return offset + done

    async def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        async with self.open_for_write(path, mode) as fid:
            await self.write_at(fid, 0, data)

    async def remove(self, path: str) -> None:
        names = split(path)
        if not names:
            raise P9Error(E.EBUSY, "/: cannot remove the root")
        attr = await self.stat(path)
        async with self.fid("/".join(names[:-1])) as parent:
            await self.fs.unlink(parent, names[-1], stat.S_ISDIR(attr.mode))

    async def mkdir(self, path: str, mode: int = 0o755) -> None:
        names = split(path)
        async with self.fid("/".join(names[:-1])) as parent:
            await self.fs.mkdir(parent, names[-1], mode)


@asynccontextmanager
async def connect(address: str, *, uname: str | None = None, aname: str = "",
                  version: str | None = None, msize: int | None = None,
                  **session_options) -> AsyncIterator[Client]:
    """Dial, negotiate, attach; a Client for the duration of the block."""
    kw = {"msize": msize} if msize else {}
    async with open_session(address, version=version, uname=uname, aname=aname, **kw,
                            **session_options) as session:
        yield Client(session, dialect_for(session))
