"""What the FUSE layer needs from a file server, said once for each dialect.

The FUSE layer calls `getattr`, `readdir`, `mkdir`, ... on an adapter and never asks
which dialect it is talking to. 9P2000 answers with stat/wstat and directory reads,
9P2000.u adds numeric ids, symlinks, links and devices through Tcreate's extension,
9P2000.L has a message for each. What a dialect cannot say is a clean errno
(EXDEV for a cross-directory rename on 9P2000, ENOTSUP for a symlink there).
"""

from __future__ import annotations

import errno as E
import math
import os
import stat as S
import time
from dataclasses import dataclass, replace

from ..proto import (AT_REMOVEDIR, DMDEVICE, DMDIR, DMLINK, DMNAMEDPIPE, DMSETGID, DMSETUID,
                     DMSETVTX, DMSOCKET, DMSYMLINK, GETATTR_BASIC, NONUNAME, OREAD, ORDWR,
                     OTRUNC, OWRITE, P9_2000, P9_2000_L, P9_2000_U, QTAPPEND, QTEXCL,
                     SETATTR_ATIME, SETATTR_ATIME_SET, SETATTR_GID, SETATTR_MODE,
                     SETATTR_MTIME, SETATTR_MTIME_SET, SETATTR_SIZE, SETATTR_UID,
                     ProtocolError, Qid, Stat, unpack_dirents, unpack_stats)
from ..proto import messages as m
from .errors import P9Error, ServerError
from .fids import Fid
from .session import Session

O_ACCMODE = os.O_ACCMODE
# Flags that mean something to the client's kernel only, never to a Tlopen.
_NOT_FOR_LOPEN = os.O_CREAT | os.O_EXCL | os.O_NOCTTY
NOW = -1  # SetAttr time meaning "the server's current time"


@dataclass(slots=True)
class Attr:
    """A file's attributes in Linux terms, whatever the dialect said."""

    qid: Qid
    mode: int  # st_mode: type and permission bits
    uid: int
    gid: int
    nlink: int
    rdev: int
    size: int
    blksize: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    name: str = ""  # 9P2000/.u: the name in the stat record
    # The server says not to cache this file's data: qid.version 0 on a 9P2000 server,
    # or an append-only or exclusive file. Length 0 says the same to the FUSE layer.
    volatile: bool = False


def _same(t: int, mtime: int) -> int:
    """t, or the mtime object itself when equal: one int kept instead of two."""
    return mtime if t == mtime else t


@dataclass(slots=True)
class DirEntry:
    name: str
    qid: Qid
    attr: Attr | None  # 9P2000/.u listings carry attributes; .L's (Treaddir) do not


@dataclass(slots=True)
class StatFs:
    bsize: int = 4096
    blocks: int = 0
    bfree: int = 0
    bavail: int = 0
    files: int = 0
    ffree: int = 0
    namelen: int = 255  # programs size their name buffers from it: never 0


@dataclass(slots=True)
class SetAttr:
    """Changes to make; None keeps the current value. Times are ns since the epoch or NOW."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


def _unsupported(what: str, dialect: str) -> P9Error:
    return P9Error(E.EOPNOTSUPP, f"{what} is not possible in {dialect}")


class Dialect:
    """The interface, and what 9P2000 (stat/wstat, Topen/Tcreate) does."""

    name = P9_2000

    def __init__(self, session: Session, uid: int | None = None, gid: int | None = None):
        self.s = session
        # 9P2000 names owners with strings: files show as the mounting user's
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid

    # --- attributes

    def attr_from_stat(self, st: Stat) -> Attr:
        mode, rdev = self._linux_mode(st)
        volatile = st.qid.version == 0 or bool(st.qid.type & (QTAPPEND | QTEXCL))
        mtime = st.mtime * 10**9
        return Attr(st.qid, mode, self.uid, self.gid, 1, rdev, st.length, 4096,
                    math.ceil(st.length / 512), _same(st.atime * 10**9, mtime), mtime,
                    mtime, st.name, volatile)

    def _linux_mode(self, st: Stat) -> tuple[int, int]:
        kind = S.S_IFDIR if st.mode & DMDIR else S.S_IFREG
        return kind | st.mode & 0o777, 0

    async def stat(self, fid: Fid) -> Stat:
        return (await self.s.rpc(m.Tstat(fid.num))).stat

    async def _wstat(self, fid: Fid, st: Stat) -> None:
        await self.s.rpc(m.Twstat(fid.num, st))

    async def getattr(self, fid: Fid) -> Attr:
        st = await self.stat(fid)
        if st.qid == fid.qid:
            st.qid = fid.qid  # one Qid kept per file, not two equal ones
        return self.attr_from_stat(st)

    async def setattr(self, fid: Fid, ch: SetAttr) -> None:
        st = Stat.dont_touch()
        changed = False
        if ch.mode is not None:
            cur = await self.stat(fid)  # wstat must keep DMDIR and the other high bits
            st.mode = cur.mode & ~0o7777 & ~(DMSETUID | DMSETGID | DMSETVTX) | \
                self._dm_perm(ch.mode)
            changed = True
        if ch.size == 0:
            # synthetic servers (plumber, ...) honour Topen with OTRUNC, not a wstat
            await self._truncate(fid)
        elif ch.size is not None:
            st.length = ch.size
            changed = True
        if ch.mtime_ns is not None:  # stat(5): atime cannot be set; mtime by the owner
            st.mtime = int(self._now() if ch.mtime_ns == NOW else ch.mtime_ns // 10**9)
            changed = True
        if ch.uid is not None or ch.gid is not None:
            changed |= self._set_owner(st, ch)
        if changed:  # an all-"don't touch" wstat would mean fsync, not a no-op
            await self._wstat(fid, st)

    def predict(self, a: Attr, ch: SetAttr) -> Attr | None:
        """The attributes a setattr of ch that succeeded left, without asking the server,
        or None where only the server can say. 9P2000 and .u: None (a wstat's mode and
        times are the server's to round; owners are names)."""
        return None

    async def _truncate(self, fid: Fid) -> None:
        clone = await self.s.walk(fid, [])
        try:
            await self.s.rpc(m.Topen(clone.num, OWRITE | OTRUNC))
        finally:
            await self.s.clunk(clone)

    def _dm_perm(self, mode: int) -> int:
        return mode & 0o777

    def _set_owner(self, st: Stat, ch: SetAttr) -> bool:
        # files show as the mounting user's, so a chown to that user changes nothing
        # (tar and cp -p do it); any other owner cannot be said with 9P2000's names
        if ch.uid in (None, self.uid) and ch.gid in (None, self.gid):
            return False
        raise P9Error(E.EPERM, "9P2000 names owners by name: chown is not possible")

    @staticmethod
    def _now() -> float:
        return time.time()

    # --- opening and creating

    def omode(self, flags: int) -> int:
        mode = {os.O_RDONLY: OREAD, os.O_WRONLY: OWRITE, os.O_RDWR: ORDWR}[flags & O_ACCMODE]
        return mode | (OTRUNC if flags & os.O_TRUNC else 0)

    async def open(self, fid: Fid, flags: int) -> None:
        """Open a walked fid (not the inode's own: a clone) with Linux open flags."""
        mode = self.omode(flags)
        r = await self.s.rpc(m.Topen(fid.num, mode))
        fid.qid, fid.iounit, fid.mode = r.qid, r.iounit, mode

    async def create(self, fid: Fid, name: str, flags: int, mode: int) -> None:
        """Create name in the directory fid (a clone) and open it: fid becomes the file."""
        omode = self.omode(flags & ~os.O_TRUNC)
        r = await self.s.rpc(m.Tcreate(fid.num, name, self._dm_perm(mode), omode))
        fid.qid, fid.iounit, fid.mode = r.qid, r.iounit, omode

    async def _create_special(self, dirfid: Fid, name: str, perm: int, ext: str) -> Qid:
        clone = await self.s.walk(dirfid, [])
        try:
            r = await self.s.rpc(self._tcreate(clone.num, name, perm, OREAD, ext))
            return r.qid
        finally:
            await self.s.clunk(clone)

    def _tcreate(self, fid: int, name: str, perm: int, mode: int, ext: str) -> m.Message:
        if ext:
            raise _unsupported("a special file", self.name)
        return m.Tcreate(fid, name, perm, mode)

    async def mkdir(self, dirfid: Fid, name: str, mode: int) -> Qid:
        return await self._create_special(dirfid, name, DMDIR | self._dm_perm(mode), "")

    async def symlink(self, dirfid: Fid, name: str, target: str) -> Qid:
        raise _unsupported("a symbolic link", self.name)

    async def readlink(self, fid: Fid) -> str:
        raise P9Error(E.EINVAL, "9P2000 has no symbolic links")

    async def link(self, dirfid: Fid, fid: Fid, name: str) -> None:
        raise _unsupported("a hard link", self.name)

    async def mknod(self, dirfid: Fid, name: str, mode: int, rdev: int) -> Qid:
        if S.S_ISREG(mode):
            clone = await self.s.walk(dirfid, [])
            try:
                await self.create(clone, name, os.O_RDONLY, mode)
                return clone.qid
            finally:
                await self.s.clunk(clone)
        raise _unsupported("a device, pipe or socket", self.name)

    # --- names

    async def rename(self, olddir: Fid, oldname: str, newdir: Fid, newname: str,
                     fid: Fid) -> None:
        """Rename fid (olddir/oldname). 9P2000 renames by a wstat of the name, within one
        directory only: EXDEV across directories, so that mv copies and deletes."""
        if olddir.qid.path != newdir.qid.path:
            raise P9Error(E.EXDEV, "9P2000 cannot move a file to another directory")
        if oldname == newname:
            return
        try:
            await self._wstat(fid, Stat.dont_touch(name=newname))
        except ServerError as e:
            if e.errno != E.EEXIST:
                raise
            # rename(2) replaces the target; wstat will not, so remove it and go again
            await self.unlink(newdir, newname, False)
            await self._wstat(fid, Stat.dont_touch(name=newname))

    async def unlink(self, dirfid: Fid, name: str, is_dir: bool) -> None:
        fid = await self.s.walk(dirfid, [name])
        await self.s.remove(fid)

    # --- directories

    async def readdir(self, dirfid: Fid) -> list[DirEntry]:
        """Every entry of the directory, read through a clone opened for reading."""
        fid = await self.s.walk(dirfid, [])
        try:
            await self._open_dir(fid)
            return await self._read_entries(fid)
        finally:
            await self.s.clunk(fid)

    async def _open_dir(self, fid: Fid) -> None:
        r = await self.s.rpc(m.Topen(fid.num, OREAD))
        fid.qid, fid.iounit, fid.mode = r.qid, r.iounit, OREAD

    async def _read_entries(self, fid: Fid) -> list[DirEntry]:
        out, offset, unit = [], 0, self.s.iounit(fid)
        while True:  # directory offsets must follow on from the last read (read(5))
            data = (await self.s.rpc(m.Tread(fid.num, offset, unit))).data
            if not data:
                return out
            offset += len(data)
            for st in _parse(unpack_stats, data, self.name):
                if st.name not in (".", ".."):
                    out.append(DirEntry(st.name, st.qid, self.attr_from_stat(st)))

    # --- the file system

    async def statfs(self, fid: Fid) -> StatFs:
        return StatFs()

    async def fsync(self, fid: Fid, datasync: bool = False) -> None:
        # a wstat that changes nothing asks the server to commit the file (stat(5))
        await self._wstat(fid, Stat.dont_touch())

    async def lock(self, fid: Fid, type_: int, start: int, length: int, proc_id: int,
                   block: bool = False) -> int:
        raise _unsupported("a byte-range lock", self.name)

    async def getlock(self, fid: Fid, type_: int, start: int, length: int,
                      proc_id: int) -> m.Message:
        raise _unsupported("a byte-range lock", self.name)

    async def getxattr(self, fid: Fid, name: str) -> bytes:
        raise P9Error(E.ENODATA if name else E.EOPNOTSUPP, f"no extended attributes in {self.name}")

    async def setxattr(self, fid: Fid, name: str, value: bytes, flags: int = 0) -> None:
        raise _unsupported("an extended attribute", self.name)


class DialectU(Dialect):
    """9P2000.u: numeric ids, and special files through Tcreate's extension string."""

    name = P9_2000_U

    def __init__(self, session: Session, uid: int | None = None, gid: int | None = None):
        super().__init__(session, uid, gid)
        # Some .u servers (py9p -D) send and parse stat records without the .u part.
        # Once one of theirs is seen, ours go out in the same shape; until then, a
        # wstat asks for a stat first to find out.
        self._plain_stats: bool | None = None

    async def stat(self, fid: Fid) -> Stat:
        st = await super().stat(fid)
        self._plain_stats = st.extension is None
        return st

    async def _wstat(self, fid: Fid, st: Stat) -> None:
        if self._plain_stats is None:
            await self.stat(fid)
        if self._plain_stats:
            st.extension = None
        await super()._wstat(fid, st)

    def attr_from_stat(self, st: Stat) -> Attr:
        a = super().attr_from_stat(st)
        if st.n_uid != NONUNAME:
            a.uid = st.n_uid
        if st.n_gid != NONUNAME:
            a.gid = st.n_gid
        return a

    def _linux_mode(self, st: Stat) -> tuple[int, int]:
        dm, rdev = st.mode, 0
        if dm & DMDIR:
            kind = S.S_IFDIR
        elif dm & DMSYMLINK:
            kind = S.S_IFLNK
        elif dm & DMDEVICE:
            kind, rdev = self._device(st.extension)
        elif dm & DMNAMEDPIPE:
            kind = S.S_IFIFO
        elif dm & DMSOCKET:
            kind = S.S_IFSOCK
        else:
            kind = S.S_IFREG
        perm = dm & 0o777
        perm |= (S.S_ISUID if dm & DMSETUID else 0) | (S.S_ISGID if dm & DMSETGID else 0) | \
            (S.S_ISVTX if dm & DMSETVTX else 0)
        return kind | perm, rdev

    @staticmethod
    def _device(ext: str) -> tuple[int, int]:
        parts = ext.split()
        try:
            kind = S.S_IFBLK if parts[0] == "b" else S.S_IFCHR
            return kind, os.makedev(int(parts[1]), int(parts[2]))
        except (IndexError, ValueError):
            return S.S_IFCHR, 0

    def _dm_perm(self, mode: int) -> int:
        return mode & 0o777 | (DMSETUID if mode & S.S_ISUID else 0) | \
            (DMSETGID if mode & S.S_ISGID else 0) | (DMSETVTX if mode & S.S_ISVTX else 0)

    def _set_owner(self, st: Stat, ch: SetAttr) -> bool:
        if ch.uid is not None:
            st.n_uid = ch.uid
        if ch.gid is not None:
            st.n_gid = ch.gid
        return True

    def _tcreate(self, fid: int, name: str, perm: int, mode: int, ext: str) -> m.Message:
        return m.Tcreate(fid, name, perm, mode, extension=ext)

    async def symlink(self, dirfid: Fid, name: str, target: str) -> Qid:
        return await self._create_special(dirfid, name, DMSYMLINK | 0o777, target)

    async def readlink(self, fid: Fid) -> str:
        st = await self.stat(fid)
        if not st.mode & DMSYMLINK:
            raise P9Error(E.EINVAL, f"{st.name}: not a symbolic link")
        return st.extension or ""

    async def link(self, dirfid: Fid, fid: Fid, name: str) -> None:
        await self._create_special(dirfid, name, DMLINK, f"{fid.num}\n")

    async def mknod(self, dirfid: Fid, name: str, mode: int, rdev: int) -> Qid:
        perm = self._dm_perm(mode)
        if S.S_ISCHR(mode) or S.S_ISBLK(mode):
            kind = "c" if S.S_ISCHR(mode) else "b"
            ext = f"{kind} {os.major(rdev)} {os.minor(rdev)}"
            return await self._create_special(dirfid, name, DMDEVICE | perm, ext)
        if S.S_ISFIFO(mode):
            return await self._create_special(dirfid, name, DMNAMEDPIPE | perm, "")
        if S.S_ISSOCK(mode):
            return await self._create_special(dirfid, name, DMSOCKET | perm, "")
        return await super().mknod(dirfid, name, mode, rdev)


class DialectL(Dialect):
    """9P2000.L: a message for each operation, Linux numbers throughout."""

    name = P9_2000_L

    def __init__(self, session: Session, uid: int | None = None, gid: int | None = None):
        super().__init__(session, uid, gid)
        self._unlinkat = True  # diod 1.0.24 answers EOPNOTSUPP: then walk and Tremove
        self._renameat = True

    async def getattr(self, fid: Fid) -> Attr:
        r = await self.s.rpc(m.Tgetattr(fid.num, GETATTR_BASIC))
        mtime = r.mtime_sec * 10**9 + r.mtime_nsec
        # Kept per inode, so equal values share one object: the fid's Qid (10 MB over
        # 100,000 files), and times that are the same (an untouched file's often are).
        return Attr(fid.qid if r.qid == fid.qid else r.qid, r.mode, r.uid, r.gid, r.nlink,
                    r.rdev, r.size, r.blksize, r.blocks,
                    _same(r.atime_sec * 10**9 + r.atime_nsec, mtime), mtime,
                    _same(r.ctime_sec * 10**9 + r.ctime_nsec, mtime))

    async def setattr(self, fid: Fid, ch: SetAttr) -> None:
        valid, at, mt = 0, (0, 0), (0, 0)
        if ch.mode is not None:
            valid |= SETATTR_MODE
        if ch.uid is not None:
            valid |= SETATTR_UID
        if ch.gid is not None:
            valid |= SETATTR_GID
        if ch.size is not None:
            valid |= SETATTR_SIZE
        if ch.atime_ns is not None:
            valid |= SETATTR_ATIME | (0 if ch.atime_ns == NOW else SETATTR_ATIME_SET)
            at = divmod(max(ch.atime_ns, 0), 10**9)
        if ch.mtime_ns is not None:
            valid |= SETATTR_MTIME | (0 if ch.mtime_ns == NOW else SETATTR_MTIME_SET)
            mt = divmod(max(ch.mtime_ns, 0), 10**9)
        if valid:
            await self.s.rpc(m.Tsetattr(fid.num, valid, ch.mode or 0, _id(ch.uid), _id(ch.gid),
                                        ch.size or 0, *at, *mt))

    def predict(self, a: Attr, ch: SetAttr) -> Attr | None:
        """Tsetattr sets exactly what it is given, but for ctime (the server's clock:
        ours stands in). A size change also moves mtime by the server's clock: None."""
        if ch.size is not None or NOW in (ch.atime_ns, ch.mtime_ns):
            return None
        b = replace(a, ctime_ns=time.time_ns())
        if ch.mode is not None:
            b.mode = S.S_IFMT(a.mode) | ch.mode & 0o7777
        if ch.uid is not None:
            b.uid = ch.uid
        if ch.gid is not None:
            b.gid = ch.gid
        if ch.atime_ns is not None:
            b.atime_ns = ch.atime_ns
        if ch.mtime_ns is not None:
            b.mtime_ns = ch.mtime_ns
        return b

    async def open(self, fid: Fid, flags: int) -> None:
        flags &= ~_NOT_FOR_LOPEN
        r = await self.s.rpc(m.Tlopen(fid.num, flags))
        fid.qid, fid.iounit, fid.mode = r.qid, r.iounit, flags

    async def create(self, fid: Fid, name: str, flags: int, mode: int) -> None:
        r = await self.s.rpc(m.Tlcreate(fid.num, name, flags | os.O_CREAT, mode & 0o7777,
                                        self.gid))
        fid.qid, fid.iounit, fid.mode = r.qid, r.iounit, flags

    async def mkdir(self, dirfid: Fid, name: str, mode: int) -> Qid:
        return (await self.s.rpc(m.Tmkdir(dirfid.num, name, mode & 0o7777, self.gid))).qid

    async def symlink(self, dirfid: Fid, name: str, target: str) -> Qid:
        return (await self.s.rpc(m.Tsymlink(dirfid.num, name, target, self.gid))).qid

    async def readlink(self, fid: Fid) -> str:
        return (await self.s.rpc(m.Treadlink(fid.num))).target

    async def link(self, dirfid: Fid, fid: Fid, name: str) -> None:
        await self.s.rpc(m.Tlink(dirfid.num, fid.num, name))

    async def mknod(self, dirfid: Fid, name: str, mode: int, rdev: int) -> Qid:
        r = await self.s.rpc(m.Tmknod(dirfid.num, name, mode, os.major(rdev), os.minor(rdev),
                                      self.gid))
        return r.qid

    async def rename(self, olddir: Fid, oldname: str, newdir: Fid, newname: str,
                     fid: Fid) -> None:
        if self._renameat:
            try:
                await self.s.rpc(m.Trenameat(olddir.num, oldname, newdir.num, newname))
                return
            except ServerError as e:
                if e.errno not in (E.EOPNOTSUPP, E.ENOSYS):
                    raise
                self._renameat = False
        await self.s.rpc(m.Trename(fid.num, newdir.num, newname))

    async def unlink(self, dirfid: Fid, name: str, is_dir: bool) -> None:
        if self._unlinkat:
            try:
                await self.s.rpc(m.Tunlinkat(dirfid.num, name, AT_REMOVEDIR if is_dir else 0))
                return
            except ServerError as e:
                if e.errno not in (E.EOPNOTSUPP, E.ENOSYS):
                    raise
                self._unlinkat = False
        await super().unlink(dirfid, name, is_dir)

    async def _open_dir(self, fid: Fid) -> None:
        await self.open(fid, os.O_RDONLY | os.O_DIRECTORY)

    async def _read_entries(self, fid: Fid) -> list[DirEntry]:
        out, offset, unit = [], 0, self.s.iounit(fid)
        while True:  # offsets are the server's cookies: each entry says where to go on
            data = (await self.s.rpc(m.Treaddir(fid.num, offset, unit))).data
            if not data:
                return out
            entries = _parse(unpack_dirents, data)
            offset = entries[-1].offset
            out += [DirEntry(d.name, d.qid, None) for d in entries if d.name not in (".", "..")]

    async def statfs(self, fid: Fid) -> StatFs:
        r = await self.s.rpc(m.Tstatfs(fid.num))
        return StatFs(r.bsize, r.blocks, r.bfree, r.bavail, r.files, r.ffree, r.namelen or 255)

    async def fsync(self, fid: Fid, datasync: bool = False) -> None:
        await self.s.rpc(m.Tfsync(fid.num, int(datasync)))

    async def lock(self, fid: Fid, type_: int, start: int, length: int, proc_id: int,
                   block: bool = False) -> int:
        kw = {"timeout": None} if block else {}  # a blocking lock waits as long as its caller
        r = await self.s.rpc(m.Tlock(fid.num, type_, int(block), start, length, proc_id,
                                     os.uname().nodename), **kw)
        return r.status

    async def getlock(self, fid: Fid, type_: int, start: int, length: int,
                      proc_id: int) -> m.Message:
        return await self.s.rpc(m.Tgetlock(fid.num, type_, start, length, proc_id,
                                           os.uname().nodename))

    async def getxattr(self, fid: Fid, name: str) -> bytes:
        """The value of xattr name; name "" lists the names, NUL-separated (listxattr)."""
        num = self.s.fids.alloc()
        try:
            r = await self.s.rpc(m.Txattrwalk(fid.num, num, name))
        except BaseException:
            self.s.fids.release(num)
            raise
        xfid = Fid(num, fid.qid)
        try:
            return await self.s.read(xfid, 0, r.size) if r.size else b""
        finally:
            await self.s.clunk(xfid)

    async def setxattr(self, fid: Fid, name: str, value: bytes, flags: int = 0) -> None:
        clone = await self.s.walk(fid, [])
        try:  # the server sets the attribute when the fid is clunked (xattrcreate)
            await self.s.rpc(m.Txattrcreate(clone.num, name, len(value), flags))
            if value:
                await self.s.write(clone, 0, value)
        finally:
            await self.s.clunk(clone)


def _parse(unpack, *args):
    try:
        return unpack(*args)
    except ProtocolError as e:
        raise P9Error(E.EIO, f"the server sent a broken directory listing: {e}") from None


def _id(n: int | None) -> int:
    return 0 if n is None else n


def dialect_for(session: Session, uid: int | None = None, gid: int | None = None) -> Dialect:
    cls = {P9_2000: Dialect, P9_2000_U: DialectU, P9_2000_L: DialectL}[session.dialect]
    return cls(session, uid, gid)
