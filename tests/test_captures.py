"""Traffic recorded from real servers (tests/recorder.py) decodes and re-encodes byte for byte."""

from __future__ import annotations

import pathlib

import pytest

from py9pfuse import proto as p
from py9pfuse.proto.capture import loads

CAPTURES = sorted((pathlib.Path(__file__).parent / "captures").glob("*.9p"))

# What the scripted session sends in each family of dialects: a capture must show them all.
SCRIPTED = {
    "classic": {"Tversion", "Tauth", "Tattach", "Twalk", "Topen", "Tcreate", "Tread", "Twrite",
                "Tstat", "Twstat", "Tflush", "Tremove", "Tclunk"},
    "dotl": {"Tversion", "Tauth", "Tattach", "Twalk", "Tlopen", "Tlcreate", "Tread", "Twrite",
             "Tgetattr", "Tsetattr", "Treaddir", "Tstatfs", "Tfsync", "Tlock", "Tgetlock",
             "Tmkdir", "Tsymlink", "Treadlink", "Tlink", "Tmknod", "Trenameat", "Tunlinkat",
             "Txattrwalk", "Tflush", "Tclunk"},
}


def test_three_independent_servers_were_recorded():
    names = {c.stem for c in CAPTURES}
    assert {"diod", "py9p", "py9p-u", "aio9p"} <= names, names


@pytest.mark.parametrize("path", CAPTURES, ids=[c.stem for c in CAPTURES])
def test_capture_reencodes_byte_for_byte(path):
    cap = loads(path.read_text())
    sent = set()
    for direction, dialect, frame in cap.records:
        msg = p.decode(frame, dialect)
        assert msg.NAME[0] == direction
        assert p.encode(msg, dialect) == frame, p.fmt_message(msg)
        if direction == "T":
            sent.add(msg.NAME)
        else:
            assert msg.NAME != "Rerror" or dialect == p.P9_2000_L or msg.ename
    dialects = {d for _, d, _ in cap.records}
    assert sent >= SCRIPTED["dotl" if p.P9_2000_L in dialects else "classic"]
