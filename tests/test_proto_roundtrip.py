"""decode(encode(m)) == m for every message of every dialect, and the wire layout."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from py9pfuse import proto as p

U = {"u8": 8, "u16": 16, "u32": 32, "u64": 64}
names = st.text(max_size=40)
qids = st.builds(p.Qid, st.integers(0, 255), st.integers(0, 2**32 - 1),
                 st.integers(0, 2**64 - 1))


def stats(dialect: str):
    u32 = st.integers(0, 2**32 - 1)

    def record(**extra):
        return st.builds(p.Stat, st.integers(0, 0xFFFF), u32, qids, u32, u32, u32,
                         st.integers(0, 2**64 - 1), names, names, names, names, **extra)

    if dialect == p.P9_2000_U:  # with its .u part, or without (as py9p -D sends some)
        return record(extension=names, n_uid=u32, n_gid=u32, n_muid=u32) | \
            record(extension=st.none())
    return record()


def value(kind: str, dialect: str):
    if kind in U:
        return st.integers(0, 2 ** U[kind] - 1)
    if kind == "u32?":
        return st.none() | st.integers(0, 2**32 - 1)
    return {"qid": qids, "str": names, "data": st.binary(max_size=300),
            "wnames": st.lists(names, max_size=16), "wqids": st.lists(qids, max_size=16),
            "stat": stats(dialect)}[kind]


def messages(cls, dialect: str):
    fields = {f: value(k, dialect) for f, k, ds in cls.FIELDS if dialect in ds}
    return st.builds(cls, tag=st.integers(0, 0xFFFF), **fields)


CASES = [(d, cls) for d in p.DIALECTS for cls in p.message_types(d)]


@pytest.mark.parametrize("dialect,cls", CASES, ids=[f"{d}-{c.NAME}" for d, c in CASES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_roundtrip(dialect, cls, data):
    msg = data.draw(messages(cls, dialect))
    frame = p.encode(msg, dialect)
    size, type_, tag = struct.unpack_from("<IBH", frame)
    assert (size, type_, tag) == (len(frame), cls.TYPE, msg.tag)
    assert p.decode(frame, dialect) == msg


def test_every_message_of_protocol_md_is_present():
    classic = {"version", "auth", "attach", "flush", "walk", "open", "create", "read", "write",
               "clunk", "remove", "stat", "wstat"}
    dotl = {"statfs", "lopen", "lcreate", "symlink", "mknod", "rename", "readlink", "getattr",
            "setattr", "xattrwalk", "xattrcreate", "readdir", "fsync", "lock", "getlock", "link",
            "mkdir", "renameat", "unlinkat"}
    for d in (p.P9_2000, p.P9_2000_U):
        have = {c.NAME for c in p.message_types(d)}
        assert {f"{tr}{n}" for n in classic for tr in "TR"} | {"Rerror"} == have
    have = {c.NAME for c in p.message_types(p.P9_2000_L)}
    want = {f"{tr}{n}" for n in dotl | classic - {"open", "create", "stat", "wstat"} for tr in "TR"}
    assert want | {"Rlerror", "Rerror"} == have


def test_known_bytes_9p2000():
    # Tversion from intro(5): size[4] type[1] tag[2] msize[4] version[s]
    frame = p.encode(p.Tversion(8192, "9P2000", tag=p.NOTAG), p.P9_2000)
    assert frame == bytes.fromhex("13000000 64 ffff 00200000 0600") + b"9P2000"
    walk = p.encode(p.Twalk(1, 2, ["a", "bc"], tag=3), p.P9_2000)
    assert walk == bytes.fromhex("18000000 6e 0300 01000000 02000000 0200 0100 61 0200 6263")


def test_dialect_only_fields_travel_only_in_their_dialect():
    att = p.Tattach(1, p.NOFID, "glenda", "", n_uname=1000, tag=1)
    classic, dotu = p.encode(att, p.P9_2000), p.encode(att, p.P9_2000_U)
    assert len(dotu) == len(classic) + 4 and dotu.endswith(struct.pack("<I", 1000))
    assert p.decode(classic, p.P9_2000).n_uname == p.NONUNAME
    err = p.Rerror("file does not exist", errno=2, tag=1)
    assert p.decode(p.encode(err, p.P9_2000_U), p.P9_2000_U) == err
    # .L's type-107 reply is errno[4] only (nfs-ganesha's errors)
    assert p.encode(err, p.P9_2000_L) == bytes.fromhex("0b000000 6b 0100 02000000")
    # py9p -D leaves the errno out of some .u Rerrors: absent, not an error
    bare = p.encode(p.Rerror("file not found", tag=1), p.P9_2000)
    assert p.decode(bare, p.P9_2000_U) == p.Rerror("file not found", errno=None, tag=1)
    assert p.encode(p.decode(bare, p.P9_2000_U), p.P9_2000_U) == bare


def test_a_message_outside_its_dialect_is_refused():
    with pytest.raises(p.ProtocolError, match="not a message of 9P2000.L"):
        p.encode(p.Tstat(1, tag=1), p.P9_2000_L)
    with pytest.raises(p.ProtocolError, match="unknown message type 24"):
        p.decode(p.encode(p.Tgetattr(1, 0x7FF, tag=1), p.P9_2000_L), p.P9_2000)


def test_stat_dont_touch_is_all_ones():
    rec = p.pack_stat(p.Stat.dont_touch(), p.P9_2000)
    assert rec[:2] == struct.pack("<H", len(rec) - 2)
    assert set(rec[2:41]) == {0xFF} and rec[41:] == b"\0" * 8


@settings(max_examples=100, deadline=None)
@given(entries=st.lists(stats(p.P9_2000_U), max_size=8))
def test_directory_data_roundtrip(entries):
    data = p.pack_stats(entries, p.P9_2000_U)
    assert p.unpack_stats(data, p.P9_2000_U) == entries


@settings(max_examples=100, deadline=None)
@given(entries=st.lists(st.builds(p.Dirent, qids, st.integers(0, 2**64 - 1),
                                  st.integers(0, 255), names), max_size=8))
def test_readdir_entries_roundtrip(entries):
    assert p.unpack_dirents(p.pack_dirents(entries)) == entries


def test_non_utf8_names_survive():
    name = b"caf\xe9".decode("utf-8", "surrogateescape")  # a Latin-1 name on a Linux disk
    frame = p.encode(p.Twalk(1, 2, [name], tag=1), p.P9_2000_L)
    assert b"caf\xe9" in frame
    assert p.decode(frame, p.P9_2000_L).wnames == [name]


def test_trailing_bytes_are_kept():
    # aio9p appends an errno to 9P2000 Rerror; re-encoding must give the same bytes
    frame = p.encode(p.Rerror("oops", tag=2), p.P9_2000)
    frame = struct.pack("<I", len(frame) + 4) + frame[4:] + b"\x05\0\0\0"
    msg = p.decode(frame, p.P9_2000)
    assert msg.ename == "oops" and msg.extra == b"\x05\0\0\0"
    assert p.encode(msg, p.P9_2000) == frame
