"""The codec against real servers of other projects, live: the recorder's script runs on
each, every frame re-encodes to the bytes that crossed the socket, and the replies say
what a correct file server says."""

from __future__ import annotations

import errno as E
import re

import pytest

from peers import PEER_NAMES, start_or_skip
from py9pfuse import proto as p
from recorder import record

pytestmark = pytest.mark.peer
TEXT = b"hello, 9P\n"


def is_error(m: p.Message) -> bool:
    return m.NAME in ("Rerror", "Rlerror")


def errno_of(m: p.Message) -> int:
    if m.NAME == "Rlerror":
        return m.ecode
    return m.errno if m.errno not in (None, 0, 0xFFFFFFFF) else p.errno_for(m.ename)


@pytest.mark.parametrize("name", PEER_NAMES)
def test_scripted_session(name):
    with start_or_skip(name) as peer:
        with peer.connect() as sock:
            cap, f = record(sock, peer.dialect, peer.aname)
        log = peer.log()
    for direction, dialect, frame in cap.records:
        assert p.encode(p.decode(frame, dialect), dialect) == frame

    assert f["rversion"].version == peer.dialect
    assert 7 < f["rversion"].msize <= 1 << 20
    assert f["attach"].NAME == "Rattach" and f["attach"].qid.type & p.QTDIR
    assert f["write"].NAME == "Rwrite" and f["write"].count == len(TEXT)
    assert f["read"].NAME == "Rread" and f["read"].data == TEXT
    assert f["walk"].NAME == "Rwalk" and len(f["walk"].wqids) == 1
    assert is_error(f["missing"]) and errno_of(f["missing"]) == E.ENOENT

    if peer.dialect == p.P9_2000_L:
        attr = f["getattr"]
        assert attr.size == len(TEXT) and attr.mode & 0o7777 == 0o600
        assert f["statfs"].NAME == "Rstatfs" and f["statfs"].namelen > 0
        assert f["readlink"].target == "renamed.txt"
        names = {d.name for d in p.unpack_dirents(f["readdir"].data)}
        assert {".", "..", "renamed.txt", "sub", "link", "fifo", "hard"} <= names
    else:
        st = f["stat"].stat
        assert (st.name, st.length) == ("hello.txt", len(TEXT))
        names = {s.name for s in p.unpack_stats(f["dirread"].data, peer.dialect)}
        assert "sub" in names and names & {"hello.txt", "renamed.txt"}
    if name == "diod":  # diod counts the fids a client left behind
        m = re.search(r"(\d+) unclunked fids", log)
        assert m is None or m.group(1) == "0", log
