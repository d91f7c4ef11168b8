"""Recorded 9P traffic as text: one frame per line, hex, with its trace as a comment.

    # diod 1.0.24, recorded by tests/recorder.py
    dialect 9P2000.L
    T 13000000 64 ffff 00000100 0800 3950323030302e4c
    #   <-0- Tversion tag 65535 msize 65536 version '9P2000.L'
    R ...

`T` lines went from client to server, `R` lines back. A `dialect` line says how the
frames after it are to be decoded (Tversion and Rversion read the same in all).
Spaces inside the hex are ignored, so the header can be set apart for the eye.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ProtocolError
from .messages import HEADER, decode
from .trace import trace_line


@dataclass
class Capture:
    comments: list[str] = field(default_factory=list)
    records: list[tuple[str, str, bytes]] = field(default_factory=list)  # (T|R, dialect, frame)

    def add(self, direction: str, dialect: str, frame: bytes) -> None:
        self.records.append((direction, dialect, bytes(frame)))

    def dumps(self) -> str:
        lines = [f"# {c}" for c in self.comments]
        dialect = None
        for direction, d, frame in self.records:
            if d != dialect:
                lines.append(f"dialect {d}")
                dialect = d
            h = frame.hex()
            lines.append(f"{direction} {h[:8]} {h[8:10]} {h[10:14]} {h[14:]}".rstrip())
            try:
                lines.append("#   " + trace_line(decode(frame, d)))
            except ProtocolError as e:
                lines.append(f"#   undecodable: {e}")
        return "\n".join(lines) + "\n"


def loads(text: str) -> Capture:
    cap = Capture()
    dialect = None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            if line.startswith("# ") and not cap.records:
                cap.comments.append(line[2:])
            continue
        word, _, rest = line.partition(" ")
        if word == "dialect":
            dialect = rest.strip()
        elif word in ("T", "R") and dialect:
            try:
                frame = bytes.fromhex(rest.replace(" ", ""))
            except ValueError:
                raise ProtocolError(f"capture line {lineno}: not hex") from None
            if len(frame) < HEADER.size:
                raise ProtocolError(f"capture line {lineno}: frame shorter than a header")
            cap.add(word, dialect, frame)
        else:
            raise ProtocolError(f"capture line {lineno}: expected 'dialect D', 'T hex' or 'R hex'")
    return cap
