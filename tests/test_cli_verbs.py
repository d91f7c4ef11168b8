"""py9pfuse ls/read/write/stat, run as a user runs them, against real servers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from peers import start_or_skip

pytestmark = pytest.mark.peer


def py9pfuse(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "py9pfuse", *args], input=input,
                          capture_output=True, timeout=120)


@pytest.fixture(scope="module", params=["diod", "py9p"])
def peer(request):
    with start_or_skip(request.param) as peer:
        yield peer


def opts(peer) -> list[str]:
    return ["-o", f"aname={peer.aname}"] if peer.aname else []


def test_write_then_read_a_megabyte(peer):
    data = os.urandom(1 << 20)
    r = py9pfuse("write", *opts(peer), peer.address, "/big", input=data)
    assert r.returncode == 0, r.stderr
    r = py9pfuse("read", peer.address, "/big", *opts(peer))  # options after the arguments
    assert r.returncode == 0 and r.stdout == data


def test_write_truncates_an_existing_file(peer):
    assert py9pfuse("write", *opts(peer), peer.address, "/t", input=b"long text\n").returncode == 0
    assert py9pfuse("write", *opts(peer), peer.address, "/t", input=b"short\n").returncode == 0
    assert py9pfuse("read", *opts(peer), peer.address, "/t").stdout == b"short\n"


def test_ls_and_stat(peer):
    py9pfuse("write", *opts(peer), peer.address, "/listed.txt", input=b"12345")
    r = py9pfuse("ls", *opts(peer), peer.address, "/")
    assert r.returncode == 0 and b"listed.txt\n" in r.stdout
    r = py9pfuse("ls", "-l", *opts(peer), peer.address, "/")
    line = next(ln for ln in r.stdout.decode().splitlines() if ln.endswith(" listed.txt"))
    assert line.startswith("-rw") and " 5 " in line
    r = py9pfuse("stat", *opts(peer), peer.address, "/listed.txt")
    assert r.returncode == 0 and "size 5\n" in r.stdout.decode()
    r = py9pfuse("ls", *opts(peer), peer.address, "/listed.txt")
    assert r.stdout == b"listed.txt\n"


def test_missing_file_is_one_line(peer):
    r = py9pfuse("read", *opts(peer), peer.address, "/no/such/file")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 1 and len(err) == 1 and r.stdout == b""
    assert err[0].startswith(f"py9pfuse: {peer.address}: /no/such/file: ")


def test_trace_shows_every_message(peer):
    r = py9pfuse("ls", "-D", *opts(peer), peer.address, "/")
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 0
    assert lines[0].startswith("<-0- Tversion tag 65535 msize 1048576 version '9P2000.L'")
    assert any(ln.startswith("<-0- Tattach tag ") for ln in lines)
    assert any(ln.startswith("-0-> Rattach tag ") for ln in lines)
    assert any(ln.startswith("<-0- Tclunk tag ") for ln in lines)


@pytest.mark.parametrize("args,says", [
    (["ls", "-o", "bogus=1", "tcp!127.0.0.1!1"], "py9pfuse: unknown option 'bogus'"),
    (["ls", "-o", "msize=lots", "tcp!127.0.0.1!1"], "py9pfuse: msize=lots: expected a number"),
    (["ls", "-o", "version=9P1", "tcp!127.0.0.1!1"], "py9pfuse: version=9P1: expected 9P2000"),
    (["ls", "tcp!127.0.0.1!1"], "py9pfuse: tcp!127.0.0.1!1: connection refused"),
    (["ls", "tcp!!1"], "py9pfuse: tcp!!1: expected tcp!host!port"),
    (["ls", "unix!/nonexistent/sock"], "py9pfuse: unix!/nonexistent/sock: no such socket"),
])
def test_bad_input_is_one_line(args, says):
    r = py9pfuse(*args)
    err = r.stderr.decode().splitlines()
    assert r.returncode == 1 and len(err) == 1 and err[0].startswith(says), err


def test_refused_attach_is_one_line():
    with start_or_skip("diod") as peer:
        r = py9pfuse("ls", "-o", "aname=/not/exported", peer.address, "/")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 1 and len(err) == 1
    assert err[0] == f"py9pfuse: {peer.address}: attach to '/not/exported' refused:" \
                     " Operation not permitted", err


def test_exec_address_speaks_9p_over_a_commands_stdio(peer):
    # socat stands in for `ssh host u9fs`: its stdin/stdout carry the 9P stream
    host, port = peer.address.split("!")[1:]
    py9pfuse("write", *opts(peer), peer.address, "/via-exec", input=b"piped\n")
    r = py9pfuse("read", *opts(peer), f"exec!socat - TCP:{host}:{port}", "/via-exec")
    assert r.returncode == 0 and r.stdout == b"piped\n", r.stderr
