"""The session's 9P rules, against a scripted server on an in-memory stream.

A test double of the server side, so that each rule (tags, flush, fids, errors, a
connection that breaks) can be driven exactly; tests/test_session_live.py checks the
same session against real servers.
"""

from __future__ import annotations

import errno as E

import pytest
import trio
import trio.testing

from py9pfuse import proto as p
from py9pfuse.client import ConnectionLost, P9Error, ServerError
from py9pfuse.client.dial import Address
from py9pfuse.client.fids import Fid, FidPool
from py9pfuse.client.session import Session

ROOT = p.Qid(p.QTDIR, 0, 1)


class Server:
    """The far end: receive decoded T-messages, send R-messages (or raw bytes)."""

    def __init__(self, stream, dialect: str):
        self.stream, self.dialect = stream, dialect
        self.framer = p.Framer(1 << 20)

    async def recv(self) -> p.Message:
        while (frame := self.framer.next_frame()) is None:
            self.framer.feed(await self.stream.receive_some(65536))
        return p.decode(frame, self.dialect)

    async def send(self, msg: p.Message, tag: int) -> None:
        msg.tag = tag
        await self.stream.send_all(p.encode(msg, self.dialect))


@pytest.fixture
async def pair(nursery):
    return make_pair(nursery, p.P9_2000)


def make_pair(nursery, dialect, msize=8192, **kw):
    a, b = trio.testing.memory_stream_pair()
    kw = {"op_timeout": 5, "flush_timeout": 1, **kw}
    s = Session(Address("test!server", "tcp"), a, dialect, msize, **kw)
    s.root = Fid(s.fids.alloc(), ROOT)
    s.start_tasks(nursery)
    return s, Server(b, dialect)


def test_fid_pool_numbers_and_generations():
    """Lowest free number first; a number is ours from alloc to release; a number handed
    out before a reconnect keeps generation 0, one after it the new generation."""
    pool = FidPool()
    a, b, c = pool.alloc(), pool.alloc(), pool.alloc()
    assert (a, b, c) == (0, 1, 2) and pool.live == 3
    pool.release(b)
    assert not pool.owns(b) and pool.owns(a) and pool.owns(c) and not pool.owns(3)
    assert not pool.owns(p.NOFID) and pool.gen_of(p.NOFID) == 0
    pool.gen = 1  # a reconnect
    assert pool.alloc() == b and pool.owns(b) and pool.live == 3
    assert (pool.gen_of(a), pool.gen_of(b), pool.gen_of(c)) == (0, 1, 0)
    pool.release(b)
    pool.release(a)
    assert pool.gen_of(a) == 1  # not ours: "now"
    pool.gen = 2
    assert pool.alloc() == a and pool.gen_of(a) == 2 and pool.alloc() == b
    assert pool.gen_of(b) == 2 and pool.alloc() == 3 and pool.live == 4


async def test_replies_in_any_order(pair, nursery):
    s, srv = pair
    got = {}

    async def ask(fid):
        got[fid] = await s.rpc(p.Tstat(fid))

    for fid in (1, 2, 3):
        nursery.start_soon(ask, fid)
    reqs = [await srv.recv() for _ in range(3)]
    assert len({r.tag for r in reqs}) == 3
    for r in reversed(reqs):  # answer last first
        st = p.Stat(0, 0, p.Qid(0, 0, r.fid), 0o644, 0, 0, r.fid, f"f{r.fid}", "u", "g", "m")
        await srv.send(p.Rstat(st), r.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert {fid: r.stat.name for fid, r in got.items()} == {1: "f1", 2: "f2", 3: "f3"}


async def test_more_requests_than_tags_all_finish(pair, nursery):
    """With every tag in use, requests wait for one and each freed tag goes on to a
    waiter (once, three waiters on separate events lost their wake-ups and hung)."""
    s, srv = pair
    s._free_tags = [2, 1, 0]  # as if 65533 tags were busy
    done = []

    async def ask(fid):
        await s.rpc(p.Tclunk(fid))
        done.append(fid)

    for fid in range(10, 30):
        nursery.start_soon(ask, fid)
    with trio.fail_after(5):
        while len(done) < 20:
            r = await srv.recv()
            assert r.tag in (0, 1, 2)
            await srv.send(p.Rclunk(), r.tag)
            await trio.testing.wait_all_tasks_blocked()
    assert sorted(done) == list(range(10, 30))
    assert sorted(s._free_tags) == [0, 1, 2]


async def test_a_remove_cancelled_before_it_is_sent_keeps_the_fid_until_clunked(pair, nursery):
    """A Tremove cancelled while it waits for a tag was never sent: the server still
    holds the fid, so its number is not given out again until a Tclunk of it has been
    answered (the fuzz campaign found the number freed at once, five seeds)."""
    s, srv = pair
    f = Fid(s.fids.alloc(), p.Qid(0, 0, 9))
    free, s._free_tags = s._free_tags, []  # every tag busy
    with trio.move_on_after(0.05):
        await s.remove(f)
    assert s.fids.owns(f.num)  # not freed: nobody told the server
    s._free_tags = free
    s._tag_waiters.unpark_all()
    with trio.fail_after(5):
        r = await srv.recv()
    assert (r.NAME, r.fid) == ("Tclunk", f.num)
    assert s.fids.owns(f.num)
    await srv.send(p.Rclunk(), r.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert not s.fids.owns(f.num)


async def test_waiters_for_a_tag_fail_when_the_connection_breaks(pair, nursery):
    s, srv = pair
    s._free_tags = []
    errors = []

    async def ask():
        try:
            await s.rpc(p.Tclunk(5))
        except ConnectionLost as e:
            errors.append(e)

    for _ in range(3):
        nursery.start_soon(ask)
    await trio.testing.wait_all_tasks_blocked()
    await srv.stream.aclose()
    with trio.fail_after(5):
        while len(errors) < 3:
            await trio.sleep(0.01)


async def test_flush_protocol(pair, nursery):
    s, srv = pair
    outcome = {}

    async def reader():
        with trio.move_on_after(0.3) as cs:
            await s.rpc(p.Tread(1, 0, 10), timeout=None)
        outcome["cancelled"] = cs.cancelled_caught

    nursery.start_soon(reader)
    tread = await srv.recv()
    tflush = await srv.recv()  # sent when the caller gave up
    assert tflush.NAME == "Tflush" and tflush.oldtag == tread.tag
    await trio.sleep(0.1)
    assert tread.tag not in s._free_tags  # reserved until Rflush (flush(5))
    await srv.send(p.Rflush(), tflush.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert outcome == {"cancelled": True}
    assert tread.tag in s._free_tags and tflush.tag in s._free_tags
    assert s.stats["flushes"] == 1


async def test_a_walk_that_beats_its_flush_is_clunked(pair, nursery):
    s, srv = pair
    live = s.fids.live

    async def walker():
        with trio.move_on_after(0.3):
            await s.walk(s.root, ["a"])

    nursery.start_soon(walker)
    twalk = await srv.recv()
    tflush = await srv.recv()
    await srv.send(p.Rwalk([p.Qid(0, 0, 7)]), twalk.tag)  # the walk won the race
    await srv.send(p.Rflush(), tflush.tag)
    tclunk = await srv.recv()
    assert tclunk.NAME == "Tclunk" and tclunk.fid == twalk.newfid
    await srv.send(p.Rclunk(), tclunk.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert s.fids.live == live and s.stats["late_replies"] == 1


async def test_timeout_flushes_then_says_etimedout(pair, nursery):
    s, srv = pair

    async def answer_flush():
        await srv.recv()  # the Tread, never answered
        f = await srv.recv()
        await srv.send(p.Rflush(), f.tag)

    nursery.start_soon(answer_flush)
    with pytest.raises(P9Error) as e:
        await s.rpc(p.Tread(1, 0, 1), timeout=0.2)
    assert e.value.errno == E.ETIMEDOUT and "no reply to Tread within 0.2 s" in str(e.value)


async def test_missing_rflush_quarantines_the_tag(nursery):
    s, srv = make_pair(nursery, p.P9_2000, flush_timeout=0.2)
    with pytest.raises(P9Error):
        await s.rpc(p.Tread(1, 0, 1), timeout=0.1)
    tread = await srv.recv()
    await srv.recv()  # Tflush, ignored
    assert s.stats["quarantined_tags"] == 1 and tread.tag not in s._free_tags
    # the connection goes on
    async with trio.open_nursery() as n:
        n.start_soon(s.rpc, p.Tclunk(1))
        r = await srv.recv()
        await srv.send(p.Rclunk(), r.tag)


async def test_stray_and_wrong_replies(pair, nursery):
    s, srv = pair
    await srv.send(p.Rclunk(), 999)  # nobody asked
    res = {}

    async def ask():
        try:
            await s.rpc(p.Tclunk(1))
        except P9Error as e:
            res["err"] = e

    nursery.start_soon(ask)
    r = await srv.recv()
    await srv.send(p.Rremove(), r.tag)  # the wrong reply type
    await trio.testing.wait_all_tasks_blocked()
    assert res["err"].errno == E.EIO and "Rremove in reply to Tclunk" in str(res["err"])
    assert s.stats["stray_replies"] == 1 and s.broken is None


@pytest.mark.parametrize("dialect,reply,errno", [
    (p.P9_2000, p.Rerror("file does not exist"), E.ENOENT),
    (p.P9_2000, p.Rerror("some words nobody knows"), E.EIO),
    (p.P9_2000_U, p.Rerror("", errno=E.EROFS), E.EROFS),
    (p.P9_2000_U, p.Rerror("Permission denied", errno=0xFFFFFFFF), E.EACCES),
    (p.P9_2000_U, p.Rerror("strange words", errno=E.ENOSPC), E.ENOSPC),
    (p.P9_2000_L, p.Rlerror(E.ENOTEMPTY), E.ENOTEMPTY),
    (p.P9_2000_L, p.Rerror(errno=E.EEXIST), E.EEXIST),  # nfs-ganesha's type 107
])
async def test_error_replies(nursery, dialect, reply, errno):
    s, srv = make_pair(nursery, dialect)
    res = {}

    async def ask():
        with pytest.raises(ServerError) as e:
            await s.rpc(p.Tclunk(1))
        res["e"] = e.value

    nursery.start_soon(ask)
    r = await srv.recv()
    await srv.send(reply, r.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert res["e"].errno == errno and res["e"].request == "Tclunk"


async def test_garbage_fails_every_waiter(pair, nursery):
    s, srv = pair
    errs = []

    async def ask(fid):
        try:
            await s.rpc(p.Tclunk(fid), timeout=None)
        except ConnectionLost as e:
            errs.append(e)

    for fid in (1, 2):
        nursery.start_soon(ask, fid)
    await srv.recv()
    await srv.recv()
    await srv.stream.send_all(b"\xff\xff\xff\x7f" + b"x" * 20)  # size far above msize
    await trio.testing.wait_all_tasks_blocked()
    assert len(errs) == 2 and all(e.errno == E.EIO for e in errs)
    assert "the server sent garbage" in str(errs[0]) and str(errs[0]).startswith("test!server:")
    with pytest.raises(ConnectionLost):  # and every later request, at once
        await s.rpc(p.Tclunk(3))


async def test_server_hangup_fails_waiters_promptly(pair, nursery):
    s, srv = pair
    errs = []

    async def ask():
        try:
            await s.rpc(p.Tread(1, 0, 1), timeout=None)
        except ConnectionLost as e:
            errs.append(e)

    nursery.start_soon(ask)
    await srv.recv()
    with trio.fail_after(1):
        await srv.stream.aclose()
        while not errs:
            await trio.sleep(0.01)
    assert "the server closed the connection" in str(errs[0])


async def test_long_walks_go_in_chunks_of_16(pair, nursery):
    s, srv = pair
    names = [f"d{i}" for i in range(20)]
    res = {}

    async def walk():
        res["fid"] = await s.walk(s.root, names)

    nursery.start_soon(walk)
    w1 = await srv.recv()
    assert (w1.fid, w1.wnames) == (s.root.num, names[:16]) and w1.newfid != w1.fid
    await srv.send(p.Rwalk([p.Qid(p.QTDIR, 0, i) for i in range(16)]), w1.tag)
    w2 = await srv.recv()  # from the first chunk's fid to a fresh one (py9p refuses in-place)
    assert (w2.fid, w2.wnames) == (w1.newfid, names[16:]) and w2.newfid not in (w1.fid, w1.fid)
    await srv.send(p.Rwalk([p.Qid(0, 0, 100 + i) for i in range(4)]), w2.tag)
    c = await srv.recv()
    assert (c.NAME, c.fid) == ("Tclunk", w1.newfid)  # the intermediate fid goes
    await srv.send(p.Rclunk(), c.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert res["fid"].num == w2.newfid and res["fid"].qid.path == 103


async def test_partial_walk_is_enoent_and_leaves_no_fid(pair, nursery):
    s, srv = pair
    live = s.fids.live
    res = {}

    async def walk(names):
        try:
            await s.walk(s.root, names)
        except ServerError as e:
            res["e"] = e

    nursery.start_soon(walk, ["a", "b", "c"])
    w = await srv.recv()
    await srv.send(p.Rwalk([p.Qid(p.QTDIR, 0, 1)]), w.tag)  # "b" is missing
    await trio.testing.wait_all_tasks_blocked()
    assert res["e"].errno == E.ENOENT and "a/b: file does not exist" in str(res["e"])
    assert s.fids.live == live  # nothing was allocated, nothing to clunk

    nursery.start_soon(walk, [f"d{i}" for i in range(18)])  # fails in its second chunk
    w1 = await srv.recv()
    await srv.send(p.Rwalk([p.Qid(p.QTDIR, 0, i) for i in range(16)]), w1.tag)
    w2 = await srv.recv()
    await srv.send(p.Rwalk([]), w2.tag)
    clunk = await srv.recv()  # the first chunk made newfid: it must go
    assert clunk.NAME == "Tclunk" and clunk.fid == w1.newfid
    await srv.send(p.Rclunk(), clunk.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert s.fids.live == live


async def test_fid_numbers_come_back_only_after_rclunk(pair, nursery):
    s, srv = pair
    f = Fid(s.fids.alloc(), ROOT)
    nursery.start_soon(s.clunk, f)
    r = await srv.recv()
    assert s.fids.alloc() != f.num  # not yet: the server still knows f
    await srv.send(p.Rerror("unknown fid"), r.tag)  # clunk(5): gone even so
    await trio.testing.wait_all_tasks_blocked()
    assert s.fids.alloc() == f.num


async def test_large_read_keeps_a_window_in_flight_and_stops_at_a_short_piece(nursery):
    s, srv = make_pair(nursery, p.P9_2000, msize=1024 + p.IOHDRSZ, window=3)
    f = Fid(5, p.Qid(0, 0, 9), iounit=0, mode=p.OREAD)
    res = {}

    async def read():
        res["data"] = await s.read(f, 0, 6 * 1024)

    nursery.start_soon(read)
    first = [await srv.recv() for _ in range(3)]
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(r.offset for r in first) == [0, 1024, 2048]  # three in flight, no more
    first.sort(key=lambda r: r.offset)
    assert all(r.count == 1024 for r in first)
    await srv.send(p.Rread(b"b" * 1024), first[1].tag)
    await srv.send(p.Rread(b"a" * 1024), first[0].tag)
    nxt = await srv.recv()
    assert nxt.offset == 3072
    await srv.send(p.Rread(b"c" * 100), first[2].tag)  # short: end of file here
    await srv.send(p.Rread(b""), nxt.tag)
    while "data" not in res:  # requests issued before the short reply are answered empty
        with trio.move_on_after(0.2):
            r = await srv.recv()
            await srv.send(p.Rread(b""), r.tag)
    assert res["data"] == b"a" * 1024 + b"b" * 1024 + b"c" * 100


async def test_large_write_is_split_by_iounit(nursery):
    s, srv = make_pair(nursery, p.P9_2000, msize=8192)
    f = Fid(5, p.Qid(0, 0, 9), iounit=1000, mode=p.OWRITE)
    data = bytes(range(256)) * 10
    res = {}

    async def write():
        res["n"] = await s.write(f, 100, data)

    nursery.start_soon(write)
    got = {}
    while len(got) < 3:
        w = await srv.recv()
        got[w.offset] = w.data
        await srv.send(p.Rwrite(len(w.data)), w.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(got) == [100, 1100, 2100]
    assert b"".join(got[k] for k in sorted(got)) == data and res["n"] == len(data)


async def test_small_write_is_exactly_one_twrite(pair, nursery):
    s, srv = pair
    f = Fid(5, p.Qid(0, 0, 9), iounit=0, mode=p.OWRITE)
    nursery.start_soon(s.write, f, 0, b"addr 127.0.0.1\n")
    w = await srv.recv()
    assert w.data == b"addr 127.0.0.1\n"
    await srv.send(p.Rwrite(len(w.data)), w.tag)


async def test_message_over_msize_is_refused_before_sending(pair):
    s, srv = pair
    with pytest.raises(P9Error) as e:
        await s.rpc(p.Twrite(1, 0, b"x" * 9000))
    assert e.value.errno == E.EMSGSIZE
