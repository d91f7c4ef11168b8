"""A fuzz campaign of the session against a server that misbehaves at random:
`python tests/fuzz_session.py --cases N --seed S`; `--replay CASE_SEED` runs one case
again and prints its log. `run(cases, seed)` returns the summary (a dict).

Each case is one Session (9P2000, .u or .L at random, a random msize, sometimes only a
handful of tags, sometimes a keepalive) on an in-memory stream pair, under trio's
MockClock with autojump, so that the short op_timeout/flush_timeout (0.5 s / 0.2 s)
and the server's delays cost no real time. 1..40 client operations run at once:
walks (kept, or clunked or removed later), rpc of Tstat/Tgetattr/Tread/Twrite/Tclunk/
Twalk, session.read/write over several iounits with a window, some of them cancelled
at a random moment. For each request the server picks what it does: answer it right,
late, out of order, with an error, never, with the wrong type, with lies (more bytes
than asked for), with another tag, twice, mutated (flipped bits, a truncated body,
lying counts and sizes), with garbage, with a frame over msize, with half a frame and
then silence, or by closing the connection; a Tflush it answers at once, late, after
answering the request, not at all, or followed by a reply to the flushed tag.

A case is deterministic for its seed (trio's scheduler is seeded as under Hypothesis),
so `--replay` shows exactly what happened. Memory is traced (tracemalloc) from just after
the Session is made to the end of the case; the peak reported is the largest case's.
After the operations, the server's late replies are let land, then the tables are
checked: every tag is free, in flight, or retired (a quarantined request's, or a Tflush's
that got no Rflush in time), and no more are retired than the flushes explain; FidPool.live
is the root plus the fids the client kept (a lost connection keeps what it had).

Findings (each with the case seed that replays it):
  exception      an operation raised something that is not an OSError
  hang           an operation still running after BOUND mock seconds
  starved        the same, with every tag retired (a few-tag case whose tags all went to
                 requests the server never let go of)
  slow-loss      an operation outlived the connection's loss by more than LOSS_BOUND
  result         an impossible result (more bytes read than asked, more written than given)
  tags           the tag table after the run: a tag free twice, free and pending, pending
                 on a dead connection, or more tags retired than flushes can explain
  fids           FidPool.live differs from the fids the client holds, or a number is
                 free twice / free while held
  protocol       (the server's view, checked only while the server itself kept to the
                 protocol) the client reused a tag or a fid number the server still holds,
                 used a fid the server does not hold, or left the server holding fids the
                 client has let go of
  flush-rule     (likewise) the client reused a tag named by a Tflush before that Tflush's
                 Rflush (flush(5): "it must wait to receive the corresponding Rflush before
                 reusing oldtag")
  close          tasks still running after aclose() and the nursery's cancel
  memory         a case allocated far more than msize times the requests in flight
  client-frame   the client sent a frame the server cannot decode or over msize
  harness        the harness itself failed (a bug here, or in a trio invariant)
"""

from __future__ import annotations

import argparse
import heapq
import inspect
import itertools
import json
import math
import pathlib
import random
import signal
import struct
import sys
import threading
import time
import traceback
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import trio  # noqa: E402
import trio.testing  # noqa: E402

from py9pfuse import proto as p  # noqa: E402
from py9pfuse.client import ConnectionLost  # noqa: E402
from py9pfuse.client.dial import Address  # noqa: E402
from py9pfuse.client.fids import Fid, effective_iounit  # noqa: E402
from py9pfuse.client.session import MAX_TAG, Session  # noqa: E402

OP_TIMEOUT, FLUSH_TIMEOUT = 0.5, 0.2
BOUND = 30.0  # mock seconds every operation must finish within
LOSS_BOUND = 1.0  # mock seconds an operation may outlive the loss of the connection
DRAIN = 5.0  # mock seconds for the server's late replies to land before the checks
WATCHDOG = 20.0  # real seconds before a case is declared stuck for good
DUMMY = 1_000_000  # fids from here up are the server's make-believe files, not the pool's
ROOT = p.Qid(p.QTDIR, 0, 1)
MSIZES = (280, 512, 1024, 4096, 8192, 65536)
KINDS = ("exception", "hang", "starved", "slow-loss", "result", "tags", "fids", "protocol",
         "flush-rule", "close", "memory", "client-frame", "harness")
HAS_KEEPALIVE = "keepalive" in inspect.signature(Session).parameters

BENIGN = {"ok": 40, "late": 15, "reorder": 10, "error": 8, "never": 2}
MESSY = {"wrong_type": 3, "lie": 3, "wrong_tag": 2, "dup": 2, "mutate": 5}
FATAL = {"garbage": 1, "oversize": 1, "truncate": 1, "close": 1}
FLUSH_BENIGN = {"answer_first": 3, "drop": 4, "late_rflush": 2, "ignore": 1}
FLUSH_MESSY = {"stale_after_rflush": 1, "error_to_tflush": 1}


def memory_limit(msize: int, k: int, window: int) -> int:
    """What one case may allocate: a fixed allowance for trio, the session and the
    harness, plus a few copies of every frame that can be in flight at once."""
    return (8 << 20) + 6 * max(msize, 1 << 12) * (k * window + 16)


# --- one case


@dataclass
class Op:
    i: int
    kind: str
    start: float
    cancel: float | None  # mock seconds after its start at which its caller gives up
    args: dict
    started: float = math.nan
    ended: float = math.nan
    done: bool = False
    outcome: str = "?"

    def desc(self) -> str:
        a = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if k != "data")
        return f"op {self.i} {self.kind}({a}) start={self.start:.3f} cancel={self.cancel}"


@dataclass
class Finding:
    seed: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] case seed {self.seed}: {self.detail}"


@dataclass
class Case:
    seed: int
    verbose: bool = False
    findings: list[Finding] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    held: dict[int, Fid] = field(default_factory=dict)  # every fid the client holds
    busy: set[int] = field(default_factory=set)  # ... of which an operation is using these
    loss_at: float | None = None
    memory: int = 0  # peak traced bytes while the case ran
    trace_memory: bool = True
    stats: Counter = field(default_factory=Counter)
    doubt: set[int] = field(default_factory=set)  # the session's fids being clunked again

    def __post_init__(self) -> None:
        r = random.Random(self.seed)
        self.rng_srv = random.Random(r.getrandbits(64))
        self.rng_ops = random.Random(r.getrandbits(64))
        self.dialect = r.choice(p.DIALECTS)
        self.msize = r.choice(MSIZES)
        self.k = r.randint(1, 40)
        self.window = r.randint(1, 8)
        self.tags = r.randint(1, 6) if r.random() < 0.1 else None
        self.keepalive = r.choice([0.3, 1.0, 2.5]) if HAS_KEEPALIVE and r.random() < 0.15 \
            else None
        profile = r.choices(["benign", "messy", "fatal"], [35, 35, 30])[0]
        w = dict(BENIGN)
        fw = dict(FLUSH_BENIGN)
        if profile != "benign":
            w |= {k: v * r.uniform(0.2, 2) for k, v in MESSY.items()}
            fw |= FLUSH_MESSY
        if profile == "fatal":
            scale = r.uniform(0.05, 1.5)
            w |= {k: v * scale * r.uniform(0.3, 1) for k, v in FATAL.items()}
        self.profile = profile
        self.weights = w
        self.flush_weights = fw
        self.ops = [self._draw_op(i, r) for i in range(self.k)]
        self.unit = self.msize - p.IOHDRSZ

    def _draw_op(self, i: int, r: random.Random) -> Op:
        kind = r.choices(["walk", "rpc", "read", "write", "clunk_held", "remove_held", "refused"],
                         [25, 30, 14, 14, 9, 4, 2])[0]
        start = 0.0 if r.random() < 0.2 else r.uniform(0, 1.0)
        cancel = r.uniform(0, 3.0) if r.random() < 0.35 else None
        a: dict = {}
        must_cancel = self.tags is not None  # a few tags, all retired: waiting is by design
        if kind == "walk":
            a["names"] = [f"n{j}" for j in range(r.choice([0, 1, 1, 2, 3, 5, 16, 17, 20]))]
            a["stat"] = r.random() < 0.25
            a["then"] = r.choices(["keep", "clunk", "remove"], [5, 4, 1])[0]
        elif kind == "rpc":
            a["msg"] = r.choice(["stat", "read", "write", "clunk", "walk"])
            a["fid"] = DUMMY + i
            a["offset"] = r.randrange(1 << 20)
            a["count"] = r.randint(0, self.msize - p.IOHDRSZ)
            a["nwords"] = r.randint(0, 16)
            a["wrong_dialect"] = r.random() < 0.05
            a["timeout"] = r.choice(["default", "default", None, round(r.uniform(0.05, 2.0), 3)])
            must_cancel |= a["timeout"] is None
        elif kind in ("read", "write"):
            a["fid"] = DUMMY + i
            a["iounit"] = r.choice([0, 0, 1, 7, 100, 1000, 1 << 20])
            unit = effective_iounit(a["iounit"], self.msize)
            a["offset"] = r.randrange(1 << 30)
            a["count"] = min(r.randint(0, 6 * unit), 1 << 16)
            a["window"] = r.choice([None, 1, 2, 3, 5, 8])
            a["timeout"] = r.choice(["default", None, round(r.uniform(0.1, 2.0), 3)])
            if kind == "read" and a["timeout"] == "default":
                a["timeout"] = None  # read's own default: no timeout
            must_cancel |= a["timeout"] is None
        elif kind == "refused":  # refused before it is sent: too big, or not this dialect
            a["what"] = r.choice(["big", "dialect"])
        else:
            a["pick"] = r.random()
        if must_cancel and cancel is None:
            cancel = r.uniform(0.1, 10.0)
        return Op(i, kind, start, cancel, a)

    def now(self) -> float:
        return trio.current_time()

    def log(self, text: str) -> None:
        if self.verbose:
            self.lines.append(f"{trio.current_time():9.4f} {text}")

    def find(self, kind: str, detail: str) -> None:
        self.findings.append(Finding(self.seed, kind, detail))
        self.log(f"FINDING [{kind}] {detail}")


# --- the server


class Out:
    """One thing the server will send: bytes, then what sending them means to it."""

    __slots__ = ("frame", "effect", "confuses", "then", "cancelled", "req")

    def __init__(self, frame: bytes, effect=None, confuses=False, then=None, req=None):
        self.frame, self.effect, self.confuses, self.then = frame, effect, confuses, then
        self.cancelled = False
        self.req = req


def rand_str(r: random.Random, n: int = 8) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._-" if r.random() < 0.8 else \
        "aé☃\U0001f600\x00 /\udcff"
    return "".join(r.choice(alphabet) for _ in range(r.randint(0, n)))


def rand_int(r: random.Random, bits: int) -> int:
    top = (1 << bits) - 1
    return r.choice([0, 1, top, r.randrange(top + 1), r.randrange(256)])


def rand_qid(r: random.Random) -> p.Qid:
    return p.Qid(r.randrange(256), rand_int(r, 32), rand_int(r, 64))


def rand_stat(r: random.Random, dialect: str) -> p.Stat:
    st = p.Stat(rand_int(r, 16), rand_int(r, 32), rand_qid(r), rand_int(r, 32), rand_int(r, 32),
                rand_int(r, 32), rand_int(r, 64), rand_str(r), rand_str(r, 4), rand_str(r, 4),
                rand_str(r, 4))
    if dialect == p.P9_2000_U:
        st.extension = rand_str(r, 4)
        st.n_uid, st.n_gid, st.n_muid = rand_int(r, 32), rand_int(r, 32), rand_int(r, 32)
    return st


def rand_message(r: random.Random, cls: type, dialect: str) -> p.Message:
    """Any value of any message class, small enough for the smallest msize."""
    kw = {}
    for name, kind, dialects in cls.FIELDS:
        if dialect not in dialects:
            continue
        kw[name] = {
            "u8": lambda: rand_int(r, 8), "u16": lambda: rand_int(r, 16),
            "u32": lambda: rand_int(r, 32), "u64": lambda: rand_int(r, 64),
            "u32?": lambda: None if r.random() < 0.3 else rand_int(r, 32),
            "qid": lambda: rand_qid(r), "str": lambda: rand_str(r),
            "wnames": lambda: [rand_str(r, 4) for _ in range(r.randint(0, 3))],
            "wqids": lambda: [rand_qid(r) for _ in range(r.randint(0, 16))],
            "data": lambda: r.randbytes(r.randint(0, 64)),
            "stat": lambda: rand_stat(r, dialect),
        }[kind]()
    return cls(**kw)


class Server:
    """The far end. Requests arrive in order; what goes back, and when, is drawn for each
    one. It keeps its own view of the protocol (the tags it has not answered, the fids it
    holds) to check the client against, until it does something that muddles that view
    (another tag, a duplicate, garbage...): from then on `confused` turns those checks off.
    """

    def __init__(self, c: Case, stream: trio.testing.MemoryStream, root: int):
        self.c, self.r, self.stream = c, c.rng_srv, stream
        self.dialect, self.msize = c.dialect, c.msize
        self.framer = p.Framer(1 << 24)  # the client's frames are checked against msize here
        self.outstanding: dict[int, p.Message] = {}  # tag: request not yet answered
        self.entries: dict[int, Out] = {}  # tag: the reply scheduled for that request
        self.flushing: dict[int, p.Message] = {}  # oldtag: its Tflush, until the Rflush
        self.why: dict[int, str] = {}  # fid: how it came to outlive the client's interest
        self.fids = {root}
        self.confused = self.silent = self.closed = False
        self.heap: list = []
        self.seq = itertools.count()
        self.wake = trio.Event()
        self.actions: Counter = Counter()

    # sending

    def schedule(self, out: Out, delay: float) -> None:
        heapq.heappush(self.heap, (trio.current_time() + delay, next(self.seq), out))
        self.wake.set()

    async def _sender(self) -> None:
        while True:
            if self.heap and self.heap[0][0] <= trio.current_time():
                out = heapq.heappop(self.heap)[2]
                if not (out.cancelled or self.silent or self.closed):
                    with trio.CancelScope(shield=True):
                        await self._send(out)
                continue
            self.wake = trio.Event()
            with trio.move_on_at(self.heap[0][0] if self.heap else math.inf):
                await self.wake.wait()

    async def _send(self, out: Out) -> None:
        out.cancelled = True  # sent: a flush can no longer take it back
        if out.frame:
            try:
                await self.stream.send_all(out.frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = True
                return
        if out.confuses:
            self.confused = True
        if out.effect:
            out.effect()
        if out.then == "silence":
            self.silent = True
            self.c.log("server: silent from now on")
        elif out.then == "close":
            self.closed = True
            self.c.log("server: closes the connection")
            await self.stream.aclose()

    # receiving

    async def run(self) -> None:
        async with trio.open_nursery() as n:
            n.start_soon(self._sender)
            try:
                while not self.closed:
                    data = await self.stream.receive_some(1 << 16)
                    if not data:
                        break
                    self.framer.feed(data)
                    for frame in self.framer.frames():
                        self._on_frame(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except p.ProtocolError as e:
                self.c.find("client-frame", f"the client's byte stream broke: {e}")
            finally:
                n.cancel_scope.cancel()

    def _on_frame(self, frame: bytes) -> None:
        if len(frame) > self.msize:
            self.c.find("client-frame", f"a {len(frame)}-byte frame over msize {self.msize}")
        try:
            req = p.decode(frame, self.dialect)
        except p.ProtocolError as e:
            self.c.find("client-frame", f"undecodable frame {frame[:40].hex()}: {e}")
            return
        self.c.log(f"server <- {p.fmt_message(req)}")
        self._check(req)
        self.outstanding[req.tag] = req
        if self.silent or self.closed:
            return
        if req.NAME == "Tflush":
            self._on_flush(req)
        else:
            self._on_request(req)

    def _check(self, req: p.Message) -> None:
        """The client against the server's view of tags and fids (while it is clear)."""
        if self.confused:
            return
        tf = self.flushing.get(req.tag)
        if tf is not None:
            self.c.find("flush-rule", f"tag {req.tag} reused by {req.NAME} before the Rflush"
                                      f" of the Tflush (tag {tf.tag}) that named it")
        if req.tag in self.outstanding:
            old = self.outstanding[req.tag]
            self.c.find("protocol", f"tag {req.tag} reused by {req.NAME} while"
                                    f" {old.NAME} (fid {getattr(old, 'fid', '-')}) is"
                                    f" still unanswered by the server")
        fid = getattr(req, "fid", None)
        if fid is not None and fid < DUMMY and fid not in self.fids and not (
                req.NAME == "Tclunk" and fid in self.c.doubt):  # settling: may be gone
            self.c.find("protocol", f"{req.NAME} on fid {fid}, which the server does not"
                                    f" hold")
        if req.NAME == "Twalk" and req.newfid < DUMMY and req.newfid != req.fid and \
                req.newfid in self.fids:
            self.c.find("protocol", f"Twalk to newfid {req.newfid}, which the server still"
                                    f" holds (fid in use; {self.why.get(req.newfid, '?')})")

    def _done(self, req: p.Message, fid_effect=None):
        def effect():
            if self.outstanding.get(req.tag) is req:
                del self.outstanding[req.tag]
            if fid_effect:
                fid_effect()
        return effect

    def _frame(self, msg: p.Message, tag: int) -> bytes:
        msg.tag = tag
        return p.encode(msg, self.dialect)

    def _pick(self, weights: dict) -> str:
        return self.r.choices(list(weights), list(weights.values()))[0]

    def _answer(self, req: p.Message) -> tuple[p.Message, object]:
        """A correct reply (a full or partial walk, a full or short read...) and its effect
        on the fids."""
        r, name = self.r, req.NAME
        if name == "Twalk":
            n = len(req.wnames)
            if n and r.random() < 0.15:  # not all there
                if n == 1:
                    return self._error(req, enoent=True), None
                return p.Rwalk([rand_qid(r) for _ in range(r.randint(1, n - 1))]), None
            return p.Rwalk([rand_qid(r) for _ in range(n)]), self._walked(req)
        if name == "Tstat":
            return p.Rstat(rand_stat(r, self.dialect)), None
        if name == "Tgetattr":
            return rand_message(r, p.Rgetattr, self.dialect), None
        if name == "Tread":
            k = req.count if r.random() < 0.7 else r.randint(0, req.count)
            return p.Rread(r.randbytes(k)), None
        if name == "Twrite":
            k = len(req.data) if r.random() < 0.8 else r.randint(0, len(req.data))
            return p.Rwrite(k), None
        if name in ("Tclunk", "Tremove"):
            return p.MESSAGES["R" + name[1:]](), self._forgot(req)
        return p.MESSAGES["R" + name[1:]](), None

    def _walked(self, req):
        if req.newfid < DUMMY and req.newfid != req.fid:
            def effect():
                self.fids.add(req.newfid)
                if req.tag in self.flushing:
                    self.why[req.newfid] = f"made by a Twalk (tag {req.tag}) answered after a" \
                                           f" Tflush named it and before its Rflush"
                else:
                    self.why[req.newfid] = f"made by the Twalk of tag {req.tag}, answered at" \
                                           f" {trio.current_time():.3f}"
            return effect
        return None

    def _forgot(self, req):
        return lambda: self.fids.discard(req.fid)

    def _error(self, req: p.Message, enoent: bool = False) -> p.Message:
        r = self.r
        if enoent:
            return p.Rlerror(2) if self.dialect == p.P9_2000_L else \
                p.Rerror("file does not exist", errno=2 if self.dialect == p.P9_2000_U else None)
        errno = r.choice([0, 1, 2, 5, 13, 28, 511, 512, 1 << 31, 0xFFFFFFFF, rand_int(r, 32)])
        if self.dialect == p.P9_2000_L:
            if r.random() < 0.8:
                return p.Rlerror(errno)
            return p.Rerror(errno=None if r.random() < 0.1 else errno)  # nfs-ganesha's 107
        ename = r.choice(["file does not exist", "permission denied", "Permission denied",
                          "", "unknown fid", rand_str(r, 30),
                          "x" * r.randint(0, self.msize - 20)])
        if self.dialect == p.P9_2000_U:
            return p.Rerror(ename, errno=None if r.random() < 0.2 else errno)
        return p.Rerror(ename)

    def _lie(self, req: p.Message) -> tuple[p.Message, object]:
        """Well-formed, and untrue: more than was asked for, or a walk of odd length."""
        r, name = self.r, req.NAME
        if name == "Tread":
            return p.Rread(r.randbytes(min(req.count + r.randint(1, 100), self.msize - 11))), None
        if name == "Twrite":
            return p.Rwrite(len(req.data) + r.choice([1, 100, 0xFFFFFFFF - len(req.data)])), None
        if name == "Twalk":
            n = len(req.wnames)
            if n and r.random() < 0.5:
                return p.Rwalk([]), None
            return p.Rwalk([rand_qid(r) for _ in range(r.randint(n + 1, 16) if n < 16 else 16)]), \
                self._walked(req)
        return self._answer(req)

    def _mutate(self, b: bytes) -> bytes:
        r, b = self.r, bytearray(b)
        kind = r.randrange(7)
        if kind == 0 and len(b) > 7:  # flipped bits in the body
            for _ in range(r.randint(1, 4)):
                b[r.randrange(7, len(b))] ^= 1 << r.randrange(8)
        elif kind == 1 and len(b) > 8:  # a count or length that lies
            at = r.randrange(7, len(b) - 1)
            n = r.choice([0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, len(b), len(b) + 1, self.msize,
                          2 * self.msize])
            width = r.choice([2, 4])
            b[at : at + width] = n.to_bytes(8, "little")[:width][: len(b) - at]
        elif kind == 2 and len(b) > 7:  # the body cut short, the size kept honest
            b = b[: r.randrange(7, len(b))]
            b[:4] = struct.pack("<I", len(b))
        elif kind == 3:  # bytes added to the body, the size kept honest
            b += r.randbytes(r.randint(1, 40))
            if len(b) > self.msize:
                b = b[: self.msize]
            b[:4] = struct.pack("<I", len(b))
        elif kind == 4:  # the size field lies
            b[:4] = struct.pack("<I", r.choice([0, 6, 7, len(b) - 1, len(b) + 1, len(b) + 100,
                                                self.msize, self.msize + 1]) & 0xFFFFFFFF)
        elif kind == 5:  # another type
            b[4] = r.randrange(256)
        else:  # flipped bits anywhere in the header
            b[r.randrange(7)] ^= 1 << r.randrange(8)
        return bytes(b)

    def _on_request(self, req: p.Message) -> None:
        r, c = self.r, self.c
        act = self._pick(c.weights)
        self.actions[act] += 1
        c.log(f"server: {act} for tag {req.tag}")
        if act == "never":
            if req.NAME in ("Tclunk", "Tremove") and req.fid < DUMMY:
                self.why[req.fid] = f"its {req.NAME} (tag {req.tag}) was never answered"
            return
        if act in ("ok", "late", "reorder"):
            reply, fx = self._answer(req)
        elif act == "error":
            reply = self._error(req)
            fx = self._forgot(req) if req.NAME in ("Tclunk", "Tremove") else None
        elif act == "lie":
            reply, fx = self._lie(req)
        elif act == "wrong_type":
            cls = r.choice([t for t in p.message_types(self.dialect) if t.NAME[0] == "R" and
                            t.TYPE != req.TYPE + 1 and t.NAME not in ("Rerror", "Rlerror")])
            reply = rand_message(r, cls, self.dialect)
            fx = self._forgot(req) if req.NAME in ("Tclunk", "Tremove") else None
        else:
            reply, fx = self._answer(req)
        frame = self._frame(reply, req.tag)
        if len(frame) > self.msize and act not in ("oversize",):
            reply, fx = p.Rclunk(), None  # keep an accidental oversize out of the benign acts
            frame = self._frame(reply, req.tag)
        effect = self._done(req, fx)
        delay = {"late": r.uniform(0, 1.5), "reorder": r.uniform(0, 0.05)}.get(act, 0.0)
        if act in ("ok", "late", "reorder", "error", "lie", "wrong_type"):
            out = Out(frame, effect, req=req)
            self.entries[req.tag] = out
            self.schedule(out, delay)
        elif act == "wrong_tag":
            tag = r.choice([r.randrange(0x10000), p.NOTAG, req.tag ^ 1,
                            r.choice(list(self.outstanding))])
            self.schedule(Out(self._frame(reply, tag), effect, confuses=True), r.uniform(0, 0.3))
        elif act == "dup":
            out = Out(frame, effect, req=req)
            self.entries[req.tag] = out
            d = r.uniform(0, 0.5)
            self.schedule(out, d)
            self.schedule(Out(frame, confuses=True), d + r.uniform(0, 1.0))
        elif act == "mutate":
            self.schedule(Out(self._mutate(frame), effect, confuses=True), r.uniform(0, 0.3))
        elif act == "garbage":
            junk = r.randbytes(r.randint(1, 200))
            if r.random() < 0.3 and len(junk) >= 7:
                junk = struct.pack("<I", r.randint(7, min(len(junk), self.msize))) + junk[4:]
            self.schedule(Out(junk, confuses=True), r.uniform(0, 0.3))
        elif act == "oversize":
            size = r.choice([self.msize + 1, 2 * self.msize, 0xFFFFFFFF])
            head = struct.pack("<IBH", size, reply.TYPE, req.tag)
            self.schedule(Out(head + r.randbytes(r.randint(0, 64)), confuses=True),
                          r.uniform(0, 0.3))
        elif act == "truncate":
            self.schedule(Out(frame[: r.randrange(1, len(frame))], confuses=True,
                              then="silence"), r.uniform(0, 0.3))
        elif act == "close":
            self.schedule(Out(b"", then="close"), r.uniform(0, 0.5))

    def _on_flush(self, tf: p.Message) -> None:
        r, c = self.r, self.c
        act = self._pick(c.flush_weights)
        self.actions["flush:" + act] += 1
        self.flushing[tf.oldtag] = tf
        c.log(f"server: {act} for Tflush tag {tf.tag} of tag {tf.oldtag}")
        if act == "ignore":
            return
        target = self.outstanding.get(tf.oldtag)
        entry = self.entries.get(tf.oldtag)
        alive = entry is not None and not entry.cancelled and entry.req is target
        answered = False
        if alive:
            entry.cancelled = True
            if act == "answer_first" or (act == "late_rflush" and r.random() < 0.5):
                again = Out(entry.frame, entry.effect, entry.confuses, req=entry.req)
                self.entries[tf.oldtag] = again
                self.schedule(again, 0.0)  # before the Rflush (same time, earlier seq)
                answered = True
        if not answered and target is not None and target.NAME in ("Tclunk", "Tremove") and \
                target.fid < DUMMY:
            self.why[target.fid] = f"its {target.NAME} (tag {target.tag}) was flushed, and not done"

        def flushed():
            if self.flushing.get(tf.oldtag) is tf:
                del self.flushing[tf.oldtag]
            if self.outstanding.get(tf.tag) is tf:
                del self.outstanding[tf.tag]
            if target is not None and self.outstanding.get(tf.oldtag) is target:
                del self.outstanding[tf.oldtag]

        if act == "error_to_tflush":  # flush(5): a flush cannot fail
            self.schedule(Out(self._frame(self._error(tf), tf.tag), flushed, confuses=True), 0.0)
            return
        delay = r.uniform(0.05, 1.0) if act == "late_rflush" else 0.0
        self.schedule(Out(self._frame(p.Rflush(), tf.tag), flushed), delay)
        if act == "stale_after_rflush" and entry is not None and target is not None:
            self.schedule(Out(entry.frame, confuses=True), delay + r.uniform(0, 0.5))


# --- the client's side


def _stat_msg(c: Case, fid: int, wrong: bool = False) -> p.Message:
    is_l = c.dialect == p.P9_2000_L
    if is_l != wrong:
        return p.Tgetattr(fid, p.GETATTR_BASIC)
    return p.Tstat(fid)


async def _op_body(c: Case, s: Session, op: Op) -> str:
    a, k = op.args, op.kind
    if k == "walk":
        f = await s.walk(s.root, a["names"])
        if f.num in c.held or f.num == s.root.num or f.num >= DUMMY:
            c.find("fids", f"walk returned fid {f.num}, a number already in use")
        c.held[f.num] = f
        c.busy.add(f.num)
        try:
            if a["stat"]:
                await s.rpc(_stat_msg(c, f.num))
            if a["then"] == "clunk":
                del c.held[f.num]
                await s.clunk(f)
            elif a["then"] == "remove":
                del c.held[f.num]
                await s.remove(f)
        finally:
            c.busy.discard(f.num)
        return "ok"
    if k in ("clunk_held", "remove_held"):
        nums = sorted(set(c.held) - c.busy)
        if not nums:
            return "nothing held"
        f = c.held.pop(nums[int(a["pick"] * len(nums))])
        await (s.clunk(f) if k == "clunk_held" else s.remove(f))
        return "ok"
    kw = {"timeout": a["timeout"]} if a.get("timeout", "default") != "default" else {}
    if k == "rpc":
        fid, what = a["fid"], a["msg"]
        msg = {
            "stat": lambda: _stat_msg(c, fid, a["wrong_dialect"]),
            "read": lambda: p.Tread(fid, a["offset"], a["count"]),
            "write": lambda: p.Twrite(fid, a["offset"], bytes(a["count"] % 2000)),
            "clunk": lambda: p.Tclunk(fid),
            "walk": lambda: p.Twalk(fid, fid + 500_000, [f"w{j}" for j in range(a["nwords"])]),
        }[what]()
        reply = await s.rpc(msg, **kw)
        if reply.TYPE != msg.TYPE + 1:
            c.find("result", f"rpc({msg.NAME}) returned {reply.NAME}")
        return "ok"
    if k == "read":
        f = Fid(a["fid"], p.Qid(0, 0, op.i), iounit=a["iounit"], mode=p.OREAD)
        data = await s.read(f, a["offset"], a["count"], window=a["window"], **kw)
        if len(data) > a["count"]:
            c.find("result", f"read of {a['count']} bytes returned {len(data)} (iounit"
                             f" {s.iounit(f)}, msize {c.msize})")
        return "ok"
    if k == "write":
        f = Fid(a["fid"], p.Qid(0, 0, op.i), iounit=a["iounit"], mode=p.OWRITE)
        data = bytes(a["count"])
        n = await s.write(f, a["offset"], data, window=a["window"], **kw)
        if not 0 <= n <= len(data):
            c.find("result", f"write of {len(data)} bytes returned {n} (iounit"
                             f" {s.iounit(f)}, msize {c.msize})")
        return "ok"
    if k == "refused":
        if a["what"] == "big":
            msg = p.Twrite(DUMMY, 0, bytes(c.msize))
        else:
            msg = _stat_msg(c, DUMMY, wrong=True)
        await s.rpc(msg)
        return "ok"
    raise AssertionError(k)


async def _run_op(c: Case, s: Session, op: Op) -> None:
    await trio.sleep(op.start)
    op.started = trio.current_time()
    c.log(f"client: {op.desc()} starts")
    try:
        with trio.CancelScope() as cs:
            if op.cancel is not None:
                cs.deadline = op.started + op.cancel
            op.outcome = await _op_body(c, s, op)
        if cs.cancelled_caught:
            op.outcome = "cancelled"
    except OSError as e:
        op.outcome = f"{type(e).__name__}({e.errno})"
    except (trio.Cancelled, KeyboardInterrupt):
        op.outcome = "cancelled by the hang watcher"
        raise
    except BaseException as e:  # noqa: BLE001 - anything but an OSError is a finding
        inner = e
        while isinstance(inner, BaseExceptionGroup):
            inner = inner.exceptions[0]
        what = type(e).__name__ + (f"[{type(inner).__name__}]" if inner is not e else "")
        op.outcome = f"!{what}"
        tb = "".join(traceback.format_exception(inner, limit=-3)).strip()
        c.find("exception", f"{op.desc()} raised {what}: {inner}\n    "
                            + tb.replace("\n", "\n    "))
    finally:
        op.done = True
        op.ended = trio.current_time()
        c.log(f"client: op {op.i} ends: {op.outcome}")


def _tasks(nursery) -> list:
    out = []
    for t in nursery.child_tasks:
        out.append(t)
        for n in t.child_nurseries:
            out += _tasks(n)
    return out


async def _session_tasks(s: Session, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as n:
        s.start_tasks(n)
        task_status.started(n)


def _is_ping(s: Session, pending) -> bool:
    return pending.msg.NAME in ("Tstat", "Tgetattr") and s.root is not None and \
        getattr(pending.msg, "fid", None) == s.root.num


def _check_tables(c: Case, s: Session, server: Server) -> None:
    """The tag table and the fid pool once every operation has finished."""
    broken = s.broken is not None
    free = s._free_tags
    fs = set(free)
    n_tags = c.tags if c.tags is not None else MAX_TAG + 1
    if len(fs) != len(free):
        c.find("tags", f"{len(free) - len(fs)} tags are in the free list twice:"
                       f" {sorted(t for t, n in Counter(free).items() if n > 1)[:10]}")
    if fs and (min(fs) < 0 or max(fs) >= n_tags):
        c.find("tags", f"free tags outside 0..{n_tags - 1}")
    pend = dict(s._pending)
    if fs & pend.keys():
        c.find("tags", f"tags both free and pending: {sorted(fs & pend.keys())[:10]}")
    pings = {t for t, pp in pend.items() if _is_ping(s, pp)}
    # fids whose Tclunk/Tremove/Twalk was flushed unanswered are clunked again in the
    # background (Session._settle); their numbers stay out of the pool until answered
    doubt = set(getattr(s, "_in_doubt", ()))
    # ...and those of requests retired while their Tflush waits for its Rflush (or, with
    # no Tflush sent, for their reply): decided only when the server answers
    for pp in pend.values():
        for q in (getattr(pp, "flushes", None), pp if getattr(pp, "retired", False) else None):
            n = None if q is None else getattr(q.msg, "newfid" if q.msg.NAME == "Twalk"
                                               else "fid", None)
            if n is not None and q.msg.NAME in ("Twalk", "Tclunk", "Tremove") and \
                    s.fids.owns(n):
                doubt.add(n)
    pings |= {t for t, pp in pend.items() if pp.msg.NAME == "Tclunk" and pp.msg.fid in doubt}
    retired = n_tags - len(fs)
    q, fl = s.stats["quarantined_tags"], s.stats["flushes"]
    c.stats["tags retired"] += retired - len(pings)
    if broken:
        if pend:
            c.find("tags", f"{len(pend)} requests still pending on a lost connection: "
                           + ", ".join(f"{pp.msg.NAME} tag {t}" for t, pp in
                                       list(pend.items())[:5]))
    else:
        stuck = [pp for t, pp in pend.items() if pp.msg.NAME != "Tflush" and t not in pings]
        if len(stuck) > q:
            c.find("tags", f"{len(stuck)} requests pending with nobody waiting but only {q}"
                           f" quarantined: " + ", ".join(f"{pp.msg.NAME} tag {pp.msg.tag}"
                                                        for pp in stuck[:5]))
        if retired - len(pings) > q + fl:
            c.find("tags", f"{retired - len(pings)} tags neither free nor in use, but only"
                           f" {fl} flushes ({q} unanswered) to explain them")

    pool = s.fids
    held = set(c.held) | {s.root.num} | doubt
    pfree = getattr(pool, "_free", [])
    if len(set(pfree)) != len(pfree):
        c.find("fids", "a fid number is in the pool's free list twice")
    if held & set(pfree):
        c.find("fids", f"fids the client holds are free in the pool: {sorted(held & set(pfree))}")
    if not broken and pool.live != len(held):
        c.find("fids", f"FidPool.live is {pool.live} but the client holds {len(held)} fids")
    elif broken and pool.live < len(held):
        c.find("fids", f"FidPool.live is {pool.live}, below the {len(held)} fids the client"
                       f" holds")
    if not (broken or server.confused or server.silent or server.closed):
        srv = {f for f in server.fids if f < DUMMY}
        if srv - doubt != held - doubt:
            c.find("protocol", "the server holds fids the client has let go of: "
                               + "; ".join(f"{n} ({server.why.get(n, '?')})"
                                           for n in sorted(srv - held))
                               + f"; the client holds {sorted(held - srv)} the server does not"
                                 f" know")


async def _case_main(c: Case) -> None:
    a, b = trio.testing.memory_stream_pair()
    kw = {"op_timeout": OP_TIMEOUT, "flush_timeout": FLUSH_TIMEOUT, "window": c.window,
          "log": lambda line: c.log(f"session log: {line}")}
    if c.keepalive:
        kw["keepalive"] = c.keepalive
    s = Session(Address("fuzz!server", "tcp"), a, c.dialect, c.msize, **kw)
    c.doubt = getattr(s, "_in_doubt", set())  # the same set object, as it changes
    s.root = Fid(s.fids.alloc(), ROOT)
    if c.tags is not None:
        s._free_tags = list(range(c.tags - 1, -1, -1))
    if c.trace_memory:
        tracemalloc.start()
    fail = s._fail

    def _fail(err):  # note when the connection is lost, to check everyone hears promptly
        if s.broken is None and c.loss_at is None:
            c.loss_at = trio.current_time()
            c.log(f"client: connection lost: {err}")
        fail(err)

    s._fail = _fail
    server = Server(c, b, s.root.num)
    async with trio.open_nursery() as top:
        top.start_soon(server.run)
        sess_nursery = await top.start(_session_tasks, s)

        ops_scope = trio.CancelScope()
        watch_scope = trio.CancelScope()

        async def watcher():
            with watch_scope:
                await trio.sleep(max(o.start for o in c.ops) + BOUND)
                # every tag retired (quarantined, or its late Rflush/reply came and it was
                # never freed): waiting for a tag is by design, so this is its own kind
                kind = "starved" if not s._free_tags and not s.broken else "hang"
                for o in c.ops:
                    if not o.done:
                        c.find(kind, f"{o.desc()} still running after {BOUND:g} s"
                                     f" ({len(s._free_tags)} free tags, {len(s._pending)}"
                                     f" pending, broken: {s.broken is not None})")
                ops_scope.cancel()
                await trio.sleep(BOUND)
                c.find(kind, "operations still running after being cancelled: "
                       + ", ".join(str(o.i) for o in c.ops if not o.done))
                s._fail(ConnectionLost("fuzz!server", "the harness gives up"))  # unstick them

        top.start_soon(watcher)
        with ops_scope:
            async with trio.open_nursery() as ops:
                for op in c.ops:
                    ops.start_soon(_run_op, c, s, op)
        watch_scope.cancel()

        for op in c.ops:
            if op.started > op.ended:
                continue
            if c.loss_at is not None and op.ended > max(op.started, c.loss_at) + LOSS_BOUND:
                c.find("slow-loss", f"{op.desc()} ended {op.ended - c.loss_at:.3f} s after the"
                                    f" connection was lost ({op.outcome})")

        await trio.sleep(DRAIN)  # the server's late replies land
        _check_tables(c, s, server)
        c.stats["flushes"] += s.stats["flushes"]
        c.stats["quarantined"] += s.stats["quarantined_tags"]
        c.stats["late replies"] += s.stats["late_replies"]
        c.stats["stray replies"] += s.stats["stray_replies"]
        c.stats["lost connections"] += s.broken is not None

        with trio.move_on_after(BOUND) as cs:
            try:
                await s.aclose()
            except Exception as e:  # noqa: BLE001
                c.find("exception", f"aclose() raised {type(e).__name__}: {e}")
                await b.aclose()  # its stream stays open: the server would wait for ever
        if cs.cancelled_caught:
            c.find("close", f"aclose() still running after {BOUND:g} s")
        if s._pending:
            c.find("tags", f"{len(s._pending)} requests pending after aclose(): "
                           + ", ".join(f"{pp.msg.NAME} tag {t}" for t, pp in s._pending.items()))
        await trio.sleep(1)
        c.stats["tasks alive after aclose"] += len(
            [t for t in _tasks(sess_nursery) if not t.name.endswith("_keepalive")])
        sess_nursery.cancel_scope.cancel()  # as open_session does
        with trio.move_on_after(BOUND):
            await trio.sleep(1)
            while top.child_tasks or any(True for _ in _tasks(sess_nursery)):
                await trio.sleep(1)
        left = [t.name for t in _tasks(top)]
        server_left = [n for n in left if "Server" in n]
        left = [n for n in left if "Server" not in n]
        if left:
            c.find("close", f"tasks still running after aclose() and the nursery's cancel:"
                            f" {left}")
        if server_left:  # the server stops when the client closes its end
            c.find("close", f"the client's end was not closed: the server still runs"
                            f" ({server_left})")
        top.cancel_scope.cancel()
    me = trio.lowlevel.current_task()
    stray = [t.name for n in trio.lowlevel.current_root_task().child_nurseries
             for t in _tasks(n) if t is not me and not t.name.startswith(("trio.", "<"))]
    if stray:
        c.find("close", f"tasks outside the case still running: {stray}")
    c.stats["operations"] += len(c.ops)
    for o in c.ops:
        c.stats["outcome " + o.outcome.split("(")[0]] += 1
    for k, v in server.actions.items():
        c.stats["server " + k] += v


class _Stuck(BaseException):
    pass


_abandoned: list = []  # runs given up by the watchdog: kept, so their tasks are never collected


def _alarm(signum, frame):
    raise _Stuck()


def run_case(seed: int, verbose: bool = False) -> Case:
    """One case, deterministic for its seed (trio's scheduler is seeded too)."""
    c = Case(seed, verbose)
    c.trace_memory = not tracemalloc.is_tracing()  # (somebody else's tracing: left alone)
    core = trio._core._run
    old = core._ALLOW_DETERMINISTIC_SCHEDULING
    core._ALLOW_DETERMINISTIC_SCHEDULING = True
    core._r.seed(seed)
    main = threading.current_thread() is threading.main_thread()
    if main:
        prev = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, WATCHDOG)
    try:
        trio.run(_case_main, c, clock=trio.testing.MockClock(autojump_threshold=0))
    except _Stuck as e:
        _abandoned.append(e)
        c.find("hang", f"the case did not end within {WATCHDOG:g} real seconds (a task"
                       f" waiting with no deadline, shielded from cancellation)")
    except Exception as e:  # noqa: BLE001
        _abandoned.append(e)
        if isinstance(e, trio.TrioInternalError) and isinstance(e.__cause__, _Stuck):
            c.find("hang", f"the case did not end within {WATCHDOG:g} real seconds (a task"
                           f" waiting with no deadline, shielded from cancellation)")
        else:
            c.find("harness", "".join(traceback.format_exception(e)))
    finally:
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, prev)
        core._ALLOW_DETERMINISTIC_SCHEDULING = old
        if c.trace_memory and tracemalloc.is_tracing():
            c.memory = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    limit = memory_limit(c.msize, c.k, c.window)
    if c.memory > limit:
        c.find("memory", f"{c.memory / 1024:.0f} KiB traced for {c.k} operations at msize"
                         f" {c.msize}, window {c.window} (limit {limit // 1024} KiB)")
    return c


def case_seed(seed: int, i: int) -> int:
    return seed * 1_000_003 + i


def run(cases: int, seed: int, *, progress=None, stop_after: float | None = None) -> dict:
    """`cases` cases from `seed`; the summary: counts, findings (Finding objects, each with
    its case seed), elapsed, and the largest traced memory of one case."""
    t0 = time.perf_counter()
    findings: list[Finding] = []
    stats: Counter = Counter()
    slowest = (0.0, None)
    biggest = (0, None)
    done = 0
    for i in range(cases):
        if stop_after is not None and time.perf_counter() - t0 > stop_after:
            break
        cs = case_seed(seed, i)
        t = time.perf_counter()
        c = run_case(cs)
        dt = time.perf_counter() - t
        if dt > slowest[0]:
            slowest = (dt, cs)
        if c.memory > biggest[0]:
            biggest = (c.memory, cs)
        findings += c.findings
        stats.update(c.stats)
        stats["cases " + c.dialect] += 1
        stats["profile " + c.profile] += 1
        done += 1
        if progress and (i + 1) % progress == 0:
            print(f"  {i + 1} cases, {time.perf_counter() - t0:.0f} s,"
                  f" {len(findings)} findings", flush=True)
    return {"cases": done, "seed": seed, "operations": stats["operations"],
            "elapsed": time.perf_counter() - t0, "findings": findings, "slowest": slowest,
            "peak_memory": biggest[0], "biggest": biggest, "stats": stats}


def report(summary: dict, *, show: int = 3) -> str:
    s, st = summary, summary["stats"]
    lines = [
        f"{s['cases']} cases, {s['operations']} operations, seed {s['seed']}:"
        f" {s['elapsed']:.1f} s, slowest case {s['slowest'][0] * 1e3:.0f} ms"
        f" (seed {s['slowest'][1]}), peak traced memory {s['peak_memory'] / 1024:.0f} KiB"
        f" (case seed {s['biggest'][1]}), {len(s['findings'])} findings",
        "  " + ", ".join(f"{k} {v}" for k, v in sorted(st.items())
                         if not k.startswith(("server ", "outcome "))),
        "  outcomes: " + ", ".join(f"{k[8:]} {v}" for k, v in sorted(st.items())
                                   if k.startswith("outcome ")),
        "  server: " + ", ".join(f"{k[7:]} {v}" for k, v in sorted(st.items())
                                 if k.startswith("server ")),
    ]
    by_kind: dict[str, list[Finding]] = {}
    for f in s["findings"]:
        by_kind.setdefault(f.kind, []).append(f)
    for kind, fs in sorted(by_kind.items()):
        cases = sorted({f.seed for f in fs})
        lines.append(f"--- {kind}: {len(fs)} findings in {len(cases)} cases"
                     f" (seeds {', '.join(map(str, cases[:8]))}{' ...' if len(cases) > 8 else ''})")
        seen = set()
        for f in fs:
            key = f.detail.split("\n")[0][:60]
            if key in seen:
                continue
            seen.add(key)
            lines.append(f"  {f}")
            if len(seen) >= show:
                break
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=None, help="stop after this long")
    ap.add_argument("--replay", type=int, default=None, metavar="CASE_SEED",
                    help="run one case, printing its log")
    ap.add_argument("--show", type=int, default=3, help="findings shown for each kind")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="write every finding there, one JSON object a line")
    args = ap.parse_args()
    if args.replay is not None:
        c = run_case(args.replay, verbose=True)
        print(f"case {c.seed}: {c.dialect} msize {c.msize}, {c.k} operations, window"
              f" {c.window}, tags {c.tags or 'all'}, keepalive {c.keepalive}, {c.profile}")
        print("\n".join(c.lines))
        for f in c.findings:
            print(f)
        return 1 if c.findings else 0
    summary = run(args.cases, args.seed, progress=1000,
                  stop_after=args.minutes * 60 if args.minutes else None)
    print(report(summary, show=args.show))
    if args.out:
        with open(args.out, "w") as out:
            for f in summary["findings"]:
                out.write(json.dumps({"seed": f.seed, "kind": f.kind, "detail": f.detail}) + "\n")
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
