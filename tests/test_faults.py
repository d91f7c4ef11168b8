"""A server that breaks the protocol on purpose (py9pfuse.server --fault KIND), mounted
for real: the request that meets the fault fails with a clean errno within a bound, the
rest of the mount carries on where the stream is still sound (or answers EIO where it is
not), the log says what happened in a line, and the mount comes off cleanly.

Reads of the file `fault` meet the fault (server/faults.py); its walk, stat and open do
not, so each test opens it and reads it in a child process that can be given up on.
"""

from __future__ import annotations

import errno as E
import json
import os
import re
import subprocess
import sys
import time

import pytest

from mounts import bundled_server, foreground, is_mounted
from py9pfuse import options
from py9pfuse.server.faults import CONTENT
from py9pfuse.server.ramfs import README

BOUND = 8.0  # seconds the faulty request may take to fail

# the stream is still whole after these: other files must keep working
SOUND = {"unknown-tag", "duplicate-tag", "wrong-type", "lying-stat", "no-reply"}

# what the daemon's log says, one line (the address comes first)
SAYS = {
    "garbage": r"connection lost: the server sent garbage: .*size 3 is outside",
    "oversize": r"connection lost: the server sent garbage: .*size 1073741824 is outside",
    "close-mid": r"connection lost: the server closed the connection",
    "partial": r"connection lost: no reply from the server for",
    "unknown-tag": r"ignored a reply \(type 117\) with unknown tag 65534",
    "duplicate-tag": r"ignored a reply \(type 117\) with unknown tag \d+",
    "wrong-type": r"Rclunk in reply to Tread",
    "lying-stat": r"bad reply to Tstat: ",
    "no-reply": r"no reply to Tread within",
}

class Hung(AssertionError):
    """The faulty request did not fail within BOUND: the one failure an xfail covers."""


def _kind(name, *, xfail=None):
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=Hung, reason=xfail)
                        ) if xfail else name


KINDS = [
    _kind("garbage"),
    _kind("unknown-tag"),
    _kind("duplicate-tag"),
    _kind("oversize"),
    _kind("wrong-type"),
    # half a frame, then silence: only a keepalive can tell a stalled server from a
    # slow one
    _kind("partial"),
    _kind("lying-stat"),
    _kind("no-reply"),
    _kind("close-mid"),
]

# a child does the operation, so that a hung one can be killed
CHILD = r"""
import json, os, sys
op, path = sys.argv[1:]
try:
    if op == "read":
        fd = os.open(path, os.O_RDONLY)
        try:
            out = {"data": os.read(fd, 1 << 16).decode()}
        finally:
            os.close(fd)
    elif op == "stat":
        out = {"size": os.stat(path).st_size}
    else:
        out = {"names": sorted(os.listdir(path))}
except OSError as e:
    out = {"errno": e.errno}
print(json.dumps(out))
"""


class Attempt:
    def __init__(self, op: str, path: str):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, op, path],
                                     stdout=subprocess.PIPE, text=True)
        self.elapsed: float | None = None

    def running_after(self, seconds: float) -> bool:
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return True
        return False

    def result(self) -> dict:
        """What the child got; Hung if it did not finish within BOUND."""
        try:
            out, _ = self.proc.communicate(timeout=max(0.0, BOUND - self.age()))
        except subprocess.TimeoutExpired:
            raise Hung(f"still blocked after {BOUND:g} s") from None
        self.elapsed = self.age()
        return json.loads(out)

    def age(self) -> float:
        return time.monotonic() - self.t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel: the unmount's kill of the daemon frees it


def mount_options(kind: str) -> list[str]:
    opts = ["timeout=1"]  # a request that should not block fails after 1 s
    if kind == "partial":
        opts.append("keepalive=1")
    return opts


def readme_reads(mnt: str) -> bytes:
    with open(os.path.join(mnt, "README"), "rb") as f:
        return f.read()


def wait_for_log(fg, pattern: str, seconds: float = 2.0) -> str:
    deadline = time.monotonic() + seconds
    while not re.search(pattern, log := fg.log()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return log


def settles(fg, seconds: float = 3.0) -> bool:
    """Nothing left in flight (a close's Tclunk may still be on its way: release is
    asynchronous in the kernel)."""
    deadline = time.monotonic() + seconds
    while fg.counts()["in_flight"]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.parametrize("kind", KINDS)
def test_fault(kind):
    with bundled_server("--fault", kind) as address, \
            foreground(address, *mount_options(kind)) as fg:
        mnt = fg.mnt
        fault = os.path.join(mnt, "fault")
        attempt = Attempt("stat" if kind == "lying-stat" else "read", fault)
        try:
            if kind in SOUND and attempt.running_after(1.5):
                # blocked on the server: everyone else still goes on meanwhile
                assert readme_reads(mnt) == README
            got = attempt.result()
        finally:
            attempt.kill()
        assert attempt.elapsed < BOUND

        if kind == "duplicate-tag":  # the first copy is the answer, the second a stray
            assert got == {"data": CONTENT.decode()}
        elif kind == "no-reply":
            assert got == {"errno": E.ETIMEDOUT}
        elif kind == "unknown-tag":
            assert got["errno"] in (E.ETIMEDOUT, E.EIO)
        else:
            assert got == {"errno": E.EIO}

        if kind == "lying-stat":  # the root's directory listing lies as well
            listing = Attempt("listdir", mnt)
            try:
                assert listing.result() == {"errno": E.EIO}
            finally:
                listing.kill()

        if kind in SOUND:
            assert readme_reads(mnt) == README
            assert fg.proc.poll() is None
            assert settles(fg), "a request is still waiting on the server"
        elif fg.proc.poll() is None:  # the connection is gone: EIO at once, no hang
            t = time.monotonic()
            with pytest.raises(OSError) as e:
                os.stat(os.path.join(mnt, "README"))
            assert e.value.errno == E.EIO and time.monotonic() - t < 2
        else:
            assert not is_mounted(mnt)

        if kind == "oversize":  # the advertised 1 GiB was never allocated
            assert peak_rss(fg.proc.pid) < 256 << 20

        log = wait_for_log(fg, SAYS[kind])
        assert "Traceback" not in log, log
        assert len(re.findall(SAYS[kind], log)) >= 1, log

        # it comes off cleanly: no dead mount, and the daemon ends
        if is_mounted(mnt):
            r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
        assert fg.proc.wait(5) == 0
        assert os.listdir(mnt) == []  # a plain directory again, not ENOTCONN


@pytest.mark.parametrize("cmd", [
    "timeout -s INT 1 dd if=/dev/zero of={f} bs=16 count=1 conv=notrunc status=none",
    "timeout -s INT 1 cat {f}",
])
def test_a_signal_ends_a_write_or_read_the_server_never_answers(cmd):
    """A command written to a file (direct I/O: the writer waits for the server) or a
    read that the server holds for ever: SIGINT ends it with EINTR within 2 s, the
    request is flushed, and nothing stays in flight (timeout= is 30 s here)."""
    with bundled_server("--fault", "no-reply") as address, \
            foreground(address, "cache=none") as fg:
        t = time.monotonic()
        r = subprocess.run(["bash", "-c", cmd.format(f=os.path.join(fg.mnt, "fault"))],
                           capture_output=True, timeout=30)
        assert time.monotonic() - t < 2.5 and r.returncode in (124, 130), r
        assert settles(fg), "the request was not flushed"
        assert readme_reads(fg.mnt) == README
