"""Fid numbers, and what the client knows about each fid."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from ..proto import IOHDRSZ, NOFID, Qid


@dataclass(slots=True)
class Fid:
    """A fid the server knows. `iounit` and `mode` are set once it is opened."""

    num: int
    qid: Qid
    iounit: int = 0
    mode: int | None = None  # the open mode (9P2000) or flags (.L); None: walked, not open

    @property
    def is_open(self) -> bool:
        return self.mode is not None


class FidPool:
    """Hands out fid numbers, lowest first, and takes one back only after Rclunk/Rremove.

    Reusing a number before the server has forgotten it would make the next Twalk or
    Tattach fail with "fid in use" or, worse, act on the old file.
    """

    def __init__(self) -> None:
        self._free: list[int] = []  # a heap, with _free_set to ask "is n free?"
        self._free_set: set[int] = set()
        self._next = 0
        self.live = 0  # fids the server holds for us (a leak shows here)
        self.gen = 0  # the connection new numbers belong to (a reconnect starts another)
        # number -> connection, only for numbers handed out after a reconnect: the
        # rest are of the first (no dict entry per fid, 5 MB over 100,000 files)
        self._gen: dict[int, int] = {}

    def alloc(self) -> int:
        if self._free:
            n = heapq.heappop(self._free)
            self._free_set.discard(n)
        else:
            n = self._next
            if n >= NOFID:
                raise OSError(24, "out of fid numbers")
            self._next += 1
        self.live += 1
        if self.gen:
            self._gen[n] = self.gen
        return n

    def release(self, n: int) -> None:
        self.live -= 1
        self._gen.pop(n, None)
        heapq.heappush(self._free, n)
        self._free_set.add(n)

    def owns(self, n: int) -> bool:
        """n was handed out by this pool and not yet taken back."""
        return 0 <= n < self._next and n not in self._free_set

    def gen_of(self, n: int) -> int:
        """The connection fid n was allocated on (numbers not ours, like NOFID: now)."""
        return self._gen.get(n, 0) if self.owns(n) else self.gen


def effective_iounit(iounit: int, msize: int) -> int:
    """Bytes one Tread/Twrite may carry: iounit 0 means msize-24, and never above it."""
    limit = msize - IOHDRSZ
    return min(iounit, limit) if iounit else limit
