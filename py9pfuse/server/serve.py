"""A small 9P2000 file server on trio, serving a ramfs tree (server/ramfs.py).

It is the demo's server and a test instrument for what no real peer offers: files of
length 0 that hold data, a ctl file, a read that blocks until an event. Each request
runs in its own task, so a blocked read holds up nobody else, and Tflush cancels it.
It speaks 9P2000 only; a client asking for .u or .L is answered "9P2000" (version(5)).
"""

from __future__ import annotations

import errno as E
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .. import proto as p
from ..proto import messages as m
from .p9auth import AfidConversation, AuthConfig
from .ramfs import Node

MSIZE = 65536 + p.IOHDRSZ


class Refused(Exception):
    """An Rerror to send: the text is what the client reads."""

    def __init__(self, errno: int, text: str | None = None):
        super().__init__(text or p.ename_for(errno))


@dataclass
class FidState:
    node: Node
    mode: int | None = None  # open mode, None while only walked
    listing: bytes = b""  # a directory read's stat records, fixed at the first read
    dir_offset: int = 0
    conv: AfidConversation | None = None  # set on an afid: reads and writes go to it


@dataclass
class Conn:
    root: Node
    msize: int = MSIZE
    fids: dict[int, FidState] = field(default_factory=dict)
    tasks: dict[int, trio.CancelScope] = field(default_factory=dict)  # tag -> its request
    nursery: trio.Nursery | None = None
    send: Callable[[bytes], Awaitable[None]] | None = None  # whole frames, one at a time
    stream: trio.abc.Stream | None = None


class Server:
    """Serves root; with `auth`, every attach must carry an afid that passed p9sk1."""

    def __init__(self, root: Node, log=None, auth: AuthConfig | None = None, faults=None):
        self.root = root
        self.log = log
        self.auth_config = auth  # (self.auth is the Tauth handler)
        self.faults = faults  # server/faults.py: answer some requests wrongly, on purpose

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = Conn(self.root)
        framer = p.Framer(MSIZE)
        send_lock = trio.Lock()

        async def send(data: bytes) -> None:
            async with send_lock:
                await stream.send_all(data)

        conn.send, conn.stream = send, stream

        async def reply(msg: p.Message, tag: int) -> None:
            msg.tag = tag
            await conn.send(p.encode(msg, p.P9_2000))

        async with stream, trio.open_nursery() as nursery:
            conn.nursery = nursery
            while True:
                try:
                    data = await stream.receive_some(1 << 16)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                try:
                    framer.feed(data)
                    frames = list(framer.frames())
                except p.ProtocolError:
                    break  # framing is lost: nothing sensible can follow
                for frame in frames:
                    try:
                        msg = p.decode(frame, p.P9_2000)
                    except p.ProtocolError as e:
                        if e.tag is not None:
                            await reply(m.Rerror(f"bad message: {e}"), e.tag)
                        continue
                    if msg.NAME == "Tflush":
                        await self._flush(conn, msg, reply)
                    elif msg.NAME == "Tversion":
                        await reply(self._version(conn, msg, framer), p.NOTAG)
                    else:
                        scope = trio.CancelScope()
                        conn.tasks[msg.tag] = scope
                        nursery.start_soon(self._run, conn, msg, scope, reply)
            nursery.cancel_scope.cancel()

    async def _run(self, conn: Conn, msg: p.Message, scope: trio.CancelScope, reply) -> None:
        with scope:
            fault = self.faults is not None and self.faults.fires(conn, msg)
            try:
                r = await getattr(self, msg.NAME[1:].lower())(conn, msg)
            except Refused as e:
                r = m.Rerror(str(e))
            except Exception as e:  # a bug here must not take the connection down
                r = m.Rerror(f"internal error: {type(e).__name__}: {e}")
            try:
                if fault:
                    await self.faults.answer(conn, msg, r)
                else:
                    await reply(r, msg.tag)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        conn.tasks.pop(msg.tag, None)

    async def _flush(self, conn: Conn, msg: p.Message, reply) -> None:
        scope = conn.tasks.get(msg.oldtag)
        if scope is not None:
            scope.cancel()  # its reply is never sent: the Rflush says so
            while msg.oldtag in conn.tasks:
                await trio.sleep(0)
        await reply(m.Rflush(), msg.tag)

    def _version(self, conn: Conn, msg: p.Message, framer: p.Framer) -> p.Message:
        conn.fids.clear()  # Tversion resets the session
        conn.msize = min(msg.msize, MSIZE)
        framer.msize = conn.msize
        ok = msg.version.startswith("9P2000")
        return m.Rversion(conn.msize, p.P9_2000 if ok else "unknown")

    # --- one method per request

    def _fid(self, conn: Conn, fid: int) -> FidState:
        try:
            return conn.fids[fid]
        except KeyError:
            raise Refused(E.EBADF, "unknown fid") from None

    def _new(self, conn: Conn, fid: int) -> None:
        if fid in conn.fids:
            raise Refused(E.EBADF, "duplicate fid")

    async def auth(self, conn, msg):
        if self.auth_config is None:
            raise Refused(E.EACCES, "authentication not required")
        self._new(conn, msg.afid)
        conv = AfidConversation(self.auth_config)
        conn.fids[msg.afid] = FidState(conn.root, mode=p.ORDWR, conv=conv)
        conn.nursery.start_soon(conv.run)
        return m.Rauth(p.Qid(p.QTAUTH, 0, 0))

    async def attach(self, conn, msg):
        self._new(conn, msg.fid)
        if self.auth_config is None and msg.afid != p.NOFID:
            raise Refused(E.EACCES, "authentication not required")
        if self.auth_config is not None:
            a = conn.fids.get(msg.afid) if msg.afid != p.NOFID else None
            if a is None or a.conv is None:
                raise Refused(E.EPERM, "authentication required")
            if a.conv.user != msg.uname:
                raise Refused(E.EACCES, a.conv.error or f"authentication failed for"
                                                      f" {msg.uname}")
        conn.fids[msg.fid] = FidState(conn.root)
        return m.Rattach(conn.root.qid)

    async def walk(self, conn, msg):
        f = self._fid(conn, msg.fid)
        if f.conv is not None:
            raise Refused(E.EBADF, "cannot walk an afid")
        if f.mode is not None:
            raise Refused(E.EBADF, "cannot walk an open fid")
        if msg.newfid != msg.fid:
            self._new(conn, msg.newfid)
        node, qids = f.node, []
        for name in msg.wnames:
            if not node.is_dir:
                if not qids:
                    raise Refused(E.ENOTDIR, "walk in non-directory")
                break
            nxt = node.parent if name == ".." else node.children.get(name)
            if nxt is None:
                if not qids:
                    raise Refused(E.ENOENT)
                break
            node = nxt
            qids.append(node.qid)
        if len(qids) == len(msg.wnames):
            conn.fids[msg.newfid] = FidState(node)
        return m.Rwalk(qids)

    async def open(self, conn, msg):
        f = self._fid(conn, msg.fid)
        node, mode = f.node, msg.mode
        if f.mode is not None:
            raise Refused(E.EBADF, "fid already open")
        if node.is_dir and mode & 3 != p.OREAD:
            raise Refused(E.EISDIR)
        if mode & p.OTRUNC and not node.synthetic:
            if not node.mode & 0o222:
                raise Refused(E.EACCES)
            node.data.clear()
            node.touch()
        f.mode = mode
        return m.Ropen(node.qid, 0)

    async def create(self, conn, msg):
        f = self._fid(conn, msg.fid)
        if not f.node.is_dir:
            raise Refused(E.ENOTDIR, "create in non-directory")
        if msg.name in (".", "..", "") or "/" in msg.name:
            raise Refused(E.EINVAL, "illegal name")
        if msg.name in f.node.children:
            raise Refused(E.EEXIST)
        node = f.node.add(msg.name, msg.perm & (p.DMDIR | p.DMAPPEND | p.DMEXCL | 0o777))
        f.node, f.mode = node, msg.mode
        return m.Rcreate(node.qid, 0)

    async def read(self, conn, msg):
        f = self._fid(conn, msg.fid)
        if f.mode is None:
            raise Refused(E.EBADF, "read on a fid that is not open")
        count = min(msg.count, conn.msize - p.IOHDRSZ)
        if f.conv is not None:
            try:
                return m.Rread((await f.conv.client_reads())[:count])
            except PermissionError as e:
                raise Refused(E.EACCES, str(e)) from None
        node = f.node
        if node.is_dir:
            return m.Rread(self._dirread(f, msg.offset, count))
        if node.on_read:
            return m.Rread(await node.on_read(msg.offset, count))
        return m.Rread(bytes(node.data[msg.offset : msg.offset + count]))

    def _dirread(self, f: FidState, offset: int, count: int) -> bytes:
        if offset == 0:
            f.listing = p.pack_stats([c.stat() for c in f.node.children.values()], p.P9_2000)
        elif offset != f.dir_offset:
            raise Refused(E.EINVAL, "bad offset in directory read")
        out, pos = [], offset
        while pos < len(f.listing):  # whole records only (read(5))
            size = 2 + int.from_bytes(f.listing[pos : pos + 2], "little")
            if sum(map(len, out)) + size > count:
                break
            out.append(f.listing[pos : pos + size])
            pos += size
        if not out and pos < len(f.listing):
            raise Refused(E.EINVAL, "directory entry larger than the read count")
        f.dir_offset = pos
        return b"".join(out)

    async def write(self, conn, msg):
        f = self._fid(conn, msg.fid)
        if f.mode is None or f.mode & 3 == p.OREAD:
            raise Refused(E.EBADF, "write on a fid not open for writing")
        node = f.node
        if f.conv is not None:
            await f.conv.client_wrote(msg.data)
        elif node.on_write:
            await node.on_write(msg.data)
        elif node.on_read:
            raise Refused(E.EACCES, "read-only file")
        else:
            off = len(node.data) if node.mode & p.DMAPPEND else msg.offset
            if off > len(node.data):
                node.data += bytes(off - len(node.data))
            node.data[off : off + len(msg.data)] = msg.data
            node.touch()
        return m.Rwrite(len(msg.data))

    async def clunk(self, conn, msg):
        f = conn.fids.pop(msg.fid, None)
        if f is None:
            raise Refused(E.EBADF, "unknown fid")
        if f.mode is not None and f.mode & p.ORCLOSE:
            self._unlink(f.node)
        return m.Rclunk()

    async def remove(self, conn, msg):
        f = conn.fids.pop(msg.fid, None)  # gone even if the remove fails (remove(5))
        if f is None:
            raise Refused(E.EBADF, "unknown fid")
        self._unlink(f.node)
        return m.Rremove()

    def _unlink(self, node: Node) -> None:
        if node is self.root:
            raise Refused(E.EPERM, "cannot remove root")
        if node.children:
            raise Refused(E.ENOTEMPTY)
        if not node.removed:
            node.parent.children.pop(node.name, None)
            node.parent.touch()
            node.removed = True

    async def stat(self, conn, msg):
        return m.Rstat(self._fid(conn, msg.fid).node.stat())

    async def wstat(self, conn, msg):
        node, st = self._fid(conn, msg.fid).node, msg.stat
        keep32 = 0xFFFFFFFF
        if st.mode != keep32 and (st.mode & p.DMDIR) != (node.mode & p.DMDIR):
            raise Refused(E.EPERM, "wstat can't convert between files and directories")
        if st.length != 0xFFFFFFFFFFFFFFFF and node.is_dir and st.length != 0:
            raise Refused(E.EISDIR)
        if st.name and st.name != node.name:
            if st.name in node.parent.children:
                raise Refused(E.EEXIST)
            if "/" in st.name or st.name in (".", ".."):
                raise Refused(E.EINVAL, "illegal name")
        # all checks passed: wstat is all or nothing (stat(5))
        if st.name and st.name != node.name:
            del node.parent.children[node.name]
            node.name = st.name
            node.parent.children[st.name] = node
            node.parent.touch()
        if st.mode != keep32:
            node.mode = node.mode & ~0o777 | st.mode & 0o777
        if st.length != 0xFFFFFFFFFFFFFFFF and not node.is_dir:
            del node.data[st.length :]
            node.data += bytes(st.length - len(node.data))
            node.touch()
        if st.mtime != keep32:
            node.mtime = st.mtime
        if st.gid:
            node.gid = st.gid
        return m.Rwstat()


async def serve_unix(path: str, root: Node, *, auth: AuthConfig | None = None, faults=None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve root on a unix socket at path (made private: mode 0600) until cancelled."""
    if os.path.exists(path):
        os.unlink(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started(path)
    try:
        await trio.serve_listeners(Server(root, auth=auth, faults=faults).handle, [listener])
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        if os.path.exists(path):
            os.unlink(path)
