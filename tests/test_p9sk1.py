"""p9any/p9sk1 end to end: the bundled server requires it; tickets are made locally or
by the bundled auth server; a wrong key or unknown user is one clear error."""

from __future__ import annotations

import errno as E
import os

import pytest

from mounts import bundled_server, is_mounted, mounted
from mounts import py9pfuse as cmd

import py9pfuse
from py9pfuse.client import p9crypt as c
from py9pfuse.client.auth import Identity
from py9pfuse.server import demo_tree, serve_unix
from py9pfuse.server.p9auth import AuthConfig, AuthServer, serve_authserver

KEYS = {"glenda": c.passtokey("glenda's secret"), "fs": c.passtokey("the file server's key")}


async def start(nursery, tmp_path, authid: str):
    sock = str(tmp_path / "fs.sock")
    await nursery.start(lambda task_status: serve_unix(
        sock, demo_tree(), auth=AuthConfig(authid, "test.dom", KEYS[authid]),
        task_status=task_status))
    return f"unix!{sock}"


async def test_local_tickets_when_we_are_the_servers_authid(nursery, tmp_path):
    addr = await start(nursery, tmp_path, "glenda")
    who = Identity("glenda", KEYS["glenda"])
    async with py9pfuse.connect(addr, uname="glenda", auth="p9any", identity=who) as fs:
        assert await fs.read_bytes("/hello.txt") == b"hello, 9P\n"
        assert fs.session.fids.live == 1


async def test_auto_speaks_p9any_to_a_9p2000_server(nursery, tmp_path):
    addr = await start(nursery, tmp_path, "glenda")
    who = Identity("glenda", KEYS["glenda"])
    async with py9pfuse.connect(addr, uname="glenda", identity=who) as fs:
        assert "hello.txt" in [e.name for e in await fs.listdir("/")]


async def test_tickets_from_the_auth_server(nursery, tmp_path):
    addr = await start(nursery, tmp_path, "fs")
    asock = str(tmp_path / "auth.sock")
    await nursery.start(serve_authserver, asock, AuthServer("test.dom", dict(KEYS)))
    who = Identity("glenda", KEYS["glenda"], authserver=f"unix!{asock}")
    async with py9pfuse.connect(addr, uname="glenda", auth="p9sk1", identity=who) as fs:
        assert await fs.read_bytes("/hello.txt") == b"hello, 9P\n"


@pytest.mark.parametrize("case", ["wrong-key-local", "wrong-key-authserver", "unknown-user",
                                  "no-authserver", "no-key", "no-auth"])
async def test_refusals_are_one_clear_line(nursery, tmp_path, case):
    authid = "glenda" if case in ("wrong-key-local", "no-key", "no-auth") else "fs"
    addr = await start(nursery, tmp_path, authid)
    asock = str(tmp_path / "auth.sock")
    await nursery.start(serve_authserver, asock, AuthServer("test.dom", dict(KEYS)))
    key, user, authserver, auth = c.passtokey("guess"), "glenda", f"unix!{asock}", "p9any"
    if case == "unknown-user":
        user, key = "nobody", KEYS["glenda"]
    elif case == "no-authserver":
        authserver, key = None, KEYS["glenda"]
    elif case == "no-key":
        key = None
    elif case == "no-auth":
        auth = "none"
    elif case == "wrong-key-local":
        authserver = None
    who = Identity(user, key, authserver=authserver)
    with pytest.raises(OSError) as e:
        async with py9pfuse.connect(addr, uname=user, auth=auth, identity=who):
            pass
    text = str(e.value)
    assert len(text.splitlines()) == 1
    assert text.startswith(f"{addr}: authentication failed: ") or case == "no-auth"
    want = {"wrong-key-local": "bad ticket", "wrong-key-authserver": "wrong password?",
            "unknown-user": "unknown user", "no-authserver": "need its auth server",
            "no-key": "p9sk1 needs a key", "no-auth": "authentication required"}[case]
    assert want in text, text
    assert e.value.errno in (E.EACCES, E.EPERM)


def test_encrypt_steps_seven_bytes_and_decrypt_undoes_it():
    key = c.passtokey("x")
    for n in (8, 13, 72, 141):
        data = bytes(range(n))
        sealed = c.encrypt(key, data)
        assert sealed != data and c.decrypt(key, sealed) == data
    # an 8-byte buffer is one plain DES block with the expanded key
    from Crypto.Cipher import DES
    assert c.encrypt(key, b"abcdefgh") == DES.new(c.des56to64(key), DES.MODE_ECB).encrypt(
        b"abcdefgh")
    # 9 bytes: block at 0, then the block at 1 (the overlapping step)
    d = DES.new(c.des56to64(key), DES.MODE_ECB)
    first = d.encrypt(b"abcdefgh") + b"i"
    assert c.encrypt(key, b"abcdefghi") == first[:1] + d.encrypt(first[1:9])


def test_des56to64_spreads_seven_bits_per_byte():
    assert c.des56to64(b"\xff" * 7) == b"\xfe" * 8
    assert c.des56to64(b"\x80" + b"\0" * 6) == b"\x80" + b"\0" * 7
    assert c.des56to64(b"\0" * 6 + b"\x01") == b"\0" * 7 + b"\x02"


# --- through the py9pfuse command: mounting, keys, and what the user is told


def write_secret(path, text: str, mode: int = 0o600) -> str:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def plan9_server(tmp_path):
    """The bundled server as glenda's file server, with an auth server knowing glenda
    and the file server's own identity, fs."""
    users = tmp_path / "users"
    users.write_text("glenda glenda-pw\nfs fs-pw\n")
    fskey = write_secret(tmp_path / "fs.key", "fs-pw")
    asock = str(tmp_path / "auth.sock")
    with bundled_server("--authid", "fs", "--authdom", "test.dom", "--keyfile", fskey,
                        "--authserver", asock, "--users", str(users)) as addr:
        yield addr, f"unix!{asock}"


def test_mount_with_p9sk1_through_the_auth_server(plan9_server, tmp_path):
    addr, authserver = plan9_server
    key = write_secret(tmp_path / "glenda.key", "glenda-pw")
    with mounted(addr, "uname=glenda", "auth=p9sk1", f"authserver={authserver}",
                 f"keyfile={key}") as mnt:
        with open(os.path.join(mnt, "hello.txt"), "rb") as f:
            assert f.read() == b"hello, 9P\n"


def test_mount_with_the_wrong_password_is_refused(plan9_server, tmp_path):
    addr, authserver = plan9_server
    key = write_secret(tmp_path / "glenda.key", "not-her-password")
    mnt = str(tmp_path / "m")
    os.mkdir(mnt)
    r = cmd(addr, mnt, "-o", f"uname=glenda,authserver={authserver},keyfile={key}")
    assert r.returncode == 1 and not is_mounted(mnt)
    assert r.stderr.strip() == (f"py9pfuse: {addr}: authentication failed: the ticket does not"
                                " open with our key (wrong password?)")


def test_password_from_the_environment_with_local_tickets(tmp_path):
    fskey = write_secret(tmp_path / "fs.key", "glenda-pw")
    with bundled_server("--authid", "glenda", "--authdom", "d", "--keyfile", fskey) as addr:
        r = cmd("ls", "-o", "uname=glenda", addr, "/",
                     env=dict(os.environ, PY9PFUSE_PASSWORD="glenda-pw"))
        assert r.returncode == 0 and "hello.txt" in r.stdout, r.stderr
        r = cmd("ls", "-D", "-o", "uname=glenda", addr, "/",
                     env=dict(os.environ, PY9PFUSE_PASSWORD="wrong"))
    assert r.returncode == 1 and "bad ticket" in r.stderr
    assert "'<redacted>'" in r.stderr and "Rauth tag" in r.stderr  # afid bytes never shown


@pytest.mark.parametrize("opt,says", [
    ("password=x", "password=: a password on the command line is visible"),
    ("keyfile=/nonexistent/key", "keyfile=/nonexistent/key: no such file or directory"),
])
def test_key_option_refusals(opt, says):
    r = cmd("ls", "-o", opt, "tcp!127.0.0.1!1", "/")
    assert r.returncode == 1 and r.stderr.strip().startswith(f"py9pfuse: {says}"), r.stderr


def test_a_key_file_others_can_read_is_refused(tmp_path):
    key = write_secret(tmp_path / "k", "pw", mode=0o644)
    r = cmd("ls", "-o", f"keyfile={key}", "tcp!127.0.0.1!1", "/")
    assert r.returncode == 1
    assert r.stderr.strip() == (f"py9pfuse: keyfile={key}: readable by others (mode 0644);"
                                " chmod 600 it")


def test_the_server_names_the_protocols_it_offers(tmp_path):
    fskey = write_secret(tmp_path / "fs.key", "pw")
    with bundled_server("--authid", "fs", "--authdom", "their.dom", "--keyfile",
                        fskey) as addr:
        r = cmd("ls", "-o", "uname=glenda,authdom=our.dom", addr, "/",
                     env=dict(os.environ, PY9PFUSE_PASSWORD="pw"))
    assert r.returncode == 1
    assert "the server offers p9sk1@their.dom; we speak p9sk1" in r.stderr


def des64to56(k64: bytes) -> bytes:
    """The 7 key bits of each byte, packed (as Plan 9's des64to56 does)."""
    bits = 0
    for b in k64:
        bits = bits << 7 | b >> 1
    return bits.to_bytes(7, "big")


def test_a_published_des_answer_through_plan9_key_expansion():
    # The classic DES known answer (key 0123456789ABCDEF, "Now is t" -> 3FA40E8A984D4815)
    # given as Plan 9's 7-byte key: it must come out of des56to64 + encrypt unchanged.
    k56 = des64to56(bytes.fromhex("0123456789abcdef"))
    assert c.encrypt(k56, b"Now is t") == bytes.fromhex("3fa40e8a984d4815")
    assert c.decrypt(k56, bytes.fromhex("3fa40e8a984d4815")) == b"Now is t"


# --- factotum: py9pfuse carries the bytes, a factotum (here a stand-in) holds the key


@pytest.fixture
def factotum(tmp_path, plan9_server):
    import subprocess
    import sys
    import time
    addr, authserver = plan9_server
    sock = str(tmp_path / "factotum")
    here = os.path.dirname(__file__)
    proc = subprocess.Popen([sys.executable, os.path.join(here, "factotum_standin.py"), sock,
                             "glenda", "glenda-pw", authserver], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield addr, f"unix!{sock}"
    finally:
        proc.terminate()
        proc.wait(5)


def test_mount_through_factotum(factotum):
    addr, fsock = factotum
    with mounted(addr, "uname=glenda", "auth=factotum", f"factotum={fsock}") as mnt:
        assert "hello.txt" in os.listdir(mnt)


def test_factotum_found_through_namespace(factotum, tmp_path):
    addr, fsock = factotum
    ns = os.path.dirname(fsock.removeprefix("unix!"))
    r = cmd("ls", "-o", "uname=glenda,auth=factotum", addr, "/",
            env=dict(os.environ, NAMESPACE=ns))
    assert r.returncode == 0 and "hello.txt" in r.stdout, r.stderr


def test_factotum_that_is_not_there(plan9_server, tmp_path):
    addr, _ = plan9_server
    r = cmd("ls", "-o", f"uname=glenda,auth=factotum,factotum=unix!{tmp_path}/none", addr, "/")
    assert r.returncode == 1
    assert r.stderr.strip() == (f"py9pfuse: {addr}: authentication failed: factotum at"
                                f" unix!{tmp_path}/none: unix!{tmp_path}/none: no such socket")


def test_mount_with_local_tickets_and_refusal_of_the_wrong_key(tmp_path):
    fskey = write_secret(tmp_path / "fs.key", "glenda-pw")
    with bundled_server("--authid", "glenda", "--authdom", "d", "--keyfile", fskey) as addr:
        good = write_secret(tmp_path / "good", "glenda-pw")
        with mounted(addr, "uname=glenda", "auth=p9sk1", f"keyfile={good}") as mnt:
            assert "hello.txt" in os.listdir(mnt)
        bad = write_secret(tmp_path / "bad", "guess")
        mnt = str(tmp_path / "m")
        os.mkdir(mnt)
        r = cmd(addr, mnt, "-o", f"uname=glenda,keyfile={bad}")
    assert r.returncode == 1 and not is_mounted(mnt)
    assert r.stderr.strip() == (f"py9pfuse: {addr}: authentication failed: bad ticket (not"
                                " sealed with our key)")


def test_an_auth_server_that_is_not_there(plan9_server, tmp_path):
    addr, _ = plan9_server
    key = write_secret(tmp_path / "k", "glenda-pw")
    r = cmd("ls", "-o", f"uname=glenda,keyfile={key},authserver=unix!{tmp_path}/gone", addr,
            "/")
    assert r.returncode == 1
    assert r.stderr.strip() == (f"py9pfuse: {addr}: authentication failed: unix!{tmp_path}/gone:"
                                " no such socket")
