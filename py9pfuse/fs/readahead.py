"""Treads ahead of a sequential reader, so that a link with latency stays full.

The kernel keeps about two read requests in flight, so over a link with a few
milliseconds of round trip it waits for every one. When a handle is read in order, we
keep `ahead` more bytes on the way (one Tread of iounit bytes each) and answer later
reads from them. Any other access pattern, or a write, starts over. Only for ordinary
files: a synthetic file's reads are never sent ahead of need (each one may take an
event that would then be lost).
"""

from __future__ import annotations

import errno

import trio

from ..client import Fid, Session


class _Chunk:
    __slots__ = ("start", "done", "data", "error", "scope")

    def __init__(self, start: int):
        self.start = start
        self.scope = trio.CancelScope()  # abort() flushes its Tread
        self.done = trio.Event()
        self.data = b""
        self.error: OSError | None = None


class ReadAhead:
    def __init__(self, session: Session, fid: Fid, ahead: int, nursery: trio.Nursery,
                 size: int):
        self.s, self.fid, self.nursery = session, fid, nursery
        self.unit = session.iounit(fid)
        self.ahead = ahead
        self.size = size  # nothing is read ahead past the length the file had at open
        self.next = 0  # where a reader in order reads next
        self.streak = 0  # bytes read in order so far: how far ahead to go (as the kernel)
        self.base = 0  # chunks start at base + k * unit
        self.chunks: dict[int, _Chunk] = {}
        self.reading: list[int] = []  # offsets of reads under way (the kernel sends two)
        self.inflight = 0
        self.idle = trio.Event()
        self.idle.set()

    def reset(self, off: int) -> None:
        """Start over at off (a seek, or a write that may change what was read ahead)."""
        self.chunks.clear()
        self.base, self.next, self.streak = off, off, 0

    def abort(self) -> None:
        """The reader gave up (a signal): flush every Tread still on the way."""
        for ch in self.chunks.values():
            ch.scope.cancel()
        self.reset(self.next)

    def _start_of(self, pos: int) -> int:
        return self.base + (pos - self.base) // self.unit * self.unit

    def _in_order(self, off: int) -> bool:
        if off == self.next:
            return True
        # the kernel's reads come two at a time: one may start beyond the other's end.
        # One that starts before where the last one ended reads again what was read: it
        # asks the server again (another client may have changed it; cache=none).
        return bool(self.chunks) and self.next <= off <= max(self.chunks) + self.unit

    def _want(self, start: int) -> _Chunk:
        ch = self.chunks.get(start)
        if ch is None:
            ch = self.chunks[start] = _Chunk(start)
            self.inflight += 1
            if self.idle.is_set():
                self.idle = trio.Event()
            self.nursery.start_soon(self._fetch, ch)
        return ch

    async def _fetch(self, ch: _Chunk) -> None:
        try:
            with ch.scope:
                # an ordinary file's read should come at once: a server that never
                # answers one is bounded by timeout= like any other request (synthetic
                # files, which may block by design, are never read ahead)
                ch.data = await self.s.read(self.fid, ch.start, self.unit,
                                            timeout=self.s.op_timeout)
            if ch.scope.cancelled_caught:
                ch.error = OSError(errno.EINTR, "interrupted")  # aborted, and flushed
        except OSError as e:
            ch.error = e
        finally:
            ch.done.set()
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.set()

    async def read(self, off: int, size: int) -> bytes | memoryview:
        if not self._in_order(off):
            self.reset(off)
        end = off + size
        # ahead of this read: as much as has been read in order, up to `ahead`, never
        # past the length the file had (so a small file costs no extra Tread)
        start = self._start_of(off)
        limit = min(end + min(self.ahead, self.streak), max(self.size, end))
        while start < limit:
            self._want(start)
            start += self.unit
        self.reading.append(off)
        out, pos = [], off
        try:
            while pos < end:
                ch = self._want(self._start_of(pos))
                await ch.done.wait()
                if ch.error is not None:
                    self.chunks.pop(ch.start, None)
                    raise ch.error
                # a view, not a copy: the kernel's 128 KiB reads are slices of iounit
                # chunks, and pyfuse3 takes any contiguous buffer
                piece = memoryview(ch.data)[pos - ch.start : end - ch.start]
                if not piece:
                    break  # end of file
                out.append(piece)
                pos += len(piece)
                if len(ch.data) < self.unit and pos >= ch.start + len(ch.data):
                    break
        finally:
            self.reading.remove(off)
        self.streak += pos - off
        self.next = max(self.next, pos)
        low = min(self.reading, default=pos)
        for start, ch in list(self.chunks.items()):
            # consumed by every read under way; or a short one (the end of the file, as
            # it was then) read to its end: the next read there asks the server again,
            # since the file may have grown (a log another client appends to, tail -f)
            if start + self.unit <= low or (ch.done.is_set() and len(ch.data) < self.unit
                                            and start + len(ch.data) <= pos):
                del self.chunks[start]
        return out[0] if len(out) == 1 else b"".join(out)

    async def close(self) -> None:
        """Wait for Treads still on the way, so the fid is not clunked under them."""
        self.chunks.clear()
        await self.idle.wait()
