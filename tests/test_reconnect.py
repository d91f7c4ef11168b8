"""The server goes away: with -o reconnect the mount carries on (reads with the right
bytes, acknowledged writes kept, listings whole); without it, everything fails with EIO
within a bound and umount works; keepalive notices a server that stopped answering.

Real servers as real processes, killed with SIGKILL (or paused with SIGSTOP) in the
middle of the work, and started again on the same address and export.
"""

from __future__ import annotations

import contextlib
import errno as E
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from mounts import foreground, is_mounted
import peers
from peers import _free_port, start_or_skip

pytestmark = pytest.mark.peer


class Restartable:
    """A server process we can kill and start again with the same argv (same address,
    same export), as an administrator restarting it would."""

    def __init__(self, argv: list[str], ready):
        self.argv, self.ready = argv, ready
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.ready():
            assert self.proc.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def restart_later(self, delay: float) -> threading.Thread:
        def run():
            time.sleep(delay)
            self.start()

        t = threading.Thread(target=run)
        t.start()
        return t


def _tcp_ready(port: int):
    def ready() -> bool:
        import socket
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    return ready


@contextlib.contextmanager
def diod_server(auth: bool = False):
    """auth: diod requires MUNGE (munged must be running), as it does by default."""
    with start_or_skip("diod"):  # skips (or fails under make test) if diod is missing
        pass
    export = tempfile.mkdtemp(prefix="p9export-")
    port = _free_port()
    srv = Restartable(["diod", "-f", "-c", "/dev/null", "-l", f"127.0.0.1:{port}", "-e",
                       export, "-L", "stderr"] + ([] if auth else ["-n"]),
                      _tcp_ready(port))
    srv.start()
    try:
        yield srv, f"tcp!127.0.0.1!{port}", export
    finally:
        srv.kill()
        shutil.rmtree(export, ignore_errors=True)


@contextlib.contextmanager
def bundled():
    d = tempfile.mkdtemp(prefix="p9bundled-")
    sock = os.path.join(d, "s")

    def ready() -> bool:
        import socket
        with socket.socket(socket.AF_UNIX) as s:
            return s.connect_ex(sock) == 0

    srv = Restartable([sys.executable, "-m", "py9pfuse.server", sock], ready)
    srv.start()
    try:
        yield srv, f"unix!{sock}"
    finally:
        srv.kill()
        shutil.rmtree(d, ignore_errors=True)


def drop_caches() -> None:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def _lines(log: str, text: str) -> int:
    return sum(text in line for line in log.splitlines())


def test_large_read_goes_on_across_a_restart_with_the_right_bytes():
    with diod_server() as (srv, address, export):
        data = os.urandom(48 << 20)
        with open(os.path.join(export, "big"), "wb") as f:
            f.write(data)
        with foreground(address, "reconnect=30", aname=export) as m:
            drop_caches()
            got = bytearray()
            with open(os.path.join(m.mnt, "big"), "rb", buffering=0) as f:
                while chunk := f.read(1 << 20):
                    got += chunk
                    if len(got) == 8 << 20:  # an eighth in: the server dies mid-file
                        srv.kill()
                        t = srv.restart_later(1.0)
                    time.sleep(0.005)
            t.join()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            log = m.log()
            assert _lines(log, "connection lost") == 1 and _lines(log, "reconnected") == 1, log
            assert "Traceback" not in log


def test_reconnect_authenticates_again():
    """diod requiring MUNGE, restarted: the new connection runs Tauth and the MUNGE
    exchange again before its attach, and the mount reads and writes on."""
    with peers.munged(), diod_server(auth=True) as (srv, address, export):
        with open(os.path.join(export, "f"), "w") as f:
            f.write("before")
        with foreground(address, "reconnect=30", "auth=munge", "attr_timeout=0",
                        aname=export) as m:
            path = os.path.join(m.mnt, "f")
            with open(path) as f:
                assert f.read() == "before"
            srv.kill()
            srv.restart_later(1.0).join()
            with open(path, "a") as f:  # a new open after the restart
                f.write(", after")
            with open(path) as f:
                assert f.read() == "before, after"
            log = m.log()
            assert _lines(log, "connection lost") == 1 and _lines(log, "reconnected") == 1, log
            assert "Traceback" not in log
        with open(os.path.join(export, "f")) as f:
            assert f.read() == "before, after"


def test_acknowledged_writes_survive_a_restart():
    with diod_server() as (srv, address, export):
        with foreground(address, "reconnect=30", aname=export) as m:
            rec = 64 << 10
            want = bytearray()
            fd = os.open(os.path.join(m.mnt, "log"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                t = None
                for i in range(300):
                    block = bytes([i % 251]) * rec
                    assert os.pwrite(fd, block, i * rec) == rec  # acknowledged: kept
                    want += block
                    if i == 100:
                        srv.kill()
                        t = srv.restart_later(1.0)
                os.fsync(fd)
            finally:
                os.close(fd)
            t.join()
        with open(os.path.join(export, "log"), "rb") as f:
            assert f.read() == want  # the server's own file, after unmount


def test_listings_stay_whole_across_a_restart():
    with diod_server() as (srv, address, export):
        for d in range(5):
            os.makedirs(os.path.join(export, "tree", f"d{d}"))
            for i in range(200):
                with open(os.path.join(export, "tree", f"d{d}", f"f{i}"), "w") as f:
                    f.write("x" * i)
        with foreground(address, "reconnect=30", "attr_timeout=0", "entry_timeout=0",
                        aname=export) as m:
            def ls():
                r = subprocess.run(["ls", "-lRn", "--time-style=+%s", "tree"], cwd=m.mnt,
                                   capture_output=True, text=True, timeout=60)
                return r.returncode, r.stdout, r.stderr

            first = ls()
            assert first[0] == 0, first[2]
            srv.kill()
            t = srv.restart_later(1.0)
            for _ in range(3):  # during the outage and after it
                assert ls() == first
            t.join()
            assert _lines(m.log(), "reconnected") == 1, m.log()


def test_a_file_removed_during_the_outage_fails_only_its_own_handle():
    with diod_server() as (srv, address, export):
        for name in ("keep", "gone"):
            with open(os.path.join(export, name), "wb") as f:
                f.write(name.encode() * 1000)
        with foreground(address, "reconnect=30", "cache=none", aname=export) as m:
            keep = os.open(os.path.join(m.mnt, "keep"), os.O_RDONLY)
            gone = os.open(os.path.join(m.mnt, "gone"), os.O_RDONLY)
            try:
                assert os.pread(gone, 4, 0) == b"gone"
                srv.kill()
                os.unlink(os.path.join(export, "gone"))
                srv.start()
                assert os.pread(keep, 4, 0) == b"keep"  # opened again, carries on
                with pytest.raises(OSError) as e:
                    os.pread(gone, 4, 0)
                assert e.value.errno == E.EIO
                assert os.pread(keep, 8, 4) == b"keepkeep"
            finally:
                os.close(keep)
                os.close(gone)
            assert "gone: cannot open it again" in m.log(), m.log()


def test_bundled_server_restart_during_reads_and_listings():
    with bundled() as (srv, address):
        with foreground(address, "reconnect=30", "attr_timeout=0", "entry_timeout=0") as m:
            readme = open(os.path.join(m.mnt, "README"), "rb").read()
            names = sorted(os.listdir(m.mnt))
            fd = os.open(os.path.join(m.mnt, "README"), os.O_RDONLY)
            try:
                srv.kill()
                t = srv.restart_later(1.0)
                assert sorted(os.listdir(m.mnt)) == names  # waits for the new connection
                assert os.pread(fd, len(readme), 0) == readme  # reopened on it
                t.join()
            finally:
                os.close(fd)
            assert _lines(m.log(), "reconnected") == 1, m.log()


def _make_exclusive(address: str, name: str, data: bytes) -> None:
    """Tcreate name with DMEXCL (no mount can ask for that bit) and write data to it."""
    import trio
    from py9pfuse.client import connect
    from py9pfuse.proto import DMEXCL, OWRITE
    from py9pfuse.proto import messages as msg

    async def run():
        async with connect(address) as c:
            s = c.session
            fid = await s.walk(s.root, [])
            try:
                await s.rpc(msg.Tcreate(fid.num, name, DMEXCL | 0o666, OWRITE))
                await s.rpc(msg.Twrite(fid.num, 0, data))
            finally:
                await s.clunk(fid)

    trio.run(run)


def test_an_exclusive_file_is_not_opened_again_after_a_restart():
    """An exclusive file's open may belong to another client by now: its handle gets
    EIO (and the log says why), while an ordinary file's handle reads on."""
    with bundled() as (srv, address):
        _make_exclusive(address, "excl", b"mine")
        with foreground(address, "reconnect=30", "cache=none") as m:
            ex = os.open(os.path.join(m.mnt, "excl"), os.O_RDONLY)
            rd = os.open(os.path.join(m.mnt, "README"), os.O_RDONLY)
            try:
                assert os.pread(ex, 4, 0) == b"mine"
                readme = os.pread(rd, 16, 0)
                srv.kill()
                srv.start()
                _make_exclusive(address, "excl", b"mine")  # the new server has it too
                assert os.pread(rd, 16, 0) == readme  # reconnected, opened again
                with pytest.raises(OSError) as e:
                    os.pread(ex, 4, 0)
                assert e.value.errno == E.EIO
                assert os.pread(rd, 16, 0) == readme
            finally:
                os.close(ex)
                os.close(rd)
            log = m.log()
            assert "exclusive file" in log and _lines(log, "reconnected") == 1, log
            assert "Traceback" not in log


def test_without_reconnect_a_dead_server_is_eio_within_the_bound_and_umount_works():
    with diod_server() as (srv, address, export):
        with open(os.path.join(export, "f"), "w") as f:
            f.write("x")
        with foreground(address, aname=export) as m:
            fd = os.open(os.path.join(m.mnt, "f"), os.O_RDONLY)
            srv.kill()
            t0 = time.monotonic()
            for op in (lambda: os.pread(fd, 1, 0), lambda: os.stat(os.path.join(m.mnt, "f")),
                       lambda: os.listdir(m.mnt)):
                with pytest.raises(OSError) as e:
                    op()
                assert e.value.errno == E.EIO
            assert time.monotonic() - t0 < 5
            os.close(fd)
            assert _lines(m.log(), "connection lost") == 1, m.log()
        assert not is_mounted(m.mnt)


def test_reconnect_gives_up_after_its_bound_while_the_server_stays_down():
    with diod_server() as (srv, address, export):
        with foreground(address, "reconnect=2", aname=export) as m:
            os.listdir(m.mnt)
            srv.kill()
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                os.stat(os.path.join(m.mnt, "nothing-cached"))
            assert e.value.errno == E.EIO
            assert 1.5 < time.monotonic() - t0 < 8
            srv.start()  # and when it is back, the mount works again
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    os.listdir(m.mnt)
                    break
                time.sleep(0.2)
            os.listdir(m.mnt)


def test_keepalive_notices_a_paused_server():
    with diod_server() as (srv, address, export):
        with foreground(address, "keepalive=1", aname=export) as m:
            os.listdir(m.mnt)
            srv.signal(signal.SIGSTOP)  # no FIN, no RST: only silence
            try:
                deadline = time.monotonic() + 8
                while "no reply from the server" not in m.log():
                    assert time.monotonic() < deadline, m.log()
                    time.sleep(0.1)
                t0 = time.monotonic()
                with pytest.raises(OSError) as e:
                    os.stat(os.path.join(m.mnt, "x"))
                assert e.value.errno == E.EIO and time.monotonic() - t0 < 2
            finally:
                srv.signal(signal.SIGCONT)
            assert _lines(m.log(), "connection lost") == 1, m.log()
