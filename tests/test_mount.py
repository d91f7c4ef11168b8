"""Real FUSE mounts of real servers, used from the shell, checked against a local directory."""

from __future__ import annotations

import ctypes
import re
import glob
import hashlib
import os
import shutil
import signal
import stat as S
import subprocess
import tempfile
import time

import pytest

import peers
from mounts import CMD, daemons, is_mounted, mounted, py9pfuse, server, unmount

pytestmark = pytest.mark.peer

SERVERS = ["diod", "ganesha", "py9p", "py9p-u", "bundled"]
# What a server cannot do (its source says so; see test_session_live.GAPS), and what a
# dialect cannot say: 9P2000 has no symbolic links.
GAPS = {
    "py9p": {"truncate", "mtime", "symlink"},
    "py9p-u": {"truncate", "mtime", "symlink"},
    "bundled": {"symlink"},
}

SCENARIO = r"""
set -e
echo hello > a.txt
echo more >> a.txt
cat a.txt > copy.txt
mkdir -p d1/d2
printf 'x%.0s' $(seq 5000) > d1/d2/big.txt
dd if="$SRC" of=d1/rand.bin bs=64k status=none
cp -r d1 d1copy
mv a.txt b.txt
mv copy.txt d1/copy.txt
tar cf "$TMP/t.tar" d1
mkdir untar
tar xf "$TMP/t.tar" -C untar
rm -r d1copy
chmod 600 b.txt
[ -n "$TRUNCATE" ] && truncate -s 3 d1/d2/big.txt
[ -n "$MTIME" ] && touch -d 2020-01-01T00:00:00 d1/copy.txt
[ -n "$SYMLINK" ] && ln -s b.txt link
ls -l > /dev/null
df . > /dev/null
find . | sort > "$TMP/find.txt"
echo done
"""


def snapshot(root: str) -> dict:
    """What the scenario made: type, size, content hash; mode and year where it set them."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if S.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif S.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("file", st.st_size, digest)
    out["b.txt mode"] = oct(os.stat(os.path.join(root, "b.txt")).st_mode & 0o777)
    copy = os.path.join(root, "d1/copy.txt")
    out["copy year"] = time.gmtime(os.stat(copy).st_mtime).tm_year
    return out


def run_scenario(root: str, tmp: str, src: str, gaps: set) -> str:
    env = dict(os.environ, SRC=src, TMP=tmp,
               TRUNCATE="" if "truncate" in gaps else "1",
               MTIME="" if "mtime" in gaps else "1",
               SYMLINK="" if "symlink" in gaps else "1")
    r = subprocess.run(["bash", "-c", SCENARIO], cwd=root, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    with open(os.path.join(tmp, "find.txt")) as f:
        return f.read()


@pytest.mark.parametrize("name", SERVERS)
def test_shell_scenario_matches_a_local_directory(name, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1 << 20) + b"tail")
    gaps = GAPS.get(name, set())
    local = tmp_path / "local"
    local.mkdir()
    (tmp_path / "lt").mkdir()
    (tmp_path / "mt").mkdir()
    want_find = run_scenario(str(local), str(tmp_path / "lt"), str(src), gaps)
    want = snapshot(str(local))
    with server(name) as (address, aname), mounted(address, aname=aname) as mnt:
        work = os.path.join(mnt, "work")  # apart from the bundled server's blocking files
        os.mkdir(work)
        got_find = run_scenario(work, str(tmp_path / "mt"), str(src), gaps)
        got = snapshot(work)
    assert got_find == want_find
    assert got == want


@pytest.mark.parametrize("name", ["diod", "bundled"])
def test_ten_thousand_entries_with_a_small_getdents_buffer(name, tmp_path):
    names = {f"f{i:05d}" for i in range(10_000)}
    with server(name) as (address, aname), mounted(address, aname=aname) as mnt:
        d = os.path.join(mnt, "big")
        os.mkdir(d)
        for n in names:
            os.close(os.open(os.path.join(d, n), os.O_CREAT | os.O_WRONLY, 0o644))
        seen = getdents_names(d, 1024)
    assert sorted(seen) == sorted(names | {".", ".."})  # each exactly once


def getdents_names(path: str, bufsize: int) -> list[str]:
    """Names read with raw getdents64 calls of bufsize bytes (glibc would use 32 KiB)."""
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_getdents64 = 217  # x86_64
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    buf = ctypes.create_string_buffer(bufsize)
    out = []
    try:
        while True:
            n = libc.syscall(SYS_getdents64, fd, buf, bufsize)
            if n < 0:
                raise OSError(ctypes.get_errno(), "getdents64")
            if n == 0:
                return out
            pos = 0
            while pos < n:
                reclen = int.from_bytes(buf.raw[pos + 16 : pos + 18], "little")
                name = buf.raw[pos + 19 : pos + reclen].split(b"\0", 1)[0]
                out.append(os.fsdecode(name))
                pos += reclen
    finally:
        os.close(fd)


def test_synthetic_files_keep_9p_meaning():
    with server("bundled") as (address, _), mounted(address) as mnt:
        assert os.stat(os.path.join(mnt, "time")).st_size == 0
        with open(os.path.join(mnt, "time"), "rb") as f:
            assert f.read().endswith(b"\n")  # length 0, yet it has data
        reader = subprocess.Popen(["head", "-n", "2", os.path.join(mnt, "events")],
                                  stdout=subprocess.PIPE)
        time.sleep(0.3)
        with open(os.path.join(mnt, "ctl"), "wb", buffering=0) as ctl:
            ctl.write(b"first\n")  # one write(2), one Twrite, one event
            ctl.write(b"second\n")
        out, _ = reader.communicate(timeout=10)
        assert out == b"first\nsecond\n"
        # each write(2) is one Twrite, and each read of a synthetic file one Tread: the
        # server hands back every write whole, one per read
        fd = os.open(os.path.join(mnt, "events"), os.O_RDONLY)
        try:
            with open(os.path.join(mnt, "ctl"), "wb", buffering=0) as ctl:
                for word in (b"one", b"two", b"x" * 5000):
                    ctl.write(word)
            assert [os.read(fd, 65536) for _ in range(3)] == [b"one", b"two", b"x" * 5000]
        finally:
            os.close(fd)


@pytest.mark.parametrize("name", ["bundled", "diod"])
def test_errors_map_to_the_right_errno(name):
    import errno as E
    with server(name) as (address, aname), mounted(address, aname=aname) as mnt:
        w = os.path.join(mnt, "errs")
        os.mkdir(w)
        os.mkdir(os.path.join(w, "d"))
        open(os.path.join(w, "d", "f"), "w").close()
        cases = [
            (E.ENOENT, lambda: open(os.path.join(w, "missing"))),
            (E.EEXIST, lambda: os.mkdir(os.path.join(w, "d"))),
            (E.ENOTEMPTY, lambda: os.rmdir(os.path.join(w, "d"))),
            (E.ENOTDIR, lambda: os.listdir(os.path.join(w, "d", "f"))),
            (E.EEXIST, lambda: os.open(os.path.join(w, "d", "f"), os.O_CREAT | os.O_EXCL)),
        ]
        if name == "bundled":  # 9P2000: no moves across directories, no symlinks
            cases += [(E.EXDEV, lambda: os.rename(os.path.join(w, "d", "f"),
                                                 os.path.join(w, "f"))),
                      (E.EOPNOTSUPP, lambda: os.symlink("d", os.path.join(w, "l")))]
        for want, op in cases:
            with pytest.raises(OSError) as e:
                op()
            assert e.value.errno == want, (want, e.value)


def test_page_cache_is_dropped_when_the_file_changes():
    with peers.start_or_skip("diod") as peer, mounted(peer.address, aname=peer.aname,
                                                       ) as mnt:
        local, remote = os.path.join(peer.export, "c"), os.path.join(mnt, "c")
        with open(local, "wb") as f:
            f.write(b"first version\n")
        with open(remote, "rb") as f:
            assert f.read() == b"first version\n"  # now in the page cache
        time.sleep(0.05)
        with open(local, "wb") as f:  # another client changes it: new mtime and length
            f.write(b"second, longer version\n")
        time.sleep(1.2)  # attr_timeout
        with open(remote, "rb") as f:
            assert f.read() == b"second, longer version\n"


def test_attributes_after_setattr_are_the_servers():
    """chmod, chown and utime answer without a Tgetattr, so what the server did on its
    own must still show at the next stat: root's chown drops the setuid bit on the
    server, and ctime is the server's. Tar's owner, mode and times come through."""
    with peers.start_or_skip("diod") as peer, mounted(peer.address, aname=peer.aname,
                                                       ) as mnt:
        local, remote = os.path.join(peer.export, "s"), os.path.join(mnt, "s")
        with open(remote, "w") as f:
            f.write("x")
        os.chmod(remote, 0o4755)
        assert S.S_IMODE(os.stat(remote).st_mode) == 0o4755
        os.chown(remote, 0, 0)  # Linux drops S_ISUID on chown, even root's
        assert S.S_IMODE(os.stat(local).st_mode) == 0o755
        assert S.S_IMODE(os.stat(remote).st_mode) == 0o755
        os.utime(remote, ns=(1_000_000_123, 2_000_000_456))
        st, lst = os.stat(remote), os.stat(local)
        assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
        assert st.st_ctime_ns == lst.st_ctime_ns
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src")
            os.mkdir(src)
            for i, mode in enumerate((0o600, 0o644, 0o755, 0o2755)):
                with open(os.path.join(src, f"f{i}"), "w") as f:
                    f.write("y" * (i * 5000))
                os.chmod(os.path.join(src, f"f{i}"), mode)
                os.utime(os.path.join(src, f"f{i}"), (1_500_000_000 + i, 1_600_000_000 + i))
            subprocess.run(["tar", "cf", os.path.join(tmp, "t.tar"), "-C", src, "."],
                           check=True)
            subprocess.run(["tar", "xf", os.path.join(tmp, "t.tar"), "-C", mnt], check=True)
            for i, mode in enumerate((0o600, 0o644, 0o755, 0o2755)):
                want = os.stat(os.path.join(src, f"f{i}"))
                for got in (os.stat(os.path.join(mnt, f"f{i}")),
                            os.stat(os.path.join(peer.export, f"f{i}"))):
                    assert (S.S_IMODE(got.st_mode), got.st_mtime, got.st_size) == \
                        (mode, want.st_mtime, want.st_size)


@pytest.mark.parametrize("cache", ["auto", "none"])
def test_a_file_another_client_appends_to_shows_its_growth(cache):
    """tail -f: a reader at the end of a file sees what another client appends, on the
    same descriptor (the end of file once read ahead was kept and answered forever).
    And a read again of what was read asks the server again under cache=none."""
    with peers.start_or_skip("diod") as peer, mounted(peer.address, f"cache={cache}",
                                                       aname=peer.aname) as mnt:
        local = os.path.join(peer.export, "log")
        with open(local, "w") as f:
            f.write("line 1\n")
        fd = os.open(os.path.join(mnt, "log"), os.O_RDONLY)
        try:
            assert os.read(fd, 1 << 16) == b"line 1\n"
            assert os.read(fd, 1 << 16) == b""
            for n in (2, 3):
                with open(local, "a") as f:
                    f.write(f"line {n}\n")
                time.sleep(1.2)  # attr_timeout: the kernel asks for the new length
                assert os.read(fd, 1 << 16) == f"line {n}\n".encode()
                assert os.read(fd, 1 << 16) == b""
            if cache == "none":
                with open(local, "r+") as f:
                    f.write("LINE")
                assert os.pread(fd, 6, 0) == b"LINE 1"
        finally:
            os.close(fd)


def test_xattrs_through_the_mount():
    with peers.start_or_skip("diod") as peer, mounted(peer.address, aname=peer.aname) as mnt:
        path = os.path.join(mnt, "x")
        open(path, "w").close()
        os.setxattr(path, "user.colour", b"blue")
        assert os.getxattr(path, "user.colour") == b"blue"
        assert "user.colour" in os.listxattr(path)
        os.removexattr(path, "user.colour")
        assert "user.colour" not in os.listxattr(path)


def test_blocking_read_blocks_only_its_caller():
    with server("bundled") as (address, _), mounted(address) as mnt:
        reader = subprocess.Popen(["head", "-n", "1", os.path.join(mnt, "events")],
                                  stdout=subprocess.PIPE)
        try:
            time.sleep(0.3)
            t = time.monotonic()
            assert sorted(os.listdir(mnt))[:2] == ["README", "ctl"]
            with open(os.path.join(mnt, "hello.txt"), "rb") as f:
                assert f.read() == b"hello, 9P\n"
            assert time.monotonic() - t < 2
        finally:
            with open(os.path.join(mnt, "ctl"), "wb") as ctl:
                ctl.write(b"bye\n")
            reader.communicate(timeout=10)


def test_options_before_and_after_and_from_mount8():
    with server("bundled") as (address, _):
        mnt = os.path.realpath(py9pfuse_tmp())
        try:
            r = py9pfuse("-o", "attr_timeout=0,ro", address, mnt,
                         "-o", "nosuid,nodev,relatime,_netdev,noauto,user,x-systemd.foo,rw")
            assert r.returncode == 0, r.stderr
            assert is_mounted(mnt)
            with open("/proc/mounts") as f:
                line = next(ln for ln in f if ln.split()[1] == mnt)
            assert line.split()[0] == address and line.split()[2] == "fuse.py9pfuse"
        finally:
            unmount(mnt)
            os.rmdir(mnt)


def py9pfuse_tmp() -> str:
    return tempfile.mkdtemp(prefix="p9mnt-")


@pytest.mark.parametrize("args,says", [
    (["tcp!127.0.0.1!1", "MNT"], "py9pfuse: tcp!127.0.0.1!1: connection refused"),
    (["tcp!bad!!", "MNT"], "py9pfuse: tcp!bad!!: expected tcp!host!port"),
    (["tcp!127.0.0.1!1", "MNT", "-o", "frobnicate"], "py9pfuse: unknown option 'frobnicate'"),
    (["tcp!127.0.0.1!1", "MNT", "-o", "cache=sometimes"], "py9pfuse: cache: expected one of"),
    (["tcp!127.0.0.1!1", "/nonexistent/mnt"], "py9pfuse: /nonexistent/mnt: mount point does not"),
])
def test_bad_input_is_one_line_and_no_mount(args, says, tmp_path):
    mnt = str(tmp_path / "m")
    os.mkdir(mnt)
    r = py9pfuse(*[mnt if a == "MNT" else a for a in args])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(says), r.stderr
    assert not is_mounted(mnt)


def test_refused_attach_is_one_line_and_no_mount(tmp_path):
    mnt = str(tmp_path / "m")
    os.mkdir(mnt)
    with server("diod") as (address, _):
        r = py9pfuse(address, mnt, "-o", "aname=/not/exported")
    assert r.returncode == 1 and not is_mounted(mnt)
    assert r.stderr.strip() == (f"py9pfuse: {address}: attach to '/not/exported' refused:"
                                " Operation not permitted")


def test_server_going_away_gives_eio_and_unmount_works():
    with peers.start_or_skip("diod") as peer, mounted(peer.address, aname=peer.aname) as mnt:
        with open(os.path.join(mnt, "f"), "w") as f:
            f.write("x")
        os.killpg(peer.proc.pid, signal.SIGKILL)
        time.sleep(1.2)  # past attr_timeout: the kernel asks again
        t = time.monotonic()
        with pytest.raises(OSError) as e:
            os.listdir(mnt)
        assert e.value.errno == 5 and time.monotonic() - t < 5
        r = subprocess.run(["umount", mnt], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)


def test_sigterm_unmounts_cleanly():
    with server("bundled") as (address, _), mounted(address) as mnt:
        (pid,) = daemons(mnt)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_mounted(mnt)  # and no "Transport endpoint is not connected" left
        os.listdir(mnt)


def test_a_killed_daemon_leaves_no_dead_mount():
    with server("bundled") as (address, _), mounted(address) as mnt:
        (pid,) = daemons(mnt)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_mounted(mnt)
        os.listdir(mnt)  # not ENOTCONN


def test_foreground_with_trace(tmp_path):
    mnt = str(tmp_path / "m")
    os.mkdir(mnt)
    with server("bundled") as (address, _):
        proc = subprocess.Popen([*CMD, address, mnt, "-f", "-D"],
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10
            while not is_mounted(mnt) and time.monotonic() < deadline:
                time.sleep(0.05)
            os.listdir(mnt)
        finally:
            unmount(mnt)
        err = proc.communicate(timeout=10)[1]
    assert proc.returncode == 0
    assert "<-0- Tversion tag 65535" in err and "Rread tag" in err


def test_fstab_lines_mount_with_mount8(tmp_path):
    helper = shutil.which("py9pfuse", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")
    if helper is None:
        pytest.fail("py9pfuse is not on mount(8)'s PATH: run make install")
    with server("bundled") as (address, _):
        for kind in ("fuse.py9pfuse", "legacy"):
            mnt = str(tmp_path / kind)
            os.mkdir(mnt)
            fstab = tmp_path / f"fstab.{kind}"
            if kind == "legacy":
                fstab.write_text(f"py9pfuse#{address} {mnt} fuse _netdev,attr_timeout=2 0 0\n")
            else:
                fstab.write_text(f"{address} {mnt} fuse.py9pfuse _netdev,noauto 0 0\n")
            try:
                r = subprocess.run(["mount", "-T", str(fstab), mnt], capture_output=True,
                                   text=True, timeout=60)
                assert r.returncode == 0, r.stderr
                assert "hello.txt" in os.listdir(mnt)
                r = subprocess.run(["umount", mnt], capture_output=True, text=True)
                assert r.returncode == 0 and not is_mounted(mnt), r.stderr
            finally:
                unmount(mnt)


def test_demo_mounts_the_bundled_server_and_cleans_up(tmp_path):
    mnt = str(tmp_path / "demo")  # made by the demo itself
    sockdirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "py9pfuse-demo-*")))
    r = py9pfuse("demo", mnt)
    try:
        assert r.returncode == 0, r.stderr
        assert f"mounted on {mnt}" in r.stdout and "fusermount3 -u" in r.stdout
        assert {"README", "hello.txt", "time", "ctl", "events"} <= set(os.listdir(mnt))
        with open(os.path.join(mnt, "time"), "rb") as f:
            assert f.read()
        assert len(daemons(mnt)) == 1
    finally:
        unmount(mnt)
    assert not is_mounted(mnt) and not daemons(mnt)
    # the server's private socket directory went with it
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "py9pfuse-demo-*"))) == sockdirs


def test_reads_in_any_order_return_the_right_bytes():
    """Read-ahead serves readers in order; seeks, interleaved readers and writes in
    between must still see exactly the file's bytes."""
    import random
    with peers.start_or_skip("diod") as peer, mounted(peer.address, aname=peer.aname,
                                                       ) as mnt:
        data = os.urandom(3 << 20)
        with open(os.path.join(peer.export, "r.bin"), "wb") as f:
            f.write(data)
        rng = random.Random(7)
        path = os.path.join(mnt, "r.bin")
        with open(path, "rb", buffering=0) as a, open(path, "rb", buffering=0) as b:
            assert a.read() == data  # in order, all of it
            for _ in range(200):
                f = rng.choice((a, b))
                off, n = rng.randrange(len(data)), rng.choice((1, 4096, 70000, 1 << 20))
                f.seek(off)
                assert f.read(n) == data[off : off + n]
        with open(path, "r+b", buffering=0) as f:
            f.read(1 << 20)
            f.seek(2 << 20)
            f.write(b"new bytes")
            f.seek(2 << 20)
            assert f.read(9) == b"new bytes"


# --- a read that blocks on the server stops when its caller gives up (pyfuse3 delivers
# no FUSE_INTERRUPT: py9pfuse notices the pending signal itself and flushes the read)


@pytest.mark.parametrize("how", ["timeout -s INT 1 cat {f}", "timeout -s TERM 1 cat {f}",
                                 "exec 3<{f}; timeout -s INT 1 cat <&3"])
def test_a_signal_ends_a_blocked_read(how):
    with server("bundled") as (address, _), mounted(address) as mnt:
        events = os.path.join(mnt, "events")
        t = time.monotonic()
        r = subprocess.run(["bash", "-c", how.format(f=events)], capture_output=True,
                           timeout=30)
        assert time.monotonic() - t < 2.5 and r.returncode in (124, 130, 143), r
        # nothing was lost: the flushed read took no event; the mount goes on
        with open(os.path.join(mnt, "ctl"), "wb") as ctl:
            ctl.write(b"after")
        fd = os.open(events, os.O_RDONLY)
        try:
            assert os.read(fd, 100) == b"after"
        finally:
            os.close(fd)


def test_a_killed_reader_is_gone_and_the_server_saw_tflush(tmp_path):
    mnt = str(tmp_path / "m")
    os.mkdir(mnt)
    with server("bundled") as (address, _):
        daemon = subprocess.Popen([*CMD, address, mnt, "-f", "-D"], stderr=subprocess.PIPE,
                                  text=True)
        try:
            deadline = time.monotonic() + 10
            while not is_mounted(mnt) and time.monotonic() < deadline:
                time.sleep(0.05)
            reader = subprocess.Popen(["cat", os.path.join(mnt, "events")])
            time.sleep(0.7)
            reader.kill()
            t = time.monotonic()
            reader.wait(timeout=5)
            assert time.monotonic() - t < 2
            assert sorted(os.listdir(mnt))[0] == "README"  # other operations go on
        finally:
            unmount(mnt)
        err = daemon.communicate(timeout=10)[1]
    assert re.search(r"<-0- Tflush tag \d+ oldtag \d+", err), err[-1000:]
    assert re.search(r"-0-> Rflush tag \d+", err)
