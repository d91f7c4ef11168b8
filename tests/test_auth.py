"""Authentication through the afid against diod requiring MUNGE (a real auth peer)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import peers
from mounts import is_mounted, mounted, py9pfuse
from py9pfuse import connect

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def diod_munge():
    try:
        with peers.munged(), peers.start("diod", auth=True) as peer:
            yield peer
    except peers.PeerUnavailable as e:
        if os.environ.get("PY9PFUSE_REQUIRE_PEERS") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.mark.parametrize("auth", ["munge", "auto"])
async def test_session_authenticates(diod_munge, auth):
    async with connect(diod_munge.address, aname=diod_munge.aname, auth=auth) as fs:
        await fs.write_bytes("/authed", b"yes")
        assert await fs.read_bytes("/authed") == b"yes"
        assert fs.session.fids.live == 1  # the afid was clunked after the attach


async def test_without_auth_the_attach_is_refused_clearly(diod_munge):
    with pytest.raises(OSError) as e:
        async with connect(diod_munge.address, aname=diod_munge.aname, auth="none"):
            pass
    assert e.value.errno == 1 and "not authenticated: auth=none was given" in str(e.value)


def test_mount_with_munge(diod_munge):
    with mounted(diod_munge.address, "auth=munge", aname=diod_munge.aname) as mnt:
        with open(os.path.join(mnt, "f"), "w") as f:
            f.write("through an authenticated mount\n")
        with open(os.path.join(diod_munge.export, "f")) as f:
            assert f.read() == "through an authenticated mount\n"


def test_mount_refused_without_auth_is_one_line(diod_munge, tmp_path):
    mnt = str(tmp_path / "m")
    os.mkdir(mnt)
    r = py9pfuse(diod_munge.address, mnt, "-o", f"aname={diod_munge.aname},auth=none")
    assert r.returncode == 1 and not is_mounted(mnt)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused: Operation not permitted (not authenticated" in lines[0]


def test_the_credential_never_reaches_the_trace(diod_munge):
    r = subprocess.run([sys.executable, "-m", "py9pfuse", "ls", "-D", "-o",
                        f"aname={diod_munge.aname},auth=munge", diod_munge.address, "/"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Rauth tag" in r.stderr and "'<redacted>'" in r.stderr
    assert "MUNGE:" not in r.stderr


def test_unknown_auth_method_is_one_line():
    r = py9pfuse("ls", "-o", "auth=kerberos", "tcp!127.0.0.1!1", "/")
    assert r.returncode == 1
    assert r.stderr.strip() == ("py9pfuse: auth=kerberos: expected one of auto, none, munge,"
                                " p9any, p9sk1, factotum")
