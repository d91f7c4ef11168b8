"""Real 9P servers by other projects, started as processes on loopback for tests.

A client tested only against its own server proves little, so tests talk to diod,
nfs-ganesha, py9p (from PyPI p9fs) and aio9p. See shared/peers.md for their quirks.
Rules kept here: nothing listens beyond 127.0.0.1 or a unix socket; every server runs
in its own session (process group) and temp dir, and both are removed on exit, even
when startup fails. Standard library only (pytest is imported lazily by start_or_skip).
"""
from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

PEER_NAMES = ("diod", "ganesha", "py9p", "py9p-u", "aio9p", "aio9p-u")
DIALECTS = {"diod": "9P2000.L", "ganesha": "9P2000.L", "py9p": "9P2000",
            "py9p-u": "9P2000.u", "aio9p": "9P2000", "aio9p-u": "9P2000.u"}
# msize each answers to a 1 MiB Tversion (checked by hand; informational).
MSIZES = {"diod": 65536, "ganesha": 65536, "py9p": 8192, "py9p-u": 8192,
          "aio9p": 65535, "aio9p-u": 65535}
READY_TIMEOUT = 15.0   # all were ready within 0.2 s here; slow CI gets slack
STOP_TIMEOUT = 10.0    # ganesha needs ~4 s after SIGTERM; SIGKILL after this
GANESHA_PORT = 5642    # inside its private network namespace, so never collides
TVERSION, RVERSION = 100, 101


class PeerUnavailable(Exception):
    """The server program (or the peers virtualenv) is not installed here."""
    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class PeerFailed(Exception):
    """The server started but never answered a Tversion in time (message has its log tail)."""


class VersionRefused(Exception):
    """The server answered Tversion with Rerror/Rlerror: .type and raw .body."""
    def __init__(self, type_: int, body: bytes):
        super().__init__(f"Tversion refused: type {type_}, body {body!r}")
        self.type, self.body = type_, body


@dataclass
class Peer:
    name: str
    dialect: str
    address: str            # "tcp!127.0.0.1!PORT" or "unix!/path"
    aname: str
    export: str | None
    msize: int
    proc: subprocess.Popen = field(repr=False)
    log_path: str

    def connect(self) -> socket.socket:
        kind, _, rest = self.address.partition("!")
        if kind == "unix":
            sock, target = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), rest
        elif kind == "tcp":
            host, _, port = rest.rpartition("!")
            sock, target = socket.socket(socket.AF_INET, socket.SOCK_STREAM), (host, int(port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            raise ValueError(f"unsupported dial string {self.address!r}")
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def peers_python() -> str:
    """Interpreter of the separate venv holding p9fs (py9p) and aio9p."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("PY9PFUSE_PEERS_PYTHON") or os.path.join(repo, ".venv-peers", "bin", "python")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    return buf


def handshake(sock: socket.socket, dialect: str, msize: int = 65536,
              timeout: float = 5.0) -> tuple[int, str]:
    """Raw Tversion/Rversion for readiness checks; returns the server's (msize, version).
    Raises VersionRefused on Rerror/Rlerror, ConnectionError on EOF, TimeoutError."""
    ver = dialect.encode()
    body = struct.pack("<BHIH", TVERSION, 0xFFFF, msize, len(ver)) + ver
    old = sock.gettimeout()
    sock.settimeout(timeout)  # some servers never answer a dialect they dislike
    try:
        sock.sendall(struct.pack("<I", 4 + len(body)) + body)
        size, = struct.unpack("<I", _recv_exact(sock, 4))
        if not 7 <= size <= 1 << 20:
            raise ConnectionError(f"bad reply size {size}")
        reply = _recv_exact(sock, size - 4)
    finally:
        sock.settimeout(old)
    if reply[0] != RVERSION:  # 107 Rerror or 7 Rlerror (the tag is not checked)
        raise VersionRefused(reply[0], reply[3:])
    rmsize, vlen = struct.unpack_from("<IH", reply, 3)
    return rmsize, reply[9:9 + vlen].decode("utf-8", "replace")


def _free_port() -> int:
    # Racy by nature (the port is released before the server binds): start() retries.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.lru_cache(maxsize=None)
def _unavailable(name: str, py: str) -> str | None:
    """Why the named peer cannot run here (py: the peers Python), or None. Cached."""
    if name == "diod":
        need = ["diod"]
    elif name == "ganesha":
        need = ["ganesha.nfsd", "socat", "unshare", "ip", "bash"]
        if os.geteuid() != 0:  # unshare -n and ganesha's setup want root
            return "needs root for a private network namespace"
        if not any(os.path.exists(f"/usr/lib/{d}/ganesha/libfsalvfs.so")
                   for d in ("x86_64-linux-gnu", "aarch64-linux-gnu", "")):
            return "FSAL VFS missing (apt-get install nfs-ganesha-vfs)"
    else:
        if not os.access(py, os.X_OK):
            return f"no peers venv at {py} (python3 -m venv .venv-peers && .venv-peers/bin/pip install p9fs aio9p)"
        mod = "py9p.py9p" if name.startswith("py9p") else "aio9p.example.simple_u"
        r = subprocess.run([py, "-c", f"import {mod}"], capture_output=True, text=True)
        return f"{py} cannot import {mod}: {r.stderr.strip()[-300:]}" if r.returncode else None
    missing = [p for p in need if not shutil.which(p)]
    return f"not installed: {' '.join(missing)}" if missing else None


def _command(name: str, tmp: str, kw: dict) -> tuple[list[str], str, str, str | None]:
    """argv, address, aname, export for one launch attempt inside tmp."""
    extra = list(kw.get("args", ()))
    export = os.path.join(tmp, "export")
    if name == "diod":
        port = _free_port()
        argv = ["diod", "-f", "-c", "/dev/null", "-l", f"127.0.0.1:{port}",
                "-e", export, "-L", "stderr"] + ([] if kw.get("auth") else ["-n"]) + extra
        return argv, f"tcp!127.0.0.1!{port}", export, export
    if name == "ganesha":
        q = {k: shlex.quote(os.path.join(tmp, k)) for k in ("ganesha.conf", "ganesha.pid", "ganesha.sock")}
        with open(os.path.join(tmp, "ganesha.conf"), "w") as f:
            f.write(f"""NFS_CORE_PARAM {{ Protocols = 9P; Enable_NLM = false; Enable_RQUOTA = false; }}
_9P {{ _9P_TCP_Port = {GANESHA_PORT}; Nb_Worker = 4; }}
EXPORT {{ Export_Id = 1; Path = "{export}"; Pseudo = "{export}"; Tag = gexport;
         Protocols = 9P; Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
         FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = EVENT; }}
""")
        # ganesha binds every interface, so it lives in a namespace with only lo;
        # socat (same namespace, same process group) bridges our unix socket to it.
        # bash stays their parent and reaps them, so stop() can wait for a full exit
        # (ganesha takes ~4 s) and no orphan is left to init; if ganesha dies, so does all.
        script = (f"ip link set lo up || exit 1\n"
                  f"ganesha.nfsd -F -L STDERR -f {q['ganesha.conf']} -p {q['ganesha.pid']} {shlex.join(extra)} & g=$!\n"
                  f"socat UNIX-LISTEN:{q['ganesha.sock']},fork TCP:127.0.0.1:{GANESHA_PORT} & s=$!\n"
                  "trap 'kill -TERM $g $s 2>/dev/null' TERM\n"
                  "wait $g; kill -TERM $s 2>/dev/null; wait\n")
        return (["unshare", "-n", "bash", "-c", script], f"unix!{os.path.join(tmp, 'ganesha.sock')}",
                export, export)
    if name.startswith("py9p"):
        port = _free_port()
        argv = [peers_python(), "-m", "py9p", "-p", str(port), "-a", "127.0.0.1",
                "-r", export, "-w"] + (["-D"] if name == "py9p-u" else []) + extra
        return argv, f"tcp!127.0.0.1!{port}", "", export
    # aio9p example servers: in-memory tree, listen on ./py9p.sock (cwd = tmp)
    mod = "aio9p.example.simple_u" if name == "aio9p-u" else "aio9p.example.simple"
    return [peers_python(), "-m", mod] + extra, f"unix!{os.path.join(tmp, 'py9p.sock')}", "", None


def _state(stat_path: str) -> list[str]:
    """The fields of a /proc stat file after the command name: state, ppid, pgrp, ..."""
    with open(stat_path) as f:
        return f.read().rpartition(")")[2].split()


def _group_members(pgid: int):
    """(pid, state) of every process in the group, as /proc shows them now."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                state, _ppid, pgrp = _state(f"/proc/{pid}/stat")[:3]
            except OSError:
                continue
            if int(pgrp) == pgid:
                yield pid, state


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group? (reparented children are not ours to wait for)"""
    return any(state != "Z" for _pid, state in _group_members(pgid))


def pause(pgid: int, timeout: float = 5.0) -> None:
    """SIGSTOP a process group and return only once every thread of it has stopped.
    kill(2) returns before that: the group stop spreads from the first thread woken,
    and on a loaded machine another thread may still read and answer a request meanwhile."""
    os.killpg(pgid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for pid, _ in _group_members(pgid):
            with contextlib.suppress(OSError):  # the process or thread is gone
                running += [tid for tid in os.listdir(f"/proc/{pid}/task")
                            if _state(f"/proc/{pid}/task/{tid}/stat")[0] not in "TtZX"]
        if not running:
            return
        assert time.monotonic() < deadline, f"threads {running} of group {pgid} did not stop"
        time.sleep(0.01)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole group, wait until every member is gone, SIGKILL if slow."""
    for sig, limit in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)
    proc.wait(timeout=5)


def _wait_ready(peer: Peer) -> str | None:
    """Poll until a Tversion gets an Rversion; None when ready, else why not.
    A real handshake, because socat accepts before ganesha listens."""
    deadline = time.monotonic() + READY_TIMEOUT
    why = "no answer"
    while time.monotonic() < deadline:
        if peer.proc.poll() is not None:
            return f"exited with code {peer.proc.returncode}"
        try:
            with peer.connect() as sock:
                handshake(sock, peer.dialect, timeout=2.0)
                return None
        except (OSError, VersionRefused) as e:  # TimeoutError, ConnectionError are OSErrors
            why = repr(e)
        time.sleep(0.05)
    return f"not ready after {READY_TIMEOUT:.0f} s ({why})"


@contextlib.contextmanager
def start(name: str, workdir: str | None = None, **kw) -> Iterator[Peer]:
    """Start the named peer in a fresh temp dir and yield it; stop it and remove the dir on exit.
    kw: args=[...] extra command-line arguments; auth=True (diod: require MUNGE, see munged());
    keep=True leaves the temp dir (with the log) in place."""
    if name not in PEER_NAMES:
        raise ValueError(f"unknown peer {name!r}; known: {PEER_NAMES}")
    unknown = set(kw) - {"args", "auth", "keep"}
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    why = _unavailable(name, peers_python())
    if why:
        raise PeerUnavailable(name, why)
    tmp = tempfile.mkdtemp(prefix=f"p9{name}-", dir=workdir)
    proc = None
    try:
        if len(os.path.join(tmp, "ganesha.sock")) >= 108:  # sun_path limit
            raise ValueError(f"workdir too long for a unix socket path: {tmp}")
        os.mkdir(os.path.join(tmp, "export"))
        log_path = os.path.join(tmp, "server.log")
        for attempt in range(3):  # a retry only for a TCP port taken in the meantime
            argv, address, aname, export = _command(name, tmp, kw)
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with open(log_path, "ab") as logf:  # append: bash, socat and ganesha share it
                proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                        stdout=logf, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            peer = Peer(name, DIALECTS[name], address, aname, export, MSIZES[name], proc, log_path)
            why = _wait_ready(peer)
            if why is None:
                break
            _stop(proc)
            if "already in use" not in peer.log() or attempt == 2:
                tail = "\n".join(peer.log().splitlines()[-40:])
                raise PeerFailed(f"{name} ({' '.join(argv)}): {why}; log tail:\n{tail}")
        yield peer
    finally:
        if proc is not None:
            _stop(proc)
        if not kw.get("keep"):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def start_or_skip(name: str, **kw) -> Iterator[Peer]:
    """start() for tests: PeerUnavailable skips, or fails if PY9PFUSE_REQUIRE_PEERS=1."""
    stack = contextlib.ExitStack()
    try:
        peer = stack.enter_context(start(name, **kw))
    except PeerUnavailable as e:
        if os.environ.get("PY9PFUSE_REQUIRE_PEERS") == "1":
            raise
        import pytest
        pytest.skip(f"peer {e}")
    with stack:
        yield peer


MUNGE_SOCKET = "/run/munge/munge.socket.2"  # libmunge's default, which diod uses


def _munge_works() -> bool:
    r = subprocess.run(["munge", "-n"], stdin=subprocess.DEVNULL, capture_output=True)
    return r.returncode == 0


@contextlib.contextmanager
def munged() -> Iterator[None]:
    """Ensure munged serves the default socket (diod auth=True needs it): reuse a running
    one, else run one as user munge in the foreground and stop it on exit."""
    if not (shutil.which("munged") and shutil.which("munge")):
        raise PeerUnavailable("munged", "not installed (apt-get install munge)")
    if _munge_works():
        yield
        return
    if os.geteuid() != 0:
        raise PeerUnavailable("munged", "not running, and starting it needs root")
    os.makedirs(os.path.dirname(MUNGE_SOCKET), exist_ok=True)
    shutil.chown(os.path.dirname(MUNGE_SOCKET), "munge", "munge")
    out = tempfile.TemporaryFile()  # a file, not a pipe nobody drains
    proc = subprocess.Popen(["munged", "-F"], user="munge", group="munge", extra_groups=[],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _munge_works():
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                out.seek(0)
                raise PeerFailed(f"munged did not start: {out.read().decode(errors='replace')}")
            time.sleep(0.1)
        yield
    finally:
        _stop(proc)
        out.close()
