"""Notice that the caller of a blocked read or write gave up.

pyfuse3 never delivers FUSE_INTERRUPT, so a process blocked in a read that the server
does not answer (a listen, event or plumb file) could not even be killed. The kernel
still shows what happened: the waiting thread sits in request_wait_answer with a
signal pending (a fatal one shows as a pending SIGKILL). So a request still waiting
after a moment is watched: when a process that could have made it (one holding the
file open, or the one that opened it) is blocked in FUSE with a signal pending, or
all of them are gone, the request is cancelled, which flushes it on the server, and
the caller gets EINTR.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import trio

FIRST_LOOK = 0.5  # most reads answer sooner; /proc is left alone for them
LOOK_EVERY = 0.25  # then more and more seldom, up to once a second: an event file may
LOOK_AT_MOST = 1.0  # block for hours, and each look reads all of /proc/*/fd


def holders(path: str) -> set[int]:
    """Processes with a descriptor on path (a reader may have inherited it)."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                        out.add(int(pid))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return out


def _mask(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key):
            return int(line.split()[1], 16)
    return 0


def waiting_with_signal(pid: int) -> bool | None:
    """True if a thread of pid waits in FUSE with a signal it does not block pending;
    False if it does not; None if the process is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/wchan") as f:
                if f.read().strip() != "request_wait_answer":
                    continue
            with open(f"{base}/status") as f:
                status = f.read()
        except OSError:
            continue
        pending = _mask(status, "SigPnd:") | _mask(status, "ShdPnd:")
        if pending & ~_mask(status, "SigBlk:"):
            return True
    return False


def gave_up(pids: Iterable[int]) -> bool:
    """A candidate waits in FUSE with a signal pending, or every candidate is gone.

    (A shell that opened the file and passed it to a reader holds it too, without
    waiting in FUSE: one waiting candidate with a signal is enough.)"""
    states = [waiting_with_signal(pid) for pid in pids]
    return any(states) or bool(states) and all(s is None for s in states)


async def watch(scope: trio.CancelScope, path: str | None, opener: int | None) -> None:
    """Cancel scope once the request's caller has given up (see the module's text)."""
    await trio.sleep(FIRST_LOOK)
    pause = LOOK_EVERY
    while True:
        def look() -> bool:
            pids = holders(path) if path else set()
            if opener:
                pids.add(opener)
            return gave_up(pids)

        if await trio.to_thread.run_sync(look):
            scope.cancel()
            return
        await trio.sleep(pause)
        pause = min(pause * 1.5, LOOK_AT_MOST)
