"""Cut a 9P byte stream into whole messages, whatever chunks it arrives in."""

from __future__ import annotations

from .constants import HEADER_SIZE
from .errors import ProtocolError
from .wire import U32

_COMPACT_AT = 1 << 16  # drop consumed bytes once this many have piled up


class Framer:
    """Fed bytes with `feed`, yields whole frames (size field included) with `frames`.

    A size field below the header size or above `msize` is a ProtocolError as soon as
    its four bytes arrive, before anything is buffered for it: a lying size can never
    make the framer wait for, or hold, more than msize bytes per message. After such
    an error the stream has lost its framing, so every later call raises it again.
    """

    def __init__(self, msize: int):
        self.msize = msize  # lower it after Rversion to the negotiated value
        self._buf = bytearray()
        self._pos = 0
        self._broken: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._broken:
            raise self._broken
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """The next whole frame, or None until more bytes are fed."""
        if self._broken:
            raise self._broken
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        size = U32.unpack_from(buf, pos)[0]
        if size < HEADER_SIZE or size > self.msize:
            self._broken = ProtocolError(
                f"frame at stream offset {pos}: size {size} is outside {HEADER_SIZE}..{self.msize}"
                f" (msize)")
            raise self._broken
        if len(buf) - pos < size:
            return None
        frame = bytes(buf[pos : pos + size])
        pos += size
        if pos == len(buf):
            buf.clear()
            pos = 0
        elif pos >= _COMPACT_AT:
            del buf[:pos]
            pos = 0
        self._pos = pos
        return frame

    def frames(self):
        """Every whole frame fed so far, in order."""
        while (frame := self.next_frame()) is not None:
            yield frame
