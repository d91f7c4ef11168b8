"""FUSE operations in 9P terms, one short method each, through the dialect adapter.

Nothing here asks which dialect is spoken: `self.fs` (client/dialects.py) says getattr,
readdir, mkdir, ... in the server's own words. What each method sends is said in its
docstring, in the spirit of plan9port's 9pfuse.
"""

from __future__ import annotations

import errno as E
import functools
import os
import stat as S
from dataclasses import dataclass, field

import pyfuse3
import trio

from ..client import Attr, ConnectionLost, Dialect, Fid, P9Error, Session, SetAttr
from . import interrupt
from .inodes import ROOT, Inode, InodeTable
from .readahead import ReadAhead

XATTR_REPLACE = 2


@dataclass
class Config:
    attr_timeout: float = 1.0  # pyfuse3's 300 s would hide other clients' changes
    entry_timeout: float = 1.0
    cache: str = "auto"  # auto: page cache for ordinary files only; none: direct I/O always
    readdir_window: int = 32  # walks+getattrs in flight for one .L listing
    readahead: int = 4 << 20  # bytes kept on the way ahead of a sequential reader
    # The kernel's writeback cache merges small writes into large ones. Off by default:
    # a write then reaches the server late and not as the write(2) that made it (files
    # served with direct I/O keep one write, one Twrite all the same).
    writeback: bool = False
    trace_fuse: bool = False
    log: object = None
    mountpoint: str | None = None  # to find who holds a file whose read blocks


@dataclass
class Handle:
    fid: Fid
    node: Inode
    append: bool
    synthetic: bool = False  # length 0: one Tread per read, never a speculative one
    opener: int | None = None  # pid that opened it: a candidate caller when a read blocks
    ra: ReadAhead | None = None  # Treads ahead of a reader in order (ordinary files)
    flags: int = 0  # as opened, to open it again on a new connection
    watch: bool = False  # its writes may block by design: a signal must end them
    lost: str | None = None  # why it cannot be opened again: EIO on this handle only


@dataclass
class DirHandle:
    node: Inode
    entries: list = field(default_factory=list)  # (name, Attr, walked Fid or None)
    seen: int = 0  # the inode table's clock when the listing was read


async def _together(*calls) -> list:
    """Await the calls at once: the result of each, or the exception it raised."""
    out: list = [None] * len(calls)

    async def one(i, call):
        try:
            out[i] = await call()
        except Exception as e:  # noqa: BLE001 - handed to the caller, who decides
            out[i] = e

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(one, i, call)
    return out


def fuse_errors(method):
    """Turn the client's errors into the errno FUSE answers with (P9Error is an OSError)."""
    name = method.__name__

    again = name in _IDEMPOTENT

    @functools.wraps(method)
    async def wrapper(self, *args):
        if self.config.trace_fuse:
            self._log(f"FUSE {name} {_show(args)}")
        try:
            return await self._again_if_lost(again, method, self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            if self.config.trace_fuse:
                self._log(f"FUSE {name} -> {os.strerror(e.errno or E.EIO)}: {e}")
            raise pyfuse3.FUSEError(e.errno or E.EIO) from None

    return wrapper


_ATTEMPTS = 4  # an operation lost with its connection is tried on this many in all

# operations that mean the same when sent twice; write is one too, unless appending or
# to a synthetic file (ops.write says so per handle)
_IDEMPOTENT = frozenset({"lookup", "getattr", "setattr", "readlink", "open", "read", "opendir",
                         "readdir", "fsync", "fsyncdir", "statfs", "getxattr", "listxattr",
                         "access", "flush"})


def _show(args) -> str:
    # data shows as its length: a trace line stays a line, and file contents stay private
    return " ".join(f"<{len(a)} bytes>" if isinstance(a, (bytes, memoryview)) and len(a) > 64
                    else repr(a) for a in args if not isinstance(a, pyfuse3.RequestContext))


class P9Operations(pyfuse3.Operations):
    enable_writeback_cache = False  # each write(2) must reach the server as it was made

    def __init__(self, session: Session, fs: Dialect, root_attr: Attr, config: Config):
        super().__init__()
        self.s = session
        self.fs = fs
        self.config = config
        self.table = InodeTable(session.root, root_attr)
        self.handles: dict[int, Handle | DirHandle] = {}
        self._next_fh = 1
        self.nursery: trio.Nursery | None = None  # for read-ahead; set by the mount
        self.enable_writeback_cache = config.writeback

    async def _again_if_lost(self, may_repeat: bool, fn, *args):
        """fn(*args); if the connection was lost in flight and reconnect is on, what may
        be sent twice is sent again on the new connection (waiting for it, within its
        bound); what may not (a create, a remove: did it happen?) is EIO."""
        for attempt in range(_ATTEMPTS):
            try:
                return await fn(*args)
            except ConnectionLost:
                if not may_repeat or self.s.redial is None or attempt == _ATTEMPTS - 1:
                    raise
                await self.s.wait_reconnected()

    def counts(self) -> str:
        """What a leak would show in: inodes the kernel holds, fids the server holds for
        us, open handles and requests waiting on the server."""
        walked = sum(1 for n in self.table.inodes.values() if n.fid is not None)
        return (f"{len(self.table.inodes)} inodes ({walked} walked), {self.s.fids.live} fids,"
                f" {len(self.handles)} open handles, {self.s.in_flight()} requests in flight")

    async def clunk_all(self) -> None:
        """At unmount: Tclunk every fid we still know of (the kernel sends no FORGET then),
        so that the server is left holding nothing of ours; a fid still held after this
        was leaked, and diod counts it when the connection closes."""
        fids = [h.fid for h in self.handles.values() if isinstance(h, Handle)]
        fids += [f for h in self.handles.values() if isinstance(h, DirHandle)
                 for _, _, f in h.entries if f is not None]
        fids += [n.fid for n in self.table.inodes.values()
                 if n.fid is not None and n is not self.table.root]
        self.handles.clear()
        self.table.inodes = {self.table.root.ino: self.table.root}
        if not self.s.broken:
            with trio.move_on_after(5):  # a server that stopped answering keeps them
                await self._clunk_many(fids, shield=False)

    def _log(self, line: str) -> None:
        if self.config.log:
            self.config.log(line)

    # --- helpers

    def _entry(self, node: Inode) -> pyfuse3.EntryAttributes:
        a = node.attr
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.ino
        e.generation = 0
        e.entry_timeout = self.config.entry_timeout
        e.attr_timeout = self.config.attr_timeout
        e.st_mode, e.st_nlink, e.st_uid, e.st_gid = a.mode, a.nlink, a.uid, a.gid
        e.st_rdev, e.st_size, e.st_blksize, e.st_blocks = a.rdev, a.size, a.blksize, a.blocks
        e.st_atime_ns, e.st_mtime_ns, e.st_ctime_ns = a.atime_ns, a.mtime_ns, a.ctime_ns
        return e

    async def _fid(self, node: Inode) -> Fid:
        """The inode's walked fid, walking it now (by name from its parent) if need be."""
        if node.ino == ROOT:
            return self.s.root  # attached anew after a reconnect
        if node.fid is not None and self.s.is_stale(node.fid):
            stale, node.fid = node.fid, None  # lost with its connection: walk again
            await self.s.clunk(stale)
        while node.fid is None:
            where = node.parent, node.name
            parent = self.table.get(node.parent)
            fid = await self.s.walk(await self._fid(parent), [node.name])
            if node.fid is not None or (node.parent, node.name) != where:
                # another request walked it meanwhile (keep one), or it was renamed
                # under the walk (diod's fids follow paths: walk the new name)
                await self.s.clunk(fid)
            else:
                node.fid = fid
        return node.fid

    def _add_handle(self, h) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = h
        return fh

    async def _learn(self, parent: Inode, name: str, fid: Fid | None = None) -> Inode:
        """Walk parent/name (unless fid is it already), get its attributes, count a lookup."""
        if fid is None:
            fid = await self.s.walk(await self._fid(parent), [name])
        try:
            attr = await self.fs.getattr(fid)
        except BaseException:
            await self.s.clunk(fid)
            raise
        return await self._know(parent, name, attr, fid)

    async def _know(self, parent: Inode, name: str, attr: Attr, fid: Fid | None) -> Inode:
        """Count a lookup of parent/name, whose attributes are attr and which fid (if
        not None) was walked to."""
        was = self._where(self.table.inodes.get(self.table.ino_for(attr.qid)))
        node, _ = self.table.remember(attr, parent.ino, name)
        await self._keep_fid(node, fid, was)
        return node

    @staticmethod
    def _where(node: Inode | None) -> tuple | None:
        return None if node is None else (node.parent, node.name, node.attr and
                                          S.S_IFMT(node.attr.mode))

    async def _keep_fid(self, node: Inode, fid: Fid | None, was: tuple | None) -> None:
        """fid was just walked to node's name: keep one walked fid per inode. If the
        inode was known under another name or type, its qid.path is being reused by a
        new file (diod on ext4 hands out a freed inode number at once) or the file was
        moved: the old fid may name the old file, so the new one replaces it."""
        if node.fid is None:
            node.fid = fid
        elif was is not None and was != self._where(node):
            old, node.fid = node.fid, fid  # None: walked again when next needed
            await self.s.clunk(old)
        elif fid is not None:
            await self.s.clunk(fid)

    # --- names

    @fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        """Twalk parent fid -> new fid [name], then Tstat/Tgetattr. Walked only because
        the kernel asked: a walk can have side effects (acme's new)."""
        parent = self.table.get(parent_inode)
        name = os.fsdecode(name)
        if name == ".":
            node = parent
            node.lookups += 1
            return self._entry(node)
        return self._entry(await self._learn(parent, name))

    async def forget(self, inode_list):
        """Tclunk the fids of inodes the kernel has forgotten."""
        gone = [n for ino, k in inode_list if (n := self.table.forget(ino, k)) is not None]
        fids = [n.fid for n in gone if n.fid is not None]
        await self._clunk_many(fids)

    async def _clunk_many(self, fids: list[Fid], shield: bool = True) -> None:
        # a drop of the kernel's caches forgets 100,000 inodes at once: a few workers
        # keep the clunks in flight, rather than 100,000 tasks waiting for tags
        async def worker():
            while fids:
                await self.s.clunk(fids.pop(), shield=shield)

        async with trio.open_nursery() as nursery:
            for _ in range(min(len(fids), 64)):
                nursery.start_soon(worker)

    @fuse_errors
    async def getattr(self, inode, ctx=None):
        """Tstat (9P2000/.u) or Tgetattr (.L) on the inode's walked fid."""
        node = self.table.get(inode)
        node.attr = await self.fs.getattr(await self._fid(node))
        self.table.touch(node)
        return self._entry(node)

    @fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        """Twstat or Tsetattr with only the changed fields (a truncate to 0 on 9P2000 is
        Topen with OTRUNC, which synthetic servers honour)."""
        node = self.table.get(inode)
        ch = SetAttr()
        if fields.update_mode:
            ch.mode = S.S_IMODE(attr.st_mode)
        if fields.update_uid:
            ch.uid = attr.st_uid
        if fields.update_gid:
            ch.gid = attr.st_gid
        if fields.update_size:
            ch.size = attr.st_size
        if fields.update_atime:
            ch.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            ch.mtime_ns = attr.st_mtime_ns
        fid = await self._fid(node)
        await self.fs.setattr(fid, ch)
        # What a Tsetattr did is known without a Tgetattr (tar sets the owner, mode and
        # times of every file it makes: three round trips fewer a file). What the
        # server adjusted itself (a setgid bit dropped, ctime) the kernel learns at
        # its next stat: it is told to keep these attributes for no time.
        guess = self.fs.predict(node.attr, ch) if node.attr is not None else None
        node.attr = guess or await self.fs.getattr(fid)
        self._changed(node)
        e = self._entry(node)
        if guess is not None:
            e.attr_timeout = 0
        return e

    @fuse_errors
    async def readlink(self, inode, ctx):
        """Treadlink (.L), or the extension of a DMSYMLINK file's stat (.u)."""
        node = self.table.get(inode)
        return os.fsencode(await self.fs.readlink(await self._fid(node)))

    # --- files

    def _direct(self, a: Attr, synthetic: bool) -> bool:
        # length 0 may still hold data (synthetic files): only direct I/O shows it
        return self.config.cache == "none" or a.volatile or synthetic or not S.S_ISREG(a.mode)

    def _file_info(self, node: Inode, fid: Fid, flags: int,
                   created: bool = False) -> pyfuse3.FileInfo:
        a = node.attr
        # a file of length 0 is taken for a synthetic one, unless we just made it; one we
        # just made is still written with direct I/O, whose large writes (up to 1 MiB,
        # several Twrites in flight) are twice as fast as the page cache's write-through
        synthetic = a.size == 0 and not created
        fi = pyfuse3.FileInfo()
        fi.direct_io = self._direct(a, synthetic) or (created and not self.config.writeback)
        h = Handle(fid, node, bool(flags & os.O_APPEND), synthetic)
        if (not h.synthetic and S.S_ISREG(a.mode) and flags & os.O_ACCMODE != os.O_WRONLY
                and self.nursery is not None and self.config.readahead):
            h.ra = ReadAhead(self.s, fid, self.config.readahead, self.nursery, a.size)
            node.readaheads = (node.readaheads or []) + [h.ra]
        # direct I/O on a file we did not just make: its writer waits on the server
        h.flags, h.watch = flags, fi.direct_io and not created
        fi.fh = self._add_handle(h)
        # keep cached pages only if the file is unchanged since they were read
        key = (a.qid.version, a.mtime_ns, a.size)
        fi.keep_cache = not fi.direct_io and node.cache_key == key
        node.cache_key = key
        return fi

    def _path(self, node: Inode) -> str | None:
        """Where node is under the mount point, as /proc shows open files."""
        if self.config.mountpoint is None:
            return None
        parts = []
        while node.ino != ROOT:
            parts.append(node.name)
            node = self.table.inodes.get(node.parent)
            if node is None:
                return None
        return os.path.join(self.config.mountpoint, *reversed(parts))

    async def _interruptible(self, node: Inode, opener: int | None, fn):
        """await fn(), but EINTR once the caller has given up (fs/interrupt.py): the
        cancelled request is flushed on the server. For what may block by design: a
        read, a command written to a synthetic file, an open (of a listen file)."""
        if self.nursery is None:
            return await fn()
        with trio.CancelScope() as cs:
            watcher = trio.CancelScope()

            async def watch():
                with watcher:
                    await interrupt.watch(cs, self._path(node), opener)

            self.nursery.start_soon(watch)
            try:
                return await fn()
            finally:
                watcher.cancel()
        raise pyfuse3.FUSEError(E.EINTR)

    async def _open_fid(self, h: Handle) -> Fid:
        """The handle's open fid; after a reconnect, the file opened again with the same
        flags (but not truncated again). What cannot be opened again the same way (an
        exclusive file, which another client may hold now; a file removed meanwhile)
        fails this handle only."""
        if not self.s.is_stale(h.fid):
            return h.fid
        if h.lost is None:
            old = h.fid
            await self.s.clunk(old)
            if h.node.attr is not None and h.node.attr.qid.type & 0x20:  # QTEXCL
                h.lost = "exclusive file: its open was lost with the connection"
            else:
                try:
                    fid = await self.s.walk(await self._fid(h.node), [])
                    try:
                        await self.fs.open(fid, h.flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL))
                    except BaseException:
                        await self.s.clunk(fid)
                        raise
                except ConnectionLost:
                    h.fid = old  # still stale: try again on the next connection
                    raise
                except OSError as e:
                    h.lost = f"cannot open it again after the reconnect: {e}"
                else:
                    h.fid = fid
                    if h.ra is not None:
                        old_ra = h.ra
                        h.ra = ReadAhead(self.s, fid, self.config.readahead, self.nursery,
                                         h.ra.size)
                        h.node.readaheads = [h.ra if r is old_ra else r
                                             for r in h.node.readaheads]
                    return fid
            self._log(f"{self._path(h.node) or h.node.name}: {h.lost}")
        raise P9Error(E.EIO, h.lost)

    @fuse_errors
    async def open(self, inode, flags, ctx):
        """Twalk a clone of the inode's fid, Topen/Tlopen it (O_TRUNC -> OTRUNC)."""
        node = self.table.get(inode)
        if self.config.writeback and flags & os.O_ACCMODE == os.O_WRONLY:
            # with the writeback cache the kernel also reads through write-only handles
            flags = flags & ~os.O_ACCMODE | os.O_RDWR
        fid = await self.s.walk(await self._fid(node), [])
        try:
            await self._interruptible(node, ctx.pid if ctx else None,
                                      lambda: self.fs.open(fid, flags))
            # fresh attributes decide between the page cache and direct I/O
            node.attr = await self.fs.getattr(fid)
            self.table.touch(node)
        except BaseException:
            await self.s.clunk(fid)
            raise
        fi = self._file_info(node, fid, flags)
        self.handles[fi.fh].opener = ctx.pid if ctx else None
        return fi

    @fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        """Tcreate/Tlcreate on a clone of the directory's fid, which becomes the open
        file; a name that exists is EEXIST from the server, which O_EXCL needs."""
        parent = self.table.get(parent_inode)
        name = os.fsdecode(name)
        dirfid = await self._fid(parent)
        fid = await self.s.walk(dirfid, [])
        try:
            await self.fs.create(fid, name, flags, S.S_IMODE(mode))
            # the new file's attributes through the open fid, and its name walked for
            # the inode, at once: one round trip where there were two
            walked, attr = await _together(lambda: self.s.walk(dirfid, [name]),
                                           lambda: self.fs.getattr(fid))
            if isinstance(walked, Exception):
                walked = None  # the inode's fid is walked when first needed
            elif isinstance(attr, Exception) or walked.qid.path != attr.qid.path:
                await self.s.clunk(walked)  # of no use, or another file took the name
                walked = None
            if isinstance(attr, Exception):
                raise attr
        except BaseException:
            await self.s.clunk(fid)
            raise
        node = await self._know(parent, name, attr, walked)
        return self._file_info(node, fid, flags, created=True), self._entry(node)

    @fuse_errors
    async def read(self, fh, off, size):
        """One Tread for a synthetic file (length 0), of at most iounit bytes: it answers
        each read as it likes, and a second Tread in flight would consume (and lose) its
        next event. Any other file's read is filled by several Treads in flight: the
        kernel takes a short answer for the end of the file."""
        h = self.handles[fh]
        fid = await self._open_fid(h)
        if h.ra is not None:
            if h.watch:  # its reader waits on us, not on the page cache: may give up
                try:
                    return await self._interruptible(h.node, h.opener,
                                                     lambda: h.ra.read(off, size))
                except pyfuse3.FUSEError:
                    h.ra.abort()
                    raise
            return await h.ra.read(off, size)
        if h.synthetic:
            size = min(size, self.s.iounit(fid))
        # what may block by design (synthetic, uncached, not a regular file) has no
        # deadline but its caller's patience; an ordinary file's read has timeout=
        timeout = None if h.synthetic or h.watch else self.s.op_timeout
        return await self._interruptible(
            h.node, h.opener, lambda: self.s.read(fid, off, size, timeout=timeout))

    @fuse_errors
    async def write(self, fh, off, buf):
        """One Twrite with exactly these bytes when they fit in iounit (a ctl file reads
        one command per write), else several in flight."""
        h = self.handles[fh]
        # the same bytes at the same offset may be sent again; an append or a command
        # to a synthetic file may not (did the first one land?)
        return await self._again_if_lost(not (h.append or h.synthetic), self._write, h, off,
                                         buf)

    async def _write(self, h: Handle, off: int, buf) -> int:
        fid = await self._open_fid(h)
        if h.append and not (h.node.attr and h.node.attr.volatile):
            off = (await self.fs.getattr(fid)).size  # O_APPEND: at the server's end
        # an append larger than one Twrite goes one Twrite at a time: a server that
        # opened with O_APPEND (diod) appends each where it lands, so in order of arrival
        window = 1 if h.append else None
        if h.watch:  # a command that blocks must end on a signal
            n = await self._interruptible(
                h.node, h.opener, lambda: self.s.write(fid, off, buf, window=window))
        else:
            n = await self.s.write(fid, off, buf, window=window)
        if h.node.attr and off + n > h.node.attr.size:
            h.node.attr.size = off + n
        self._changed(h.node)
        return n

    def _changed(self, node: Inode) -> None:
        """We changed node (a write, a truncate): its attributes are the newest, and
        what any of its handles read ahead may be old bytes, or a false end of file."""
        self.table.touch(node)
        for ra in node.readaheads or ():
            ra.reset(-1)
            if node.attr is not None:
                ra.size = node.attr.size

    @fuse_errors
    async def flush(self, fh):
        """Nothing to send: 9P has no close but clunk, which release does."""

    @fuse_errors
    async def release(self, fh):
        """Tclunk the open fid."""
        h = self.handles.pop(fh)
        if h.ra is not None:
            h.node.readaheads = [r for r in h.node.readaheads if r is not h.ra] or None
            await h.ra.close()
        await self.s.clunk(h.fid)

    @fuse_errors
    async def fsync(self, fh, datasync):
        """Tfsync (.L), or a wstat that changes nothing: commit to stable storage."""
        await self.fs.fsync(await self._open_fid(self.handles[fh]), datasync)

    # --- directories

    @fuse_errors
    async def opendir(self, inode, ctx):
        """Read the whole listing now (Tread of stat records, or Treaddir), so that every
        entry is given exactly once whatever buffer the caller reads with. On .L, whose
        listing has no attributes, each entry is walked and Tgetattr'd, many in flight."""
        node = self.table.get(inode)
        listing = await self.fs.readdir(await self._fid(node))
        h = DirHandle(node, seen=self.table.clock)
        parent = self.table.get(node.parent)
        h.entries = [(".", node.attr, None), ("..", parent.attr or node.attr, None)]
        missing = [i for i, e in enumerate(listing) if e.attr is None]
        fids: dict[int, Fid] = {}
        if missing:
            dirfid = await self._fid(node)
            limiter = trio.Semaphore(self.config.readdir_window)

            lost: list[ConnectionLost] = []  # then the listing is incomplete: no answer

            async def fetch(i):
                async with limiter:
                    try:
                        fid = await self.s.walk(dirfid, [listing[i].name])
                    except ConnectionLost as e:
                        lost.append(e)
                        return
                    except P9Error:
                        return  # gone since the listing: leave it out
                    try:
                        listing[i].attr = await self.fs.getattr(fid)
                        fids[i] = fid
                    except P9Error as e:
                        if isinstance(e, ConnectionLost):
                            lost.append(e)
                        await self.s.clunk(fid)

            async with trio.open_nursery() as nursery:
                for i in missing:
                    nursery.start_soon(fetch, i)
            if lost:
                for fid in fids.values():
                    await self.s.clunk(fid)
                raise lost[0]
        h.entries += [(e.name, e.attr, fids.get(i)) for i, e in enumerate(listing) if e.attr]
        return self._add_handle(h)

    @fuse_errors
    async def readdir(self, fh, start_id, token):
        """Hand entries to the kernel from start_id on; each one it takes is a lookup."""
        h = self.handles[fh]
        for i in range(start_id, len(h.entries)):
            name, attr, fid = h.entries[i]
            if name in (".", ".."):  # the kernel counts no lookup for these
                node = h.node if name == "." else self.table.get(h.node.parent)
                if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(node), i + 1):
                    return
                continue
            # the listing's attributes, unless a write or setattr since it was read made
            # newer ones (the kernel takes what it is given here as current)
            ino = self.table.place(attr.qid, h.seen)
            known = self.table.inodes.get(ino)
            if known is not None and known.attr is not None and known.seen > h.seen:
                attr = known.attr
            probe = Inode(ino, attr.qid, h.node.ino, name, None, 0, attr)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(probe), i + 1):
                return
            was = self._where(known)
            newer = known is not None and known.seen > h.seen  # renamed or written since
            node, _ = self.table.remember(attr, h.node.ino, name, seen=h.seen)
            if fid is not None:
                h.entries[i] = (name, attr, None)
                if newer:  # walked by a name it may no longer have
                    await self.s.clunk(fid)
                else:
                    await self._keep_fid(node, fid, was)

    @fuse_errors
    async def releasedir(self, fh):
        """Tclunk the fids walked for entries the kernel never took."""
        h = self.handles.pop(fh)
        for _, _, fid in h.entries:
            if fid is not None:
                await self.s.clunk(fid)

    @fuse_errors
    async def fsyncdir(self, fh, datasync):
        h = self.handles[fh]
        await self.fs.fsync(await self._fid(h.node), datasync)

    @fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        """Tmkdir (.L), or Tcreate with DMDIR on a clone (9P2000/.u)."""
        parent = self.table.get(parent_inode)
        name = os.fsdecode(name)
        await self.fs.mkdir(await self._fid(parent), name, S.S_IMODE(mode))
        return self._entry(await self._learn(parent, name))

    async def _remove(self, parent_inode, name, is_dir: bool) -> None:
        parent = self.table.get(parent_inode)
        await self.fs.unlink(await self._fid(parent), os.fsdecode(name), is_dir)
        self.table.removed(parent.ino, os.fsdecode(name), is_dir)

    @fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        """Tunlinkat with AT_REMOVEDIR (.L), or Twalk + Tremove."""
        await self._remove(parent_inode, name, True)

    @fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        """Tunlinkat (.L), or Twalk + Tremove."""
        await self._remove(parent_inode, name, False)

    @fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        """Trenameat (.L), or a wstat of the name (9P2000: same directory only, else
        EXDEV so that mv copies). The moved inode then walks a fresh fid under its new
        name: servers such as u9fs track fids by path."""
        if flags:
            raise P9Error(E.EINVAL, "rename flags are not supported")
        old, new = self.table.get(parent_inode_old), self.table.get(parent_inode_new)
        name_old, name_new = os.fsdecode(name_old), os.fsdecode(name_new)
        oldfid, newfid = await self._fid(old), await self._fid(new)
        fid = await self.s.walk(oldfid, [name_old])
        try:
            await self.fs.rename(oldfid, name_old, newfid, name_new, fid)
            qid = fid.qid
        finally:
            await self.s.clunk(fid)
        node = self.table.inodes.get(self.table.ino_for(qid))
        if node is not None and node.ino != ROOT:
            self.table.removed(new.ino, name_new, False)  # what the rename replaced
            self.table.rename(node, new.ino, name_new)
            self.table.touch(node)  # newer than any listing read before the rename
            stale, node.fid = node.fid, None
            if stale is not None:
                await self.s.clunk(stale)

    @fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        """Tsymlink (.L), Tcreate with DMSYMLINK (.u); ENOTSUP on 9P2000."""
        parent = self.table.get(parent_inode)
        name = os.fsdecode(name)
        await self.fs.symlink(await self._fid(parent), name, os.fsdecode(target))
        return self._entry(await self._learn(parent, name))

    @fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        """Tlink (.L), Tcreate with DMLINK (.u); ENOTSUP on 9P2000."""
        node = self.table.get(inode)
        parent = self.table.get(new_parent_inode)
        name = os.fsdecode(new_name)
        await self.fs.link(await self._fid(parent), await self._fid(node), name)
        return self._entry(await self._learn(parent, name))

    @fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        """Tmknod (.L), Tcreate with DMDEVICE/DMNAMEDPIPE/DMSOCKET (.u)."""
        parent = self.table.get(parent_inode)
        name = os.fsdecode(name)
        await self.fs.mknod(await self._fid(parent), name, mode, rdev)
        return self._entry(await self._learn(parent, name))

    @fuse_errors
    async def statfs(self, ctx):
        """Tstatfs (.L). Other dialects have none: no block counts, but a real maximum
        name length, since programs size their name buffers from it."""
        st = await self.fs.statfs(self.s.root)
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = st.bsize
        out.f_blocks, out.f_bfree, out.f_bavail = st.blocks, st.bfree, st.bavail
        out.f_files, out.f_ffree, out.f_favail = st.files, st.ffree, st.ffree
        out.f_namemax = st.namelen
        return out

    # --- extended attributes (.L; the others answer ENOTSUP, which the kernel remembers)

    # ls -l asks for security.selinux and system.posix_acl_access on every file: a round
    # trip each, for names no 9P server keeps for us (the kernel enforces neither here).
    # Only the user. and trusted. namespaces go to the server.
    _LOCAL_ONLY = (b"security.", b"system.")

    @fuse_errors
    async def getxattr(self, inode, name, ctx):
        if name.startswith(self._LOCAL_ONLY):
            raise pyfuse3.FUSEError(E.ENODATA)
        node = self.table.get(inode)
        return await self.fs.getxattr(await self._fid(node), os.fsdecode(name))

    @fuse_errors
    async def listxattr(self, inode, ctx):
        node = self.table.get(inode)
        try:
            names = await self.fs.getxattr(await self._fid(node), "")
        except P9Error as e:
            if e.errno == E.ENODATA:
                return []
            raise
        return [n for n in names.split(b"\0") if n]

    @fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        if name.startswith(self._LOCAL_ONLY):
            raise pyfuse3.FUSEError(E.EOPNOTSUPP)  # cp -a goes on without them
        node = self.table.get(inode)
        await self.fs.setxattr(await self._fid(node), os.fsdecode(name), value)

    @fuse_errors
    async def removexattr(self, inode, name, ctx):
        node = self.table.get(inode)
        await self.fs.setxattr(await self._fid(node), os.fsdecode(name), b"", XATTR_REPLACE)

    @fuse_errors
    async def access(self, inode, mode, ctx):
        """From the attributes we have: never by opening the file (that has effects)."""
        node = self.table.get(inode)
        a = node.attr or await self.fs.getattr(await self._fid(node))
        if ctx.uid == 0:
            return not mode & os.X_OK or bool(a.mode & 0o111) or S.S_ISDIR(a.mode)
        bits = a.mode >> 6 if ctx.uid == a.uid else a.mode >> 3 if ctx.gid == a.gid else a.mode
        want = (4 if mode & os.R_OK else 0) | (2 if mode & os.W_OK else 0) | \
            (1 if mode & os.X_OK else 0)
        return bits & want == want
