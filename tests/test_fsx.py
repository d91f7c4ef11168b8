"""Short runs of the fsx data-integrity test (tests/fsx.py) and of the load test
(tests/load.py), in-process, and the py9pfuse bugs they found, each as a small
reproducer (each failed before its fix). The long runs are the scripts themselves:
    python tests/fsx.py --ops 100000 --seed 1 --server diod
    python tests/load.py --procs 16 --seconds 300 --server diod
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

import fsx
import load
import mounts
import peers
from mounts import mounted, server

pytestmark = pytest.mark.peer


@contextlib.contextmanager
def skip_unavailable():
    """fsx.run and load.run start peers with peers.start: skip as start_or_skip would."""
    try:
        yield
    except peers.PeerUnavailable as e:
        if os.environ.get("PY9PFUSE_REQUIRE_PEERS") == "1":
            raise
        pytest.skip(f"peer {e}")


def fsx_run(name: str, **kw) -> fsx.Report:
    with skip_unavailable():
        rep = fsx.run(server=name, out=lambda s: None, **kw)
    print(rep.summary())
    return rep


# --- fsx

@pytest.mark.parametrize("name,seed", [("diod", 11), ("bundled", 12)])
def test_fsx_short_run(name, seed):
    """1500 random operations checked against the model; fids back at baseline after
    the kernel forgets; diod holds none of ours at unmount."""
    rep = fsx_run(name, ops=1500, seed=seed)
    assert rep.failures == [], rep.failures[0]
    assert rep.problems == []
    assert rep.ops == 1500
    end = rep.counts["after drop_caches"]
    assert end["fids"] <= rep.counts["baseline"]["fids"] + 2 and end["in_flight"] == 0
    if name == "diod":
        assert rep.unclunked == []


# --- the bugs fsx found, as small reproducers

@pytest.mark.parametrize("cache", ["auto", "none"])
@pytest.mark.parametrize("name", ["diod", "bundled"])
def test_read_after_ftruncate_grows_the_file(name, cache):
    """ReadAhead keeps the short first chunk it read at open (the old end of file), and
    setattr does not reset it: reads past the old length answer end of file."""
    with server(name) as (address, aname), mounted(address, f"cache={cache}",
                                                   aname=aname) as mnt:
        p = os.path.join(mnt, "f")
        with open(p, "wb") as f:
            f.write(b"a" * 3472)
        fd = os.open(p, os.O_RDWR)
        try:
            assert os.pread(fd, 100, 0) == b"a" * 100
            os.ftruncate(fd, 1 << 20)
            assert os.fstat(fd).st_size == 1 << 20
            got = os.pread(fd, 1000, 25369)
        finally:
            os.close(fd)
    assert got == bytes(1000)


@pytest.mark.parametrize("name", ["diod", "bundled"])
def test_reader_sees_another_fds_write(name):
    """A reader in order has chunks read ahead; a write through another fd does not drop
    them, so the reader gets the old bytes (direct I/O: no page cache to hide it)."""
    with server(name) as (address, aname), mounted(address, "cache=none",
                                                   aname=aname) as mnt:
        p = os.path.join(mnt, "f")
        with open(p, "wb") as f:
            f.write(b"a" * (1 << 20))
        r = os.open(p, os.O_RDONLY)
        try:
            for _ in range(4):
                os.read(r, 128 << 10)  # in order: py9pfuse reads ahead
            time.sleep(0.2)
            w = os.open(p, os.O_WRONLY)
            os.pwrite(w, b"b" * 65536, 640 << 10)
            os.close(w)
            got = os.pread(r, 65536, 640 << 10)
        finally:
            os.close(r)
    assert got == b"b" * 65536


def test_reader_sees_another_fds_append():
    """With the default page cache: the reader's read-ahead holds the old short last
    chunk; after another fd appends, the kernel's read of the new part gets a false end
    of file (and shrinks its idea of the size)."""
    with server("diod") as (address, aname), mounted(address, aname=aname) as mnt:
        p = os.path.join(mnt, "f")
        with open(p, "wb") as f:
            f.write(b"a" * 1000)
        r = os.open(p, os.O_RDONLY)
        try:
            assert os.read(r, 1 << 20) == b"a" * 1000
            a = os.open(p, os.O_WRONLY | os.O_APPEND)
            os.write(a, b"b" * 10000)
            os.close(a)
            got = os.pread(r, 5000, 1000)
        finally:
            os.close(r)
    assert got == b"b" * 5000


@pytest.mark.parametrize("cache", ["auto", "none"])
def test_large_append_lands_in_order(cache):
    """Tlopen passes O_APPEND on, so diod appends each Twrite at its end of file,
    whatever its offset; the Twrites of one 1 MiB write(2) are in flight together and
    land in arrival order (2 or 3 in 10 came out scrambled here)."""
    data = os.urandom(1 << 20)
    with server("diod") as (address, aname), mounted(address, f"cache={cache}",
                                                     aname=aname) as mnt:
        p = os.path.join(mnt, "f")
        for _ in range(50):
            with open(p, "wb") as f:
                f.write(b"x" * 100)
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            try:
                assert os.write(fd, data) == len(data)
            finally:
                os.close(fd)
            with open(p, "rb") as f:
                got = f.read()
            if got != b"x" * 100 + data:
                break
    assert got == b"x" * 100 + data


def test_sigusr1_as_soon_as_mounted():
    """mount.serve calls pyfuse3.init (the mount appears) before _on_signals installs the
    SIGUSR1 receiver: a SIGUSR1 in between kills the daemon (default action), and
    auto_unmount takes the mount away (6 of 10 tries here)."""
    deaths = 0
    with mounts.bundled_server() as addr:
        for _ in range(20):
            mnt = tempfile.mkdtemp(prefix="p9mnt-")
            proc = subprocess.Popen([*mounts.CMD, addr, mnt, "-f"], stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 20
                while not mounts.is_mounted(mnt) and time.monotonic() < deadline \
                        and proc.poll() is None:
                    pass  # no sleep: signal as soon as the mount shows
                proc.send_signal(signal.SIGUSR1)
                time.sleep(0.3)
                deaths += proc.poll() is not None
            finally:
                mounts.unmount(mnt)
                if proc.poll() is None:
                    proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                os.rmdir(mnt)
            if deaths:
                break
    assert deaths == 0


def test_a_new_file_with_a_reused_inode_number():
    """Another client removes a file the kernel knows and makes another; ext4 gives the
    new one the same inode number (qid.path), so py9pfuse serves it as the old inode with
    the old file's walked fid. Within one mount the same happens when a create wins the
    race against the kernel's FORGET of an unlinked file (load.py: 8 processes doing
    create/unlink/create/read saw ENOENT on a file just created 6 times in 2400)."""
    with skip_unavailable(), peers.start("diod") as peer, \
            mounted(peer.address, aname=peer.aname) as mnt:
        with open(os.path.join(mnt, "a"), "wb") as f:
            f.write(b"old file a\n")
        old = os.stat(os.path.join(mnt, "a")).st_ino
        os.unlink(os.path.join(peer.export, "a"))
        with open(os.path.join(peer.export, "b"), "wb") as f:
            f.write(b"new file b\n")
        if os.stat(os.path.join(mnt, "b")).st_ino != old:
            pytest.skip("the export's file system did not reuse the inode number")
        with open(os.path.join(mnt, "b"), "rb") as f:  # ENOENT
            assert f.read() == b"new file b\n"


@pytest.mark.parametrize("name", ["diod", "bundled"])
def test_a_listing_does_not_undo_a_write(name):
    """The listing is read at opendir; the file then grows; getdents hands the old size
    to the kernel, which takes it: stat shows 10 and a read returns 10 bytes."""
    with server(name) as (address, aname), mounted(address, aname=aname) as mnt:
        d = os.path.join(mnt, "d")
        os.mkdir(d)
        p = os.path.join(d, "f")
        with open(p, "wb") as f:
            f.write(b"a" * 10)
        os.stat(p)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)  # py9pfuse reads the listing now
        try:
            with open(p, "ab") as f:
                f.write(b"b" * 99990)
            assert os.stat(p).st_size == 100000
            assert sorted(e.name for e in os.scandir(dfd)) == ["f"]
        finally:
            os.close(dfd)
        size = os.stat(p).st_size
        with open(p, "rb") as f:
            n = len(f.read())
    assert (size, n) == (100000, 100000)


@pytest.mark.parametrize("name", ["diod", "bundled"])
def test_concurrent_opens_leak_no_fid(name):
    """A rename leaves the inode without a walked fid; 8 threads then open the file at
    once, and each walks one (31 fids leaked on diod, 53 on the bundled server, in 20
    rounds here; diod reports them unclunked when the connection closes)."""
    with skip_unavailable(), fsx.serving(name) as (address, aname, peer):
        with mounts.foreground(address, aname=aname) as fg:
            fsx.ready_for_counts(fg)
            base = fg.counts()
            for i in range(20):
                f, g = os.path.join(fg.mnt, f"f{i}"), os.path.join(fg.mnt, f"g{i}")
                with open(f, "wb") as fh:
                    fh.write(b"x")
                os.rename(f, g)
                barrier = threading.Barrier(8)

                def opener():
                    barrier.wait()
                    os.close(os.open(g, os.O_RDONLY))

                threads = [threading.Thread(target=opener) for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            end = fsx.settle(fg)
    assert end["fids"] == base["fids"], (base, end)


# --- load

def test_load_short_run():
    """16 processes for 15 s on diod: no error, and after the kernel forgets its inodes
    the fids are back near baseline, with nothing in flight (diod's export on the
    disk, which reuses inode numbers at once)."""
    with skip_unavailable():
        rep = load.run(16, 15, "diod", every=3, out=lambda s: None)
    print(rep.summary())
    assert rep.errors == 0, rep.error_lines
    assert rep.ops > 0 and len(rep.samples) >= 3
    base, end = rep.baseline.counts, rep.after_forget.counts
    assert end["fids"] <= base["fids"] + 50, (base, end)
    assert end["in_flight"] == 0 and end["handles"] == 0
    assert rep.unclunked == []
    assert rep.ok, rep.problems
