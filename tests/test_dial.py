"""Dial strings as Plan 9 users write them, and what a bad one says."""

from __future__ import annotations

import errno as E
import socket

import pytest

from py9pfuse.client import DialError, parse
from py9pfuse.client.dial import open_stream


@pytest.mark.parametrize("text,net,host,port,path", [
    ("tcp!example.org!564", "tcp", "example.org", 564, ""),
    ("tcp!example.org", "tcp", "example.org", 564, ""),
    ("net!example.org!9fs", "tcp", "example.org", 564, ""),
    ("tcp!10.0.0.1!styx", "tcp", "10.0.0.1", 6666, ""),
    ("tcp!h!6666", "tcp", "h", 6666, ""),
    ("tcp![::1]!564", "tcp", "::1", 564, ""),
    ("example.org", "tcp", "example.org", 564, ""),
    ("example.org:5640", "tcp", "example.org", 5640, ""),
    ("[::1]:5640", "tcp", "::1", 5640, ""),
    ("[fe80::1]", "tcp", "fe80::1", 564, ""),
    ("unix!/tmp/ns.glenda.:0/acme", "unix", "", 0, "/tmp/ns.glenda.:0/acme"),
    ("/run/9p.sock", "unix", "", 0, "/run/9p.sock"),
    ("-", "stdio", "", 0, ""),
])
def test_good_addresses(text, net, host, port, path):
    a = parse(text)
    assert (a.net, a.host, a.port, a.path) == (net, host, port, path)
    assert str(a) == text


def test_exec_address_keeps_the_command_words():
    assert parse("exec!ssh -p 22 host 'u9fs -a none'").argv == ("ssh", "-p", "22", "host",
                                                                "u9fs -a none")


@pytest.mark.parametrize("text,says", [
    ("", "empty address"),
    ("tcp!!564", "expected tcp!host!port"),
    ("tcp!h!nosuchservice", "unknown service 'nosuchservice'"),
    ("tcp!h!70000", "port 70000 is out of range"),
    ("tcp!a!b!c", "expected tcp!host!port"),
    ("udp!h!564", "expected tcp!host!port"),
    ("unix!", "unix! needs a socket path"),
    ("fe80::1:564", "an IPv6 address needs brackets"),
    ("host:", "expected host:port"),
    ("exec!", "exec! needs a command"),
    ("exec!'unbalanced", "bad command"),
    ("bad host name!", "expected tcp!host!port"),
])
def test_bad_addresses_say_what_is_wrong(text, says):
    with pytest.raises(DialError) as e:
        parse(text)
    assert says in str(e.value) and e.value.errno == E.EINVAL
    assert len(str(e.value).splitlines()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_refused_names_the_address():
    addr = f"tcp!127.0.0.1!{free_port()}"
    with pytest.raises(DialError) as e:
        await open_stream(parse(addr))
    assert str(e.value) == f"{addr}: connection refused" and e.value.errno == E.ECONNREFUSED


async def test_missing_unix_socket(tmp_path):
    addr = f"unix!{tmp_path}/none"
    with pytest.raises(DialError, match=f"^{addr}: no such socket$"):
        await open_stream(parse(addr))


async def test_a_file_that_is_not_a_socket(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DialError, match="not a unix socket"):
        await open_stream(parse(str(tmp_path / "f")))


async def test_exec_of_a_missing_command():
    with pytest.raises(DialError, match="cannot run no-such-9p-server: no such file"):
        await open_stream(parse("exec!no-such-9p-server --flag"))


async def test_tcp_connections_set_nodelay():
    with socket.socket() as s:  # a listener nobody accepts from still completes TCP
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        host, port = s.getsockname()
        stream = await open_stream(parse(f"tcp!{host}!{port}"))
        assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await stream.aclose()


async def test_unresolvable_host():
    with pytest.raises(DialError) as e:
        await open_stream(parse("tcp!no-such-host.invalid!564"), timeout=10)
    assert str(e.value).startswith("tcp!no-such-host.invalid!564: ")
