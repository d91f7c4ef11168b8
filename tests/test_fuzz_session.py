"""A short run of the session fuzz campaign (tests/fuzz_session.py) in CI, and one small
reproducer for each client bug the long campaigns found.

The campaign's findings are checked kind by kind, so that one kind does not hide the
others. Each reproducer failed before its fix (KNOWN says what each bug was). The
campaign is deterministic for its seed; rare kinds (slow-loss, starved) show in one or
two cases of 300, so a long run (`python tests/fuzz_session.py --cases 20000`) is the
real check after a change to the session.
"""

from __future__ import annotations

import contextlib
import errno as E

import pytest
import trio
import trio.testing

import fuzz_session as fz
from py9pfuse import proto as p
from py9pfuse.client import ConnectionLost, P9Error
from py9pfuse.client.fids import Fid

CASES, SEED = 300, 1
ROOT = p.Qid(p.QTDIR, 0, 1)

# --- the campaign

OVERFLOW = "Rlerror (or .L Rerror) with an errno >= 2**31: os.strerror raises OverflowError" \
           " out of rpc() (test_huge_errno_is_an_oserror)"
KNOWN = {  # the bugs the campaigns found, all fixed since
    "exception": OVERFLOW + "; an ExceptionGroup out of read()/write() when the caller's"
                            " cancellation and a piece's error meet (test_windowed_error_"
                            "meeting_a_cancel_is_not_a_group); AttributeError out of walk() when"
                            " a flushed Twalk gets a reply of the wrong type before its Rflush"
                            " (test_flushed_walk_answered_with_the_wrong_type)",
    "result": "read() returns more than count, write() more than len(data), when the server"
              " says so (test_read_never_returns_more_than_asked, test_write_never_returns_more"
              "_than_given)",
    "protocol": "a fid number is released while the server still holds the fid: a Tclunk/"
                "Tremove that timed out and was flushed, _undo's clunk given up after"
                " flush_timeout, a quarantined Twalk answered later (test_clunk_that_timed_out"
                "_keeps_its_number, test_undo_clunk_that_timed_out_keeps_the_number,"
                " test_quarantined_walk_answered_late_keeps_its_number)",
    "flush-rule": "oldtag reused before its Rflush when the flushed request's reply came but"
                  " the Rflush did not within flush_timeout (test_oldtag_waits_for_its_rflush)",
    "slow-loss": "a request waiting for a tag when the connection is lost takes a tag and is"
                 " sent on the dead connection: it waits out its whole timeout, or for ever"
                 " (test_tag_waiter_fails_when_the_connection_is_lost)",
    "starved": "(the campaign's few-tag cases) retired tags never come back, even once the"
               " server has answered them, and waiting for a tag has no bound: with every tag"
               " retired a (shielded) clunk waits for ever"
               " (test_retired_tag_comes_back_once_answered)",
}


@pytest.fixture(scope="module")
def campaign():
    summary = fz.run(CASES, SEED)
    print(fz.report(summary))
    return summary


def test_campaign_exercises_the_session(campaign):
    """The run did what it is meant to: many operations, every outcome, every server act."""
    st = campaign["stats"]
    assert campaign["cases"] == CASES and campaign["operations"] > 20 * CASES
    for outcome in ("ok", "ServerError", "P9Error", "ConnectionLost", "cancelled"):
        assert st["outcome " + outcome] > 50, outcome
    for act in list(fz.BENIGN) + list(fz.MESSY) + list(fz.FATAL):
        assert st["server " + act] > 0, act
    assert st["flushes"] > 100 and st["quarantined"] > 10 and st["late replies"] > 10
    assert st["lost connections"] > 20


@pytest.mark.parametrize("kind", fz.KINDS)
def test_campaign_finds_nothing(campaign, kind):
    found = [f for f in campaign["findings"] if f.kind == kind]
    assert not found, "\n".join(str(f) for f in found[:5])


# --- reproducers: a scripted server on an in-memory stream, under the autojump clock


# the far end of the stream: the scripted server of the session's unit tests
from test_session_unit import make_pair  # noqa: E402


def spawn(nursery, fn, *args) -> None:
    """Run fn(*args) in the background; the OSError it may end with is expected."""
    async def quiet():
        with contextlib.suppress(OSError):
            await fn(*args)
    nursery.start_soon(quiet)


def session(nursery, dialect=p.P9_2000, msize=8192, **kw):
    """The unit tests' pair, with the campaign's short timeouts."""
    return make_pair(nursery, dialect, msize, **{"op_timeout": 0.5, "flush_timeout": 0.2, **kw})


@pytest.mark.parametrize("reply", [p.Rlerror(0xFFFFFFFF), p.Rerror(errno=1 << 31)])
async def test_huge_errno_is_an_oserror(nursery, autojump_clock, reply):
    s, far = session(nursery, p.P9_2000_L)
    res = {}

    async def ask():
        try:
            await s.rpc(p.Tclunk(1))
        except Exception as e:  # noqa: BLE001
            res["e"] = e

    nursery.start_soon(ask)
    r = await far.recv()
    await far.send(reply, r.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(res["e"], OSError), repr(res["e"])  # OverflowError today


async def test_tag_waiter_fails_when_the_connection_is_lost(nursery, autojump_clock):
    """A request parked for a tag is woken by the loss; a failing request frees its tag
    before it runs; it takes that tag and goes out on the dead connection."""
    s, far = session(nursery)
    s._free_tags = []  # every tag in use
    res = {}

    async def ask():
        try:
            await s.rpc(p.Tread(1, 0, 10), timeout=None)  # reads wait as long as the caller
        except OSError as e:
            res["e"] = e

    nursery.start_soon(ask)
    await trio.testing.wait_all_tasks_blocked()
    s._fail(ConnectionLost("test!server", "reset"))  # as the reader does
    s._free_tag(7)  # as a request failed by the loss does, before the waiter runs
    with trio.move_on_after(5):
        while "e" not in res:
            await trio.sleep(0.1)
    assert isinstance(res.get("e"), ConnectionLost)  # still waiting today
    assert not s._pending


async def test_clunk_that_timed_out_keeps_its_number(nursery, autojump_clock):
    """flush(5): a flushed Tclunk that was not answered did not happen; the server still
    holds the fid, so its number must not go to the next walk."""
    s, far = session(nursery)
    f = Fid(s.fids.alloc(), ROOT)
    spawn(nursery, s.clunk, f)
    tclunk = await far.recv()  # not answered within op_timeout
    tflush = await far.recv()
    assert (tclunk.NAME, tflush.NAME, tflush.oldtag) == ("Tclunk", "Tflush", tclunk.tag)
    await far.send(p.Rflush(), tflush.tag)  # flushed: the clunk is not done
    await trio.testing.wait_all_tasks_blocked()
    assert s.fids.alloc() != f.num  # today: the same number, "fid in use" on the server


async def test_undo_clunk_that_timed_out_keeps_the_number(nursery, autojump_clock):
    """A flushed Twalk that won the race made newfid: it is clunked, and its number is
    given out again only once the server has answered that Tclunk."""
    s, far = session(nursery)
    spawn(nursery, s.walk, s.root, ["a"])
    twalk = await far.recv()
    tflush = await far.recv()  # the walk timed out
    await far.send(p.Rwalk([p.Qid(0, 0, 7)]), twalk.tag)  # and won the race
    await far.send(p.Rflush(), tflush.tag)
    tclunk = await far.recv()  # newfid is clunked...
    assert (tclunk.NAME, tclunk.fid) == ("Tclunk", twalk.newfid)
    await trio.sleep(5)  # ...and while that is unanswered the number stays out
    n = s.fids.alloc()
    assert n != twalk.newfid
    s.fids.release(n)
    await far.send(p.Rclunk(), tclunk.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert s.fids.alloc() == twalk.newfid  # answered: free again


async def test_quarantined_walk_answered_late_keeps_its_number(nursery, autojump_clock):
    """No Rflush: the tag is retired because the server may still answer; when it does
    answer the Twalk, it holds newfid, whose number walk() has already released."""
    s, far = session(nursery)
    spawn(nursery, s.walk, s.root, ["a"])
    twalk = await far.recv()
    await far.recv()  # the Tflush, never answered
    await trio.sleep(1)  # past op_timeout + flush_timeout: the tag is quarantined
    assert s.stats["quarantined_tags"] == 1
    await far.send(p.Rwalk([p.Qid(0, 0, 7)]), twalk.tag)  # the walk happened after all
    await trio.testing.wait_all_tasks_blocked()
    clunked = False
    with trio.move_on_after(1):
        r = await far.recv()
        clunked = (r.NAME, r.fid) == ("Tclunk", twalk.newfid)
    assert clunked or s.fids.alloc() != twalk.newfid


async def test_flushed_walk_answered_with_the_wrong_type(nursery, autojump_clock):
    """_dispatch keeps a wrong-type reply in p.reply (with p.error set); _abandon takes any
    reply that is not an error for a success and hands it to _undo, which reads wqids."""
    s, far = session(nursery)
    res = {}

    async def walk():
        try:
            await s.walk(s.root, ["a"])
        except Exception as e:  # noqa: BLE001
            res["e"] = e

    nursery.start_soon(walk)
    twalk = await far.recv()
    tflush = await far.recv()  # the walk timed out
    await far.send(p.Rread(b""), twalk.tag)  # a stray reply lands on its tag
    await far.send(p.Rflush(), tflush.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert isinstance(res["e"], OSError), repr(res["e"])  # AttributeError: no 'wqids'


async def test_oldtag_waits_for_its_rflush(nursery, autojump_clock):
    """flush(5): "it must wait to receive the corresponding Rflush before reusing oldtag"."""
    s, far = session(nursery)
    spawn(nursery, s.rpc, p.Tread(1, 0, 10))
    tread = await far.recv()
    tflush = await far.recv()  # after op_timeout
    await far.send(p.Rread(b"x"), tread.tag)  # the reply wins; the Rflush is slow
    await trio.sleep(0.5)  # past flush_timeout, still no Rflush
    spawn(nursery, s.rpc, p.Tclunk(2))
    nxt = await far.recv()
    assert nxt.tag != tread.tag  # today: tread's tag, while the Tflush naming it is unanswered
    await far.send(p.Rflush(), tflush.tag)


async def test_read_never_returns_more_than_asked(nursery, autojump_clock):
    s, far = session(nursery)
    res = {}

    async def read():
        res["data"] = await s.read(Fid(5, ROOT, mode=p.OREAD), 0, 10)

    nursery.start_soon(read)
    r = await far.recv()
    await far.send(p.Rread(b"y" * 20), r.tag)  # a server that sends more than asked
    await trio.testing.wait_all_tasks_blocked()
    assert len(res["data"]) <= 10  # 20 today (Linux: "bogus RREAD count", clamped)


async def test_write_never_returns_more_than_given(nursery, autojump_clock):
    s, far = session(nursery)
    res = {}

    async def write():
        res["n"] = await s.write(Fid(5, ROOT, mode=p.OWRITE), 0, b"abc")

    nursery.start_soon(write)
    r = await far.recv()
    await far.send(p.Rwrite(1000), r.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert 0 <= res["n"] <= 3  # 1000 today (Linux: "bogus RWRITE count", clamped)


async def test_windowed_error_meeting_a_cancel_is_not_a_group(nursery, autojump_clock):
    """A write of three pieces, two at a time. Piece 0 times out (ETIMEDOUT once its
    Rflush comes); meanwhile the caller gives up, and piece 2 ends Cancelled first. The
    nursery's group is [Cancelled, P9Error]: _windowed looks only at the first, re-raises
    the group, the caller's cancel scope takes the Cancelled out, and the caller gets
    ExceptionGroup[P9Error] instead of an OSError (or nothing: it gave up)."""
    s, far = session(nursery, msize=1024 + p.IOHDRSZ)
    res = {}

    async def write():
        try:
            with trio.move_on_after(0.6):
                await s.write(Fid(5, ROOT, mode=p.OWRITE), 0, bytes(3 * 1024), window=2,
                              timeout=0.5)
        except BaseException as e:  # noqa: BLE001
            res["e"] = e
        res["done"] = True

    nursery.start_soon(write)
    w0, w1 = await far.recv(), await far.recv()
    await trio.sleep(0.3)
    await far.send(p.Rwrite(1024), w1.tag)
    w2 = await far.recv()  # piece 2 starts at 0.3
    f0 = await far.recv()  # piece 0 times out at 0.5
    f2 = await far.recv()  # the caller gives up at 0.6: piece 2 is flushed
    assert (w2.NAME, f0.oldtag, f2.oldtag) == ("Twrite", w0.tag, w2.tag)
    await far.send(p.Rflush(), f2.tag)  # piece 2 ends Cancelled
    await trio.sleep(0.05)
    await far.send(p.Rflush(), f0.tag)  # piece 0 ends with ETIMEDOUT
    await trio.testing.wait_all_tasks_blocked()
    assert res.get("done")
    e = res.get("e")
    assert e is None or isinstance(e, OSError), repr(e)


async def test_retired_tag_comes_back_once_answered(nursery, autojump_clock):
    """A tag is retired when its Tflush gets no Rflush in time. Once the server answers
    (the late reply, the late Rflush), it is done with both tags: they may be used again.
    Today they are lost for good, and with every tag lost every request (clunks, which
    are shielded, included) waits for ever."""
    s, far = session(nursery)
    s._free_tags = [1, 0]
    with pytest.raises(P9Error) as e:
        await s.rpc(p.Tread(1, 0, 1))
    assert e.value.errno == E.ETIMEDOUT
    tread, tflush = await far.recv(), await far.recv()
    assert s.stats["quarantined_tags"] == 1 and not s._free_tags
    await far.send(p.Rread(b""), tread.tag)  # late, but answered
    await far.send(p.Rflush(), tflush.tag)
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(s._free_tags) == [0, 1]
