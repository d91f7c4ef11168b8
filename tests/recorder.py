"""Record a scripted 9P session against a real server, both directions, byte for byte.

    python tests/recorder.py [PEER ...]      # rewrites tests/captures/PEER.9p

The script touches every message its dialect has that a plain file tree answers:
version, auth (refused: no auth configured), attach, walk (clone, one name, a
missing name), create/lcreate, mkdir, write, open/lopen, read, a directory read,
stat/getattr, wstat/setattr, rename, symlink, readlink, link, mknod, statfs, fsync,
locks, xattrs, flush of a request in flight, remove/unlinkat, clunk. Replies are
whatever the server says, errors included: the captures show how each server
really answers. Frames are saved as they crossed the socket, never re-encoded.
"""

from __future__ import annotations

import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from py9pfuse import proto as p  # noqa: E402
from py9pfuse.proto.capture import Capture  # noqa: E402

O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_DIRECTORY = 0, 1, 2, 0o100, 0o200000
S_IFIFO = 0o010000


class Session:
    """Blocking, pipelining-capable request/reply over one socket, recording every frame."""

    def __init__(self, sock: socket.socket, cap: Capture):
        self.sock = sock
        sock.settimeout(10)  # a server that never answers fails the recording, not hangs it
        self.cap = cap
        self.framer = p.Framer(1 << 20)
        self.dialect = p.P9_2000
        self.tag = 0
        self.msize = 8192

    def send(self, msg: p.Message) -> int:
        if msg.NAME != "Tversion":
            self.tag += 1
            msg.tag = self.tag
        frame = p.encode(msg, self.dialect)
        self.cap.add("T", self.dialect, frame)
        self.sock.sendall(frame)
        return msg.tag

    def recv(self) -> p.Message:
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                self.cap.add("R", self.dialect, frame)
                return p.decode(frame, self.dialect)
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("server closed the connection")
            self.framer.feed(data)

    def rpc(self, msg: p.Message) -> p.Message:
        tag = self.send(msg)
        reply = self.recv()
        assert reply.tag == tag, f"reply tag {reply.tag} for request tag {tag}"
        return reply

    def version(self, dialect: str, msize: int) -> p.Message:
        r = self.rpc(p.Tversion(msize, dialect, tag=p.NOTAG))
        if r.NAME == "Rversion" and r.version in p.DIALECTS:
            self.dialect, self.msize = r.version, r.msize
        return r


def _ok(r: p.Message) -> bool:
    return r.NAME not in ("Rerror", "Rlerror")


def run_classic(s: Session, aname: str, uname: str) -> dict:
    """9P2000 and 9P2000.u; returns facts the live test asserts."""
    u = s.dialect == p.P9_2000_U
    nu = {"n_uname": 0} if u else {}
    facts = {}
    s.rpc(p.Tauth(100, uname, aname, **nu))
    facts["attach"] = s.rpc(p.Tattach(0, p.NOFID, uname, aname, **nu))
    iounit = s.msize - p.IOHDRSZ
    text = b"hello, 9P\n"
    s.rpc(p.Twalk(0, 1, []))
    facts["create"] = s.rpc(p.Tcreate(1, "hello.txt", 0o644, p.OWRITE))
    facts["write"] = s.rpc(p.Twrite(1, 0, text))
    s.rpc(p.Tclunk(1))
    facts["walk"] = s.rpc(p.Twalk(0, 2, ["hello.txt"]))
    s.rpc(p.Topen(2, p.OREAD))
    facts["read"] = s.rpc(p.Tread(2, 0, iounit))
    facts["stat"] = s.rpc(p.Tstat(2))
    s.rpc(p.Tclunk(2))
    s.rpc(p.Twalk(0, 3, ["hello.txt"]))
    facts["wstat"] = s.rpc(p.Twstat(3, p.Stat.dont_touch(name="renamed.txt")))
    s.rpc(p.Twstat(3, p.Stat.dont_touch(mode=0o600)))
    s.rpc(p.Tclunk(3))
    s.rpc(p.Twalk(0, 6, []))
    facts["mkdir"] = s.rpc(p.Tcreate(6, "sub", p.DMDIR | 0o755, p.OREAD))
    s.rpc(p.Tclunk(6))
    if u:  # .u: a symlink is a Tcreate with DMSYMLINK and the target as extension
        s.rpc(p.Twalk(0, 10, []))
        facts["symlink"] = s.rpc(p.Tcreate(10, "link", p.DMSYMLINK | 0o777, p.OREAD,
                                           extension="renamed.txt"))
        s.rpc(p.Tclunk(10))
    s.rpc(p.Twalk(0, 4, []))
    s.rpc(p.Topen(4, p.OREAD))
    facts["dirread"] = s.rpc(p.Tread(4, 0, iounit))
    s.rpc(p.Tclunk(4))
    facts["missing"] = s.rpc(p.Twalk(0, 5, ["no-such-file"]))
    flush_pair(s, 7, "renamed.txt", p.Topen(7, p.OREAD), iounit)
    for fid, name in ((8, "renamed.txt"), (9, "sub"), (11, "link")):
        if _ok(s.rpc(p.Twalk(0, fid, [name]))):
            s.rpc(p.Tremove(fid))
    s.rpc(p.Tclunk(0))
    return facts


def flush_pair(s: Session, fid: int, name: str, open_msg: p.Message, count: int) -> None:
    """A Tread and a Tflush of it sent back to back. The server either answers the read
    first and then Rflush, or only Rflush (flush(5)): after Rflush nothing more comes."""
    s.rpc(p.Twalk(0, fid, [name]))
    s.rpc(open_msg)
    old = s.send(p.Tread(fid, 0, count))
    flush = s.send(p.Tflush(old))
    while (r := s.recv()).tag != flush:
        assert r.tag == old, p.fmt_message(r)
    assert r.NAME == "Rflush", p.fmt_message(r)
    s.rpc(p.Tclunk(fid))


def run_dotl(s: Session, aname: str, uname: str) -> dict:
    facts = {}
    iounit = s.msize - p.IOHDRSZ
    s.rpc(p.Tauth(100, uname, aname, n_uname=0))
    facts["attach"] = s.rpc(p.Tattach(0, p.NOFID, uname, aname, n_uname=0))
    facts["getattr_root"] = s.rpc(p.Tgetattr(0, p.GETATTR_ALL))
    facts["statfs"] = s.rpc(p.Tstatfs(0))
    text = b"hello, 9P\n"
    s.rpc(p.Twalk(0, 1, []))
    facts["create"] = s.rpc(p.Tlcreate(1, "hello.txt", O_RDWR | O_CREAT, 0o644, 0))
    facts["write"] = s.rpc(p.Twrite(1, 0, text))
    s.rpc(p.Tfsync(1, 0))
    s.rpc(p.Tlock(1, p.LOCK_TYPE_WRLCK, 0, 0, 0, 4242, "recorder"))
    s.rpc(p.Tgetlock(1, p.LOCK_TYPE_RDLCK, 0, 0, 4243, "recorder"))
    s.rpc(p.Tlock(1, p.LOCK_TYPE_UNLCK, 0, 0, 0, 4242, "recorder"))
    s.rpc(p.Tclunk(1))
    facts["walk"] = s.rpc(p.Twalk(0, 2, ["hello.txt"]))
    s.rpc(p.Tlopen(2, O_RDONLY))
    facts["read"] = s.rpc(p.Tread(2, 0, iounit))
    s.rpc(p.Tclunk(2))
    s.rpc(p.Twalk(0, 3, ["hello.txt"]))
    facts["setattr"] = s.rpc(p.Tsetattr(3, p.SETATTR_MODE, 0o600, 0, 0, 0, 0, 0, 0, 0))
    facts["getattr"] = s.rpc(p.Tgetattr(3, p.GETATTR_BASIC))
    s.rpc(p.Txattrwalk(3, 12, "user.none"))
    facts["renameat"] = s.rpc(p.Trenameat(0, "hello.txt", 0, "renamed.txt"))
    if not _ok(facts["renameat"]):
        s.rpc(p.Trename(3, 0, "renamed.txt"))
    s.rpc(p.Tclunk(3))
    facts["mkdir"] = s.rpc(p.Tmkdir(0, "sub", 0o755, 0))
    facts["symlink"] = s.rpc(p.Tsymlink(0, "link", "renamed.txt", 0))
    s.rpc(p.Twalk(0, 10, ["link"]))
    facts["readlink"] = s.rpc(p.Treadlink(10))
    s.rpc(p.Tclunk(10))
    s.rpc(p.Twalk(0, 11, ["renamed.txt"]))
    s.rpc(p.Tlink(0, 11, "hard"))
    s.rpc(p.Tclunk(11))
    s.rpc(p.Tmknod(0, "fifo", S_IFIFO | 0o644, 0, 0, 0))
    s.rpc(p.Twalk(0, 4, []))
    s.rpc(p.Tlopen(4, O_RDONLY | O_DIRECTORY))
    facts["readdir"] = r = s.rpc(p.Treaddir(4, 0, iounit))
    if _ok(r) and r.data:
        last = p.unpack_dirents(r.data)[-1].offset
        s.rpc(p.Treaddir(4, last, iounit))
    s.rpc(p.Tclunk(4))
    facts["missing"] = s.rpc(p.Twalk(0, 5, ["no-such-file"]))
    flush_pair(s, 7, "renamed.txt", p.Tlopen(7, O_RDONLY), iounit)
    for name, flags in (("renamed.txt", 0), ("hard", 0), ("link", 0), ("fifo", 0),
                        ("sub", p.AT_REMOVEDIR)):
        if not _ok(s.rpc(p.Tunlinkat(0, name, flags))):  # diod 1.0.24: EOPNOTSUPP
            if _ok(s.rpc(p.Twalk(0, 8, [name]))):
                s.rpc(p.Tremove(8))
    s.rpc(p.Tclunk(0))
    return facts


def record(sock: socket.socket, dialect: str, aname: str, uname: str = "root",
           msize: int = 1 << 20) -> tuple[Capture, dict]:
    """Run the scripted session for `dialect`; return the capture and named replies."""
    cap = Capture()
    s = Session(sock, cap)
    s.dialect = dialect  # Tversion reads the same in every dialect; label it as asked
    r = s.version(dialect, msize)
    if r.NAME != "Rversion" or r.version != dialect:
        raise RuntimeError(f"server answered {p.fmt_message(r)} to Tversion {dialect}")
    run = run_dotl if dialect == p.P9_2000_L else run_classic
    try:
        facts = run(s, aname, uname)
    except Exception as e:  # show where the server stopped following the script
        e.add_note("last frames of the session:\n" + "\n".join(cap.dumps().splitlines()[-12:]))
        raise
    facts["rversion"] = r
    return cap, facts


def main(names: list[str]) -> None:
    from peers import PEER_NAMES, start

    outdir = os.path.join(os.path.dirname(__file__), "captures")
    os.makedirs(outdir, exist_ok=True)
    for name in names or PEER_NAMES:
        with start(name) as peer:
            with peer.connect() as sock:
                cap, _ = record(sock, peer.dialect, peer.aname)
        cap.comments = [f"{name} ({peer.dialect}) answering tests/recorder.py",
                        "T: client to server, R: server to client; frames exactly as sent"]
        path = os.path.join(outdir, f"{name}.9p")
        with open(path, "w") as f:
            f.write(cap.dumps())
        print(f"{path}: {len(cap.records)} frames")


if __name__ == "__main__":
    main(sys.argv[1:])
