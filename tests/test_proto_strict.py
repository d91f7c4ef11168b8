"""Bad bytes give ProtocolError, and only that: truncations, lying sizes, random input."""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from py9pfuse import proto as p


def frame_with_size(body: bytes, type_: int, tag: int = 1) -> bytes:
    return struct.pack("<IBH", 7 + len(body), type_, tag) + body


def test_count_running_past_the_message():
    bad = frame_with_size(struct.pack("<I", 100) + b"abc", 117)  # Rread count 100, 3 bytes
    with pytest.raises(p.ProtocolError, match=r"Rread tag 1: data needs 100 bytes but only 3"):
        p.decode(bad, p.P9_2000)


def test_string_running_past_the_message():
    bad = frame_with_size(struct.pack("<I", 8192) + struct.pack("<H", 50) + b"9P", 101)
    with pytest.raises(p.ProtocolError, match="version needs 50 bytes"):
        p.decode(bad, p.P9_2000)


def test_lying_count_costs_no_memory():
    bad = frame_with_size(struct.pack("<I", 0xFFFFFFFF) + b"x" * 10, 117)
    tracemalloc.start()
    with pytest.raises(p.ProtocolError):
        p.decode(bad, p.P9_2000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 1024


def test_too_many_walk_names():
    body = struct.pack("<IIH", 1, 2, 17) + b"\x01\x00a" * 17
    with pytest.raises(p.ProtocolError, match="nwname 17 is more than 16"):
        p.decode(frame_with_size(body, 110), p.P9_2000)
    with pytest.raises(p.ProtocolError, match="at most 16"):
        p.encode(p.Twalk(1, 2, ["a"] * 17), p.P9_2000)


def test_stat_sizes_that_disagree():
    rec = p.pack_stat(p.Stat(0, 0, p.Qid(0, 0, 1), 0o644, 0, 0, 5, "f", "u", "g", "m"), "9P2000")
    good = frame_with_size(struct.pack("<H", len(rec)) + rec, 125)
    assert p.decode(good, p.P9_2000).stat.name == "f"
    lying_outer = frame_with_size(struct.pack("<H", len(rec) + 1) + rec + b"\0", 125)
    with pytest.raises(p.ProtocolError, match="disagrees"):
        p.decode(lying_outer, p.P9_2000)
    lying_inner = bytearray(good)
    struct.pack_into("<H", lying_inner, 9, len(rec) - 1)  # inner size 1 byte short
    with pytest.raises(p.ProtocolError):
        p.decode(bytes(lying_inner), p.P9_2000)


def test_header_problems():
    with pytest.raises(p.ProtocolError, match="shorter than the 7-byte header"):
        p.decode(b"\x05\0\0\0\x64", p.P9_2000)
    with pytest.raises(p.ProtocolError, match="size field says 99"):
        p.decode(struct.pack("<IBH", 99, 120, 1) + b"\0\0\0\0", p.P9_2000)
    with pytest.raises(p.ProtocolError, match="unknown message type 200"):
        p.decode(struct.pack("<IBH", 7, 200, 1), p.P9_2000)


def test_error_carries_type_and_tag_for_a_server_to_answer():
    with pytest.raises(p.ProtocolError) as e:
        p.decode(frame_with_size(b"\1\0", 120, tag=9), p.P9_2000)  # Tclunk with 2-byte fid
    assert (e.value.type, e.value.tag) == (120, 9)


SAMPLES = [
    (p.P9_2000, p.Twalk(1, 2, ["usr", "glenda", "lib"], tag=3)),
    (p.P9_2000, p.Rstat(p.Stat(0, 0, p.Qid(0x80, 3, 9), p.DMDIR | 0o775, 1, 2, 0, "d", "u", "g",
                               "m"), tag=4)),
    (p.P9_2000_U, p.Tcreate(1, "link", p.DMSYMLINK | 0o777, 0, extension="target", tag=5)),
    (p.P9_2000_U, p.Rerror("permission denied", errno=13, tag=6)),
    (p.P9_2000_L, p.Rgetattr(0x7FF, p.Qid(0, 1, 2), 0o100644, 0, 0, 1, 0, 10, 4096, 1,
                             *range(8), 0, 0, tag=7)),
    (p.P9_2000_L, p.Rreaddir(p.pack_dirents([p.Dirent(p.Qid(0, 0, 1), 1, 8, "a")]), tag=8)),
    (p.P9_2000_L, p.Tlock(1, 1, 0, 0, 0, 42, "host", tag=9)),
]


@pytest.mark.parametrize("dialect,msg", SAMPLES, ids=[m.NAME for _, m in SAMPLES])
def test_every_truncation_is_a_protocol_error(dialect, msg):
    frame = p.encode(msg, dialect)
    # a .u Rerror without its errno is a valid (py9p) message, not a truncated one
    optional_tail = len(frame) - 4 if msg.NAME == "Rerror" else None
    for cut in range(len(frame)):
        short = frame[:cut]
        if cut >= 4:  # make the size field agree, so the body itself is short
            short = struct.pack("<I", cut) + short[4:]
        if cut == optional_tail:
            assert p.decode(short, dialect).errno is None
            continue
        with pytest.raises(p.ProtocolError):
            p.decode(short, dialect)


def _decode_all(data: bytes, dialect: str, msize: int) -> int:
    """Everything a reader does with untrusted bytes; returns frames decoded."""
    framer = p.Framer(msize)
    n = 0
    try:
        framer.feed(data)
        for frame in framer.frames():
            try:
                msg = p.decode(frame, dialect)
                n += 1
                if msg.NAME == "Rread":
                    p.unpack_stats(msg.data, dialect)
                elif msg.NAME == "Rreaddir":
                    p.unpack_dirents(msg.data)
                p.trace_line(msg)
            except p.ProtocolError:
                pass
    except p.ProtocolError:
        pass
    return n


@pytest.mark.parametrize("dialect,msg", SAMPLES, ids=[m.NAME for _, m in SAMPLES])
def test_mutations_only_raise_protocol_error(dialect, msg):
    rng = random.Random(msg.TYPE)
    frame = bytearray(p.encode(msg, dialect))
    for _ in range(2000):
        m = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            m[rng.randrange(len(m))] = rng.randrange(256)
        _decode_all(bytes(m), dialect, 1 << 16)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200), dialect=st.sampled_from(p.DIALECTS))
def test_random_bytes_only_raise_protocol_error(data, dialect):
    _decode_all(data, dialect, 1 << 16)


# --- the framer


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 400), max_size=20))
def test_framer_any_chunking(cuts):
    frames = [p.encode(m, d) for d, m in SAMPLES if d == p.P9_2000_L]
    stream = b"".join(frames)
    points = sorted({c for c in cuts if c < len(stream)} | {0, len(stream)})
    framer, got = p.Framer(8192), []
    for a, b in zip(points, points[1:]):
        framer.feed(stream[a:b])
        got.extend(framer.frames())
    assert got == frames and framer.pending == 0


def test_framer_refuses_size_above_msize_before_buffering():
    framer = p.Framer(8192)
    framer.feed(struct.pack("<I", 8193))
    with pytest.raises(p.ProtocolError, match=r"size 8193 is outside 7\.\.8192"):
        framer.next_frame()
    with pytest.raises(p.ProtocolError):  # the stream stays broken
        framer.feed(b"more")


def test_framer_refuses_size_below_header():
    framer = p.Framer(8192)
    framer.feed(b"\x03\0\0\0")
    with pytest.raises(p.ProtocolError, match="size 3"):
        list(framer.frames())


def test_framer_waits_for_a_partial_frame():
    frame = p.encode(p.Tclunk(7, tag=1), p.P9_2000)
    framer = p.Framer(8192)
    framer.feed(frame[:5])
    assert framer.next_frame() is None and framer.pending == 5
    framer.feed(frame[5:] + frame[:2])
    assert framer.next_frame() == frame and framer.next_frame() is None


def test_framer_msize_applies_after_negotiation():
    framer = p.Framer(1 << 20)
    big = p.encode(p.Rread(b"x" * 9000, tag=1), p.P9_2000)
    framer.feed(big)
    assert framer.next_frame() == big
    framer.msize = 8192
    framer.feed(big)
    with pytest.raises(p.ProtocolError):
        framer.next_frame()
