"""One 9P connection carrying many requests at once.

A single reader task takes every reply off the stream and hands it to the request
with the same tag, so replies may come in any order (diod and nfs-ganesha reorder
them) and a read that blocks on the server blocks only its caller. A request whose
caller gives up (a trio cancel scope, or its deadline) is flushed: Tflush is sent, the
tag stays reserved until Rflush, and a reply that beats the Rflush is honoured (a fid
that a flushed Twalk allocated is clunked).
"""

from __future__ import annotations

import contextlib
import errno as E
import functools
import math
import os
import socket
from collections.abc import Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass

import trio

from ..proto import (HEADER_SIZE, IOHDRSZ, NOFID, NONUNAME, NOTAG, P9_2000, P9_2000_L,
                     P9_2000_U, Framer, Message, ProtocolError, decode, encode, errno_for,
                     trace_line)
from ..proto import messages as m
from ..proto.messages import HEADER
from .dial import Address, open_stream, parse
from .errors import ConnectionLost, DialError, P9Error, ServerError, VersionError
from .fids import Fid, FidPool, effective_iounit

DEFAULT_MSIZE = 1 << 20
DEFAULT_WINDOW = 16  # Treads/Twrites in flight for one large read or write
MIN_MSIZE = 256
RECV_SIZE = 1 << 18
_DEFAULT = object()
MAX_TAG = NOTAG - 1  # NOTAG itself is Tversion's


class _Pending:
    """A request on the wire, waiting for the reply with its tag."""

    __slots__ = ("msg", "done", "reply", "error", "gen", "flushes", "retired")

    def __init__(self, msg: Message, gen: int = 0):
        self.msg = msg
        self.gen = gen  # the connection it went out on: its tag means nothing on another
        self.flushes: _Pending | None = None  # a Tflush given up on: the request it names
        self.retired = False  # given up on with no Tflush sent: its reply ends it
        self.done = trio.Event()
        self.reply: Message | None = None
        self.error: Exception | None = None


def _quickack(stream) -> Callable[[], None] | None:
    """Acknowledge TCP data at once, on every receive (Linux clears the flag each time).

    A server that writes one reply in several send() calls without TCP_NODELAY (py9p)
    holds the rest of the reply until its first part is acknowledged; a delayed ACK
    then costs milliseconds per reply whenever more than one request is in flight.
    """
    sock = getattr(stream, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or \
            not hasattr(socket, "TCP_QUICKACK"):
        return None
    return functools.partial(sock.setsockopt, socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


class Session:
    """A negotiated connection: `dialect`, `msize`, the fid pool, and `rpc`.

    Made by `open_session`, which runs the reader task in its nursery.
    """

    def __init__(self, address: Address, stream: trio.abc.Stream, dialect: str, msize: int, *,
                 op_timeout: float | None = 30.0, flush_timeout: float = 10.0,
                 window: int = DEFAULT_WINDOW, trace: Callable[[str], None] | None = None,
                 log: Callable[[str], None] | None = None, conn_id: int = 0,
                 keepalive: float | None = None, redial: Redial | None = None):
        self.address = address
        self.stream = stream
        self.dialect = dialect
        self.msize = msize
        self.op_timeout = op_timeout  # for what should not block; reads have none
        self.flush_timeout = flush_timeout
        self.window = max(1, window)
        self.trace = trace
        self.log = log or (lambda line: None)
        self.conn_id = conn_id
        self.fids = FidPool()
        self.root: Fid | None = None
        self.uname: str | None = None
        self.secret_fids: set[int] = set()  # afids: their data is redacted in the trace
        self._in_doubt: set[int] = set()  # fid numbers being clunked again (_settle)
        self._left_to_settle: set[int] = set()  # of requests given up on after sending
        self.stats = {"requests": 0, "flushes": 0, "late_replies": 0, "stray_replies": 0,
                      "quarantined_tags": 0}
        self._framer = Framer(msize)
        self._pending: dict[int, _Pending] = {}
        self._free_tags = list(range(MAX_TAG, -1, -1))  # pop() gives 0 first
        self._tag_waiters = trio.lowlevel.ParkingLot()  # requests waiting for a tag, first come first
        self._outbox: list[bytes] = []  # frames for the writer task, in order
        self._outbox_ready = trio.Event()
        self._broken: ConnectionLost | None = None
        # keepalive: with nothing received for this long, ask the server something; no
        # answer within as long again and the connection is dead (a paused server or a
        # cut link sends no FIN)
        self.keepalive = keepalive
        self._last_heard = trio.current_time()
        # reconnect: after a loss, dial again, attach again and carry on; fids of an
        # older connection (`gen`) are refused before they reach the new one
        self.redial = redial
        self.gen = 0
        self._reconnecting = False
        self._reconnected = trio.Event()
        self._reconnector: trio.lowlevel.Task | None = None  # may send during the outage
        self._closing = False
        self._conn_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    def in_flight(self) -> int:
        return len(self._pending)

    # --- the reader

    async def _reader(self) -> None:
        quickack = _quickack(self.stream)
        try:
            while True:
                data = await self.stream.receive_some(RECV_SIZE)
                self._last_heard = trio.current_time()
                if quickack:
                    quickack()
                if not data:
                    raise ConnectionLost(self.address.text, "the server closed the connection")
                self._framer.feed(data)
                for frame in self._framer.frames():
                    self._dispatch(frame)
        except ConnectionLost as e:
            self._fail(e)
        except ProtocolError as e:
            self._fail(ConnectionLost(self.address.text, f"the server sent garbage: {e}"))
        except (trio.BrokenResourceError, OSError) as e:
            self._fail(ConnectionLost(self.address.text, str(e) or type(e).__name__))
        except trio.ClosedResourceError:
            self._fail(ConnectionLost(self.address.text, "closed"))

    def _dispatch(self, frame: bytes) -> None:
        _, type_, tag = HEADER.unpack_from(frame)
        p = self._pending.pop(tag, None)
        if p is None:  # a reply to nothing we asked (or asked and gave up on): not fatal
            self.stats["stray_replies"] += 1
            self.log(f"{self.address}: ignored a reply (type {type_}) with unknown tag {tag}")
            return
        if p.flushes is not None:  # a Tflush we stopped waiting for: its Rflush at last
            self._retire_done(p)
            return
        try:
            reply = decode(frame, self.dialect)
        except ProtocolError as e:
            p.error = P9Error(E.EIO, f"{self.address}: bad reply to {p.msg.NAME}: {e}")
        else:
            if self.trace:
                secret = getattr(p.msg, "fid", None) in self.secret_fids
                self.trace(trace_line(reply, self.conn_id, redact=secret))
            if reply.TYPE != p.msg.TYPE + 1 and reply.NAME not in ("Rerror", "Rlerror"):
                p.error = P9Error(E.EIO, f"{self.address}: {reply.NAME} in reply to {p.msg.NAME}")
            p.reply = reply
        if p.error:  # the caller only sees EIO: the log says what the server did
            self.log(str(p.error))
        p.done.set()
        if p.retired:  # the server is done with it at last
            self._done_with(p)
            self._settle_for(p)

    def _retire_done(self, flush: _Pending) -> None:
        """The Rflush for a request whose tag was retired came: the server is done with
        both tags (flush(5)), and a Twalk it did after all is undone."""
        old = flush.flushes
        self._pending.pop(old.msg.tag, None)
        self._done_with(flush)
        self._done_with(old)
        self._settle_for(old)

    def _fail(self, err: ConnectionLost) -> None:
        """The connection is gone: say so once, and wake every waiter with the error."""
        if self._broken is None:
            self._broken = err
            if str(err).rpartition(": ")[2] != "closed":
                self.log(str(err))
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = err
            p.done.set()
        self._tag_waiters.unpark_all()
        self._conn_scope.cancel()  # this connection's reader and writer
        if self.redial is not None and not self._closing and not self._reconnecting \
                and self._nursery is not None:
            self._reconnecting = True
            self._reconnected = trio.Event()
            self._nursery.start_soon(self._reconnect)

    @property
    def broken(self) -> ConnectionLost | None:
        return self._broken

    # --- tags and sending

    async def _alloc_tag(self) -> int:
        # every one of the 65535 tags can be in use (a forget of 100,000 inodes clunks at
        # once): each freed tag wakes one waiter, not all of them
        while True:
            if self._broken:  # even if a failing request just freed one
                raise self._broken
            if self._free_tags:
                return self._free_tags.pop()
            await self._tag_waiters.park()

    def _free_tag(self, tag: int) -> None:
        self._free_tags.append(tag)
        self._tag_waiters.unpark()

    def _done_with(self, p: _Pending) -> None:
        """p's tag is free again, unless it belonged to a connection since replaced (a
        reconnect starts with every tag free)."""
        if p.gen == self.gen:
            self._free_tag(p.msg.tag)

    async def _start(self, msg: Message) -> _Pending:
        """Give msg a tag and send it; its reply will land in the returned _Pending."""
        if self._reconnecting and trio.lowlevel.current_task() is not self._reconnector:
            await self.wait_reconnected()
        if self._broken:
            raise self._broken
        for name in _FID_FIELDS if self.gen else ():  # (stale only after a reconnect)
            if (n := getattr(msg, name, None)) is not None and self.fids.gen_of(n) != self.gen:
                raise ConnectionLost(self.address.text, f"fid {n} was lost with the"
                                                        f" connection it belonged to")
        tag = await self._alloc_tag()
        msg.tag = tag
        try:
            frame = encode(msg, self.dialect)
        except ProtocolError as e:
            self._free_tag(tag)
            raise P9Error(E.EINVAL, f"{self.address}: {e}") from None
        if len(frame) > self.msize:
            self._free_tag(tag)
            raise P9Error(E.EMSGSIZE, f"{self.address}: {msg.NAME} of {len(frame)} bytes is over"
                                      f" msize {self.msize}")
        p = _Pending(msg, self.gen)
        self._pending[tag] = p
        if self.trace:
            secret = getattr(msg, "fid", None) in self.secret_fids
            self.trace(trace_line(msg, self.conn_id, redact=secret))
        # from here the request counts as sent: the writer task sends frames in order,
        # whole, and many at once when they pile up (one send for several requests)
        self._outbox.append(frame)
        self._outbox_ready.set()
        self.stats["requests"] += 1
        return p

    async def _writer(self) -> None:
        """Send queued frames in order. Half a frame would desynchronise the stream for
        everyone, so a send is never cancelled midway; a server that stops reading for
        longer than any reply may take is a dead connection."""
        limit = self.flush_timeout + (self.op_timeout or 0)
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready = trio.Event()
                frames, self._outbox = self._outbox, []
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                with trio.move_on_after(limit) as cs:
                    await self.stream.send_all(data)
                if cs.cancelled_caught:
                    raise ConnectionLost(self.address.text, "the server stopped reading")
        except ConnectionLost as e:
            self._fail(e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            self._fail(ConnectionLost(self.address.text, str(e) or type(e).__name__))

    def start_tasks(self, nursery: trio.Nursery) -> None:
        """The reader and the writer, for as long as the connection; the keepalive and
        any reconnection, for as long as the session."""
        self._nursery = nursery
        self._conn_scope = trio.CancelScope()
        nursery.start_soon(self._connection_tasks, self._conn_scope)
        if self.keepalive:
            nursery.start_soon(self._keepalive)

    async def _connection_tasks(self, scope: trio.CancelScope) -> None:
        with scope:
            async with trio.open_nursery() as n:
                n.start_soon(self._reader)
                n.start_soon(self._writer)

    async def _keepalive(self) -> None:
        """Every `keepalive` seconds without a byte from the server, one small request
        (a stat of the root); no reply within `keepalive` more and the connection is
        declared lost, which fails (or, with reconnect, holds) every request on it."""
        while True:
            await trio.sleep(self.keepalive)
            if self._broken or self._reconnecting or self.root is None or \
                    trio.current_time() - self._last_heard < self.keepalive:
                continue
            ping = (m.Tgetattr(self.root.num, 0x7ff) if self.dialect == P9_2000_L
                    else m.Tstat(self.root.num))
            try:
                p = await self._start(ping)
            except OSError:
                continue
            with trio.move_on_after(self.keepalive):
                await p.done.wait()
            if p.done.is_set():
                self._done_with(p)
            elif not self._broken:
                self._fail(ConnectionLost(self.address.text, f"no reply from the server for"
                                                             f" {2 * self.keepalive:g} s"))

    async def wait_reconnected(self) -> None:
        """During an outage (with reconnect): wait for the new connection, at most the
        redial's `wait` seconds, then fail as the connection did."""
        if not self._reconnecting:
            return
        with trio.move_on_after(self.redial.wait):
            await self._reconnected.wait()
        if self._reconnecting:
            raise ConnectionLost(self.address.text, f"{self._broken.text.rpartition(': ')[2]}"
                                                    f" (still reconnecting after"
                                                    f" {self.redial.wait:g} s)")

    async def _reconnect(self) -> None:
        """Dial again with backoff, negotiate the same dialect, authenticate and attach
        again; then requests flow again, and every older fid is stale (gen)."""
        self._reconnector = trio.lowlevel.current_task()
        delay, said = 0.25, None
        await self._close_stream(self.stream)
        while not self._closing:
            try:
                await self._redial_once()
            except OSError as e:
                if str(e) != said:  # a server down for an hour is said once, not 700 times
                    said = str(e)
                    self.log(f"{self.address}: reconnecting: {e}")
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.log(f"{self.address}: reconnected")
            break
        self._reconnecting = False
        self._reconnector = None
        self._reconnected.set()

    async def _redial_once(self) -> None:
        stream, _, msize = await negotiate(self.address, version=self.dialect,
                                           msize=self.msize, trace=self.trace)
        old_root = self.root
        self.stream, self.msize = stream, msize
        self._framer = Framer(msize)
        self._free_tags = list(range(MAX_TAG, -1, -1))
        self._outbox, self._outbox_ready = [], trio.Event()
        self.secret_fids.clear()
        self.gen += 1
        self.fids.gen = self.gen
        if old_root is not None:
            self.fids.release(old_root.num)
        self._broken = None
        self._last_heard = trio.current_time()
        self._conn_scope = trio.CancelScope()
        self._nursery.start_soon(self._connection_tasks, self._conn_scope)
        try:
            await self.attach(*self.redial.attach_args)
        except OSError as e:
            self._broken = ConnectionLost(self.address.text, str(e))
            self._conn_scope.cancel()
            await self._close_stream(stream)
            raise

    @staticmethod
    async def _close_stream(stream: trio.abc.Stream) -> None:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await stream.aclose()

    def is_stale(self, fid: Fid) -> bool:
        """fid belongs to a connection that is gone (its number is still ours to free)."""
        return self.fids.gen_of(fid.num) != self.gen

    async def rpc(self, msg: Message, *, timeout: float | None | object = _DEFAULT) -> Message:
        """Send msg and return its reply; ServerError for Rerror/Rlerror.

        timeout: seconds to wait for the reply before flushing the request and failing
        with ETIMEDOUT (default: op_timeout); None waits for as long as the caller does.
        """
        if timeout is _DEFAULT:
            timeout = self.op_timeout
        try:
            if self._free_tags and not self._reconnecting:
                p = await self._start(msg)  # the common case: nothing to wait for
            else:
                with trio.fail_after(timeout) if timeout else nullcontext():
                    p = await self._start(msg)  # may wait for a tag (all may be in use)
        except trio.TooSlowError:
            raise NotSent(E.ETIMEDOUT, f"{self.address}: no tag free for {msg.NAME} within"
                                       f" {timeout:g} s") from None
        try:
            with trio.fail_after(timeout) if timeout else nullcontext():
                await p.done.wait()
        except trio.TooSlowError:
            await self._abandon(p)
            err = P9Error(E.ETIMEDOUT, f"{self.address}: no reply to {msg.NAME} within"
                                       f" {timeout:g} s; flushed")
            self.log(str(err))  # the caller sees only ETIMEDOUT: say which request
            raise err from None
        except BaseException:
            await self._abandon(p)
            raise
        self._done_with(p)
        return self._result(p)

    def _result(self, p: _Pending) -> Message:
        if p.error:
            raise p.error
        r = p.reply
        if r.NAME == "Rlerror":
            n = _errno(r.ecode)
            raise ServerError(n, os.strerror(n), p.msg.NAME)
        if r.NAME == "Rerror":
            if self.dialect == P9_2000_L:  # nfs-ganesha's type-107 errno
                n = _errno(r.errno or E.EIO)
                raise ServerError(n, os.strerror(n), p.msg.NAME)
            n = errno_for(r.ename, None)
            if n is None:  # prefer the words; a .u number only when they say nothing known
                n = r.errno if r.errno and r.errno < 512 else E.EIO
            raise ServerError(n, r.ename or os.strerror(n), p.msg.NAME)
        return r

    async def _abandon(self, p: _Pending) -> None:
        """The caller gave up on p: flush it (flush(5)) and honour a reply that won."""
        if (n := _fid_decided(p.msg)) is not None and self.fids.owns(n):
            self._left_to_settle.add(n)  # the caller leaves n to _settle_for
        tag = p.msg.tag
        answered = p.done.is_set()
        with trio.CancelScope(shield=True):
            stale = p.gen != self.gen  # sent on a connection since replaced: nothing to flush
            if not answered and not self._broken and not stale:
                self.stats["flushes"] += 1
                f = None
                with trio.move_on_after(self.flush_timeout):
                    try:
                        f = await self._start(m.Tflush(tag))
                        await f.done.wait()
                        self._done_with(f)
                        answered = f.reply is not None  # Rflush: the server is done with tag
                    except P9Error:
                        pass
                if not answered and f is not None and not f.done.is_set() \
                        and not self._broken:
                    # no Rflush yet: flush(5) forbids reusing tag until it comes, even if
                    # the reply did; both tags are retired until then (_retire_done)
                    f.flushes = p
                    self.stats["quarantined_tags"] += 1
                    self.log(f"{self.address}: no Rflush for tag {tag}; tag retired")
                    return
            if not answered and not p.done.is_set() and not self._broken and not stale:
                # the Tflush could not even be sent: the server may still answer
                p.retired = True
                self.stats["quarantined_tags"] += 1
                self.log(f"{self.address}: no Rflush for tag {tag}; tag retired")
                return
            if stale or self._broken:
                return
            self._pending.pop(tag, None)
            self._done_with(p)
            if p.reply is not None and p.error is None and \
                    p.reply.NAME not in ("Rerror", "Rlerror"):
                self.stats["late_replies"] += 1
            self._settle_for(p)

    def _settle_for(self, p: _Pending) -> None:
        """The server is done with a request we gave up on (Rflush, or its reply): what
        it did to fids is now known, or can be made known. The caller left the fid
        numbers of a given-up Twalk, Tclunk or Tremove to this."""
        msg, r = p.msg, (p.reply if p.error is None else None)
        done = r is not None and r.NAME not in ("Rerror", "Rlerror")
        if msg.NAME == "Twalk" and msg.newfid != msg.fid and self.fids.owns(msg.newfid):
            if r is not None and not (done and len(r.wqids) == len(msg.wnames)):
                self.fids.release(msg.newfid)  # refused, or partial: no newfid (walk(5))
            else:
                self._settle(msg.newfid)  # made after all, or unknown: clunk it
        elif msg.NAME in ("Tclunk", "Tremove") and self.fids.owns(msg.fid):
            if r is not None:
                self.fids.release(msg.fid)  # answered, either way the fid is gone
            else:
                self._settle(msg.fid)  # flushed before it was done: clunk it again

    # --- fids

    async def attach(self, uname: str, aname: str, n_uname: int = NONUNAME,
                     auth: str = "auto", identity=None) -> Fid:
        """Tauth (unless auth is "none"), the auth protocol on the afid, Tattach."""
        self.uname = uname
        if self.dialect == P9_2000:
            n_uname = NONUNAME  # not sent in 9P2000: keep the trace true
        afid = await self._authenticate(uname, aname, n_uname, auth, identity)
        num = self.fids.alloc()
        try:
            r = await self.rpc(m.Tattach(num, afid.num if afid else NOFID, uname, aname,
                                         n_uname=n_uname))
        except ServerError as e:
            self.fids.release(num)
            if auth == "none" and e.errno in (E.EPERM, E.EACCES):
                raise ServerError(e.errno, f"{e.ename} (not authenticated: auth=none was"
                                           f" given)", "Tattach") from None
            raise
        except BaseException:
            self.fids.release(num)
            raise
        finally:
            if afid is not None:  # its work is done once the attach has been answered
                await self.clunk(afid)
                self.secret_fids.discard(afid.num)
        self.root = Fid(num, r.qid)
        return self.root

    async def _authenticate(self, uname: str, aname: str, n_uname: int,
                            method: str, identity) -> Fid | None:
        from . import auth

        if method == "none":
            return None
        num = self.fids.alloc()
        try:
            r = await self.rpc(m.Tauth(num, uname, aname, n_uname=n_uname))
        except ServerError:  # attach(5): an error here means no authentication is needed
            self.fids.release(num)
            return None
        except BaseException:
            self.fids.release(num)
            raise
        afid = Fid(num, r.aqid, mode=0)
        self.secret_fids.add(num)  # what crosses the afid is never traced
        try:
            await auth.run(method, self, afid, identity)
        except BaseException:
            await self.clunk(afid)
            self.secret_fids.discard(num)
            raise
        return afid

    async def walk(self, fid: Fid, names: list[str]) -> Fid:
        """A new fid for fid/names (a clone when names is empty); ENOENT if any is missing.

        At most 16 names go in one Twalk. A longer path is walked chunk by chunk, each
        chunk from the last one's fid to a fresh fid, the one before then clunked: walking
        a fid onto itself is legal but py9p refuses it ("duplicate fid"). A partial walk
        allocates nothing (walk(5)); an intermediate fid is clunked before the error.
        """
        chunks = [names[i : i + 16] for i in range(0, len(names), 16)] or [[]]
        cur, done = fid, 0
        try:
            for chunk in chunks:
                num = self.fids.alloc()
                try:
                    r = await self.rpc(m.Twalk(cur.num, num, chunk))
                except BaseException:
                    if not self._settles(num):
                        self.fids.release(num)
                    raise
                if len(r.wqids) < len(chunk):
                    self.fids.release(num)
                    missing = "/".join(names[: done + len(r.wqids) + 1])
                    raise ServerError(E.ENOENT, f"{missing}: file does not exist", "Twalk")
                nxt = Fid(num, r.wqids[-1] if chunk else cur.qid)
                if cur is not fid:
                    await self.clunk(cur)
                cur, done = nxt, done + len(chunk)
        except BaseException:
            if cur is not fid:
                with trio.CancelScope(shield=True):
                    await self.clunk(cur)
            raise
        return cur

    async def clunk(self, fid: Fid, *, shield: bool = True) -> None:
        """Forget fid. The number is free again once the server has answered, whatever it
        answered (clunk(5): the fid is gone even when Rclunk is an error). Shielded, so
        a cancelled caller leaks no fid; shield=False where giving up is the point."""
        if self.is_stale(fid):  # its server forgot it with the connection
            self.fids.release(fid.num)
            return
        free = True
        try:
            with trio.CancelScope(shield=shield):
                await self.rpc(m.Tclunk(fid.num))
        except BaseException as e:
            free = self._freed_by(fid.num, e)
            if not isinstance(e, P9Error):
                raise
        finally:
            if free and not self._broken:
                self.fids.release(fid.num)

    async def remove(self, fid: Fid) -> None:
        """Tremove; the fid is clunked even when the remove fails (remove(5))."""
        free = True
        try:
            await self.rpc(m.Tremove(fid.num))
        except BaseException as e:
            free = self._freed_by(fid.num, e)
            raise
        finally:
            if free and not self._broken:
                self.fids.release(fid.num)

    def _freed_by(self, num: int, e: BaseException) -> bool:
        """A Tclunk or Tremove of fid `num` raised e: may the number be given out again?
        Yes if the server answered it with an error (the fid is gone all the same). If
        it was given up on once sent, _settle_for decides. If it was never sent (no tag
        free in time, or cancelled while waiting for one), or answered with nonsense,
        the server may still hold the fid: it is clunked again in the background."""
        if self._settles(num):
            return False
        if isinstance(e, ServerError) or self._broken:
            return True
        self._settle(num)
        return False

    def _settles(self, num: int) -> bool:
        """Was the request about fid `num` given up on after it was sent? Then its
        number is _settle_for's to free (once the server is done), not the caller's."""
        if num in self._left_to_settle:
            self._left_to_settle.discard(num)
            return True
        return False

    def _settle(self, num: int) -> None:
        """A request that would have freed or made fid `num` was flushed unanswered, so
        the server may hold it or not: clunk it again in the background, and give the
        number out again only once the server has answered (either way, it is gone)."""
        if self._broken or self._nursery is None:
            return
        self._in_doubt.add(num)
        self._nursery.start_soon(self._reclunk, num, self.gen)

    async def _reclunk(self, num: int, gen: int) -> None:
        # no deadline but the session's: a server that never answers keeps the number
        with contextlib.suppress(P9Error):
            await self.rpc(m.Tclunk(num), timeout=None)
        if gen == self.gen and not self._broken and num in self._in_doubt:
            self._in_doubt.discard(num)
            self.fids.release(num)

    # --- data

    def iounit(self, fid: Fid) -> int:
        return effective_iounit(fid.iounit, self.msize)

    async def read(self, fid: Fid, offset: int, count: int, *, window: int | None = None,
                   timeout: float | None = None) -> bytes:
        """Up to count bytes at offset. Within one iounit this is exactly one Tread (a
        synthetic file's answer is whatever that one read returns); larger reads go as
        several Treads in flight and stop at the first short one (end of file)."""
        unit = self.iounit(fid)
        if count <= unit:
            return self._at_most((await self.rpc(m.Tread(fid.num, offset, count),
                                                 timeout=timeout)).data, count)
        n = math.ceil(count / unit)
        parts: list[bytes | None] = [None] * n
        short = [n]  # index of the first short piece seen so far

        async def piece(i: int) -> None:
            want = min(unit, count - i * unit)
            r = await self.rpc(m.Tread(fid.num, offset + i * unit, want), timeout=timeout)
            parts[i] = self._at_most(r.data, want)
            if len(r.data) < want:
                short[0] = min(short[0], i)

        await self._windowed(n, piece, window, stop=lambda i: i > short[0])
        out = []
        for i in range(min(short[0] + 1, n)):
            out.append(parts[i])
        return b"".join(out)

    def _at_most(self, data: bytes, count: int) -> bytes:
        if len(data) > count:  # as Linux: "bogus RREAD count"; never more than asked
            self.log(f"{self.address}: Rread of {len(data)} bytes for {count}; cut")
            return data[:count]
        return data

    async def write(self, fid: Fid, offset: int, data: bytes, *, window: int | None = None,
                    timeout: float | None | object = _DEFAULT) -> int:
        """Write data at offset; returns the bytes the server took. Within one iounit this
        is exactly one Twrite with exactly these bytes (a ctl file reads one command per
        write); larger writes go as several Twrites in flight, counted up to the first
        short one."""
        unit = self.iounit(fid)
        if len(data) <= unit:
            n = (await self.rpc(m.Twrite(fid.num, offset, bytes(data)), timeout=timeout)).count
            return min(n, len(data))  # a count over what was sent means nothing more
        n = math.ceil(len(data) / unit)
        counts = [0] * n
        view = memoryview(data)

        async def piece(i: int) -> None:
            chunk = bytes(view[i * unit : (i + 1) * unit])
            r = await self.rpc(m.Twrite(fid.num, offset + i * unit, chunk), timeout=timeout)
            counts[i] = min(r.count, len(chunk))

        await self._windowed(n, piece, window)
        total = 0
        for i, c in enumerate(counts):
            total += c
            if c < min(unit, len(data) - i * unit):
                break
        return total

    async def _windowed(self, n: int, piece, window: int | None, stop=lambda i: False) -> None:
        """Run piece(i) for i in 0..n-1, at most `window` at once, started in order."""
        limiter = trio.Semaphore(window or self.window)

        async def run(i: int) -> None:
            try:
                await piece(i)
            finally:
                limiter.release()

        try:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    await limiter.acquire()
                    if stop(i):
                        limiter.release()
                        break
                    nursery.start_soon(run, i)
        except BaseExceptionGroup as eg:
            # the pieces fail alike (an Rerror, a lost connection): the caller gets the
            # first OSError as it was raised, not a group (a piece's Cancelled with it
            # belongs to a scope outside, which has already ended the caller's wait)
            oserrors, _ = eg.split(OSError)
            if oserrors is not None:
                first = oserrors
                while isinstance(first, BaseExceptionGroup):
                    first = first.exceptions[0]
                raise first from None
            raise

    # --- closing

    async def aclose(self) -> None:
        self._closing = True
        if self.root is not None and not self._broken:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                with contextlib.suppress(OSError):  # leave the server holding nothing of ours
                    await self.clunk(self.root, shield=False)
        self._fail(ConnectionLost(self.address.text, "closed"))
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


def _errno(n: int) -> int:
    """A server's errno as ours: one out of range (or absurd) is EIO."""
    return n if 0 < n < 4096 else E.EIO


class NotSent(P9Error):
    """The request never left: no tag came free in time."""


def _fid_decided(msg: Message) -> int | None:
    """The fid whose fate a request decides: a Twalk's newfid, a Tclunk's or Tremove's fid."""
    if msg.NAME == "Twalk" and msg.newfid != msg.fid:
        return msg.newfid
    return msg.fid if msg.NAME in ("Tclunk", "Tremove") else None


_FID_FIELDS = ("fid", "newfid", "afid", "dfid", "dirfid", "olddirfid", "newdirfid")


@dataclass
class Redial:
    """What reconnecting needs: attach's arguments again, and how long a request may wait
    for the new connection before it fails with EIO."""

    attach_args: tuple
    wait: float = 60.0


# --- negotiation


_PREFERENCE = (P9_2000_L, P9_2000_U, P9_2000)


async def _ask_version(stream: trio.abc.Stream, version: str, msize: int, timeout: float,
                       trace: Callable[[str], None] | None) -> Message | str:
    """Send Tversion; the Rversion, or a string saying how the server refused or broke."""
    tv = m.Tversion(msize, version, tag=NOTAG)
    if trace:
        trace(trace_line(tv))
    await stream.send_all(encode(tv, P9_2000))
    framer = Framer(DEFAULT_MSIZE)
    with trio.move_on_after(timeout):
        while (frame := framer.next_frame()) is None:
            data = await stream.receive_some(1 << 16)
            if not data:
                raise ConnectionLost("", "the server closed the connection")
            framer.feed(data)
        _, type_, _ = HEADER.unpack_from(frame)
        if trace:
            try:
                trace(trace_line(decode(frame, version if version in _PREFERENCE else P9_2000)))
            except ProtocolError:
                trace(f"-0-> undecodable reply to Tversion: {frame[:64].hex()}")
        if type_ == m.Rversion.TYPE:
            return decode(frame, P9_2000)
        if type_ in (m.Rerror.TYPE, m.Rlerror.TYPE):
            body = frame[HEADER_SIZE:]
            if len(body) == 4:  # Rlerror, or nfs-ganesha's errno-only type 107
                return f"refused: {os.strerror(int.from_bytes(body, 'little'))}"
            try:  # an Rerror; aio9p puts an exception's text there
                return f"refused: {decode(frame, P9_2000).ename.strip()}"
            except ProtocolError:
                return "refused with a malformed error"
        raise ProtocolError(f"message type {type_} in reply to Tversion")
    raise trio.TooSlowError


async def negotiate(address: Address, *, version: str | None = None, msize: int = DEFAULT_MSIZE,
                    timeout: float = 10.0, trace: Callable[[str], None] | None = None
                    ) -> tuple[trio.abc.Stream, str, int]:
    """Dial and agree on a dialect and msize; the stream, dialect and msize.

    Without `version`, ask for 9P2000.L, then 9P2000.u, then 9P2000, accepting any
    downgrade the server offers. A refusal that kept the framing (Rversion "unknown",
    an Rerror/Rlerror) is followed by the next Tversion on the same connection; one that
    broke it (garbage, silence, a closed connection) by a fresh dial.
    """
    wanted = [version] if version else list(_PREFERENCE)
    stream: trio.abc.Stream | None = None
    said = []
    try:
        for ask in wanted:
            if stream is None:
                stream = await open_stream(address, timeout)
            try:
                r = await _ask_version(stream, ask, msize, timeout, trace)
            except (ProtocolError, ConnectionLost, trio.TooSlowError, trio.BrokenResourceError,
                    OSError) as e:
                why = {trio.TooSlowError: f"no answer within {timeout:g} s"}.get(type(e), str(e))
                said.append(f"{ask}: {why or 'connection closed'}")
                await stream.aclose()
                stream = None
                if address.net == "stdio":
                    break  # nothing to redial
                continue
            if isinstance(r, str):
                said.append(f"{ask}: {r}")
                continue
            got = r.version
            later = wanted[wanted.index(ask) + 1 :]
            if got == ask or (later and got == later[0]):
                if r.msize < MIN_MSIZE:
                    raise VersionError(address.text, f"server msize {r.msize} is too small")
                s, stream = stream, None
                return s, got, min(r.msize, msize)
            # "unknown", or a downgrade past a dialect we have not asked for yet (py9p -D
            # answers 9P2000 to 9P2000.L but 9P2000.u to 9P2000.u): ask the next one
            said.append(f"{ask}: answered {got!r}")
    finally:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
    raise VersionError(address.text, "no common 9P dialect (" + "; ".join(said) + ")")


@asynccontextmanager
async def open_session(address: str | Address, *, version: str | None = None,
                       msize: int = DEFAULT_MSIZE, uname: str | None = None, aname: str = "",
                       n_uname: int | None = None, attach: bool = True, auth: str = "auto",
                       identity=None, reconnect: float | None = None, **kw):
    """Dial, negotiate, start the reader, attach; yield the Session; close it on exit.
    reconnect: after a loss, dial and attach again, requests waiting at most that many
    seconds for it (None: a loss is final)."""
    addr = parse(address) if isinstance(address, str) else address
    if msize < MIN_MSIZE + IOHDRSZ:
        raise DialError(addr.text, f"msize {msize} is too small", E.EINVAL)
    stream, dialect, got_msize = await negotiate(addr, version=version, msize=msize,
                                                 trace=kw.get("trace"))
    session = Session(addr, stream, dialect, got_msize, **kw)
    try:
        async with trio.open_nursery() as nursery:
            session.start_tasks(nursery)
            try:
                if attach:
                    if uname is None:
                        uname = _login_name()
                    if n_uname is None:
                        n_uname = os.getuid()
                    await session.attach(uname, aname, n_uname, auth, identity)
                    if reconnect is not None:
                        session.redial = Redial((uname, aname, n_uname, auth, identity),
                                                reconnect)
                yield session
            finally:
                await session.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as eg:
        # the reader never raises, so the group holds only the caller's own error:
        # hand it back as it was raised, not wrapped
        if len(eg.exceptions) == 1:
            raise eg.exceptions[0] from None
        raise


def _login_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "none")
