"""Real FUSE mounts for tests: mount with the py9pfuse command as a user would, and always
unmount and end the daemon afterwards, even when the test failed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import peers

CMD = [sys.executable, "-m", "py9pfuse"]


def py9pfuse(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout, **kw)


def is_mounted(path: str) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def daemons(path: str) -> list[int]:
    """pids of py9pfuse processes serving path."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(path) in argv and any(b"py9pfuse" in a for a in argv) \
                and b"fusermount" not in argv[0]:  # not auto_unmount's watcher
            out.append(int(pid))
    return out


def unmount(path: str) -> None:
    """Unmount and make sure the daemon is gone (lazily, then by force)."""
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", path], capture_output=True)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)
    deadline = time.monotonic() + 5
    while daemons(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in daemons(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def mounted(address: str, *options: str, aname: str = "") -> Iterator[str]:
    """A fresh mountpoint with the server mounted on it by `py9pfuse ADDR MNT -o ...`."""
    mnt = tempfile.mkdtemp(prefix="p9mnt-")
    opts = list(options) + ([f"aname={aname}"] if aname else [])
    try:
        r = py9pfuse(address, mnt, *(["-o", ",".join(opts)] if opts else []))
        if r.returncode != 0:
            raise RuntimeError(f"mount failed: {r.stderr.strip()}")
        assert is_mounted(mnt), "py9pfuse exited 0 but nothing is mounted"
        yield mnt
    finally:
        unmount(mnt)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


class Foreground:
    """A mount served by `py9pfuse -f` in a child whose log lines land in a file."""

    COUNTS = re.compile(r"(\d+) inodes \((\d+) walked\), (\d+) fids, (\d+) open handles,"
                        r" (\d+) requests in flight")

    def __init__(self, mnt: str, proc: subprocess.Popen, log: str):
        self.mnt, self.proc, self.logfile = mnt, proc, log

    def log(self) -> str:
        with open(self.logfile, errors="replace") as f:
            return f.read()

    def counts(self) -> dict[str, int]:
        """The daemon's own counts, asked for with SIGUSR1."""
        before = len(self.COUNTS.findall(self.log()))
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while len(found := self.COUNTS.findall(self.log())) == before:
            if time.monotonic() > deadline:
                raise AssertionError("no counts from the daemon: " + self.log()[-500:])
            time.sleep(0.02)
        keys = ("inodes", "walked", "fids", "handles", "in_flight")
        return dict(zip(keys, map(int, found[-1])))


@contextlib.contextmanager
def foreground(address: str, *options: str, aname: str = "") -> Iterator[Foreground]:
    """Like mounted(), but the daemon stays our child (-f) and its log is kept."""
    mnt = tempfile.mkdtemp(prefix="p9mnt-")
    log = os.path.join(tempfile.mkdtemp(prefix="p9log-"), "log")
    opts = list(options) + ([f"aname={aname}"] if aname else [])
    with open(log, "w") as f:
        proc = subprocess.Popen([*CMD, address, mnt, "-f",
                                 *(["-o", ",".join(opts)] if opts else [])], stderr=f)
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log) as f:
                    raise RuntimeError(f"mount failed: {f.read().strip()}")
            time.sleep(0.02)
        yield Foreground(mnt, proc, log)
    finally:
        unmount(mnt)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            os.rmdir(mnt)
        shutil.rmtree(os.path.dirname(log), ignore_errors=True)


@contextlib.contextmanager
def bundled_server(*args: str) -> Iterator[str]:
    """The bundled 9P2000 server as its own process on a unix socket; its address.
    args go to `python -m py9pfuse.server` (its auth options)."""
    d = tempfile.mkdtemp(prefix="p9bundled-")
    sock = os.path.join(d, "s")
    proc = subprocess.Popen([sys.executable, "-m", "py9pfuse.server", sock, *args],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bundled server did not start")
            time.sleep(0.02)
        yield f"unix!{sock}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def server(name: str) -> Iterator[tuple[str, str]]:
    """(address, aname) of a running server: a peer by name, or "bundled"."""
    if name == "bundled":
        with bundled_server() as addr:
            yield addr, ""
    else:
        with peers.start_or_skip(name) as peer:
            yield peer.address, peer.aname
