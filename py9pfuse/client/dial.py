"""Dial strings as Plan 9 users write them, and the trio streams they open.

    tcp!host!564   tcp!host   net!host!9fs   host   unix!/tmp/ns.glenda.:0/acme
    /path/to/socket   host:port   [::1]:564   -   exec!ssh host u9fs
"""

from __future__ import annotations

import errno as E
import os
import re
import shlex
import socket
import stat
from dataclasses import dataclass

import trio

from .errors import DialError

# Plan 9's /lib/ndb/common names for the services 9P lives on.
SERVICES = {"9fs": 564, "564": 564, "styx": 6666, "6666": 6666, "ticket": 567, "rstyx": 6668}
DEFAULT_PORT = 564


@dataclass(frozen=True)
class Address:
    text: str  # as the user wrote it, for every message that names the address
    net: str  # "tcp", "unix", "stdio" or "exec"
    host: str = ""
    port: int = 0
    path: str = ""
    argv: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text


def _port(text: str, service: str) -> int:
    if service.isdigit():
        n = int(service)
        if 0 < n < 65536:
            return n
        raise DialError(text, f"port {service} is out of range", E.EINVAL)
    if service in SERVICES:
        return SERVICES[service]
    try:
        return socket.getservbyname(service, "tcp")
    except OSError:
        raise DialError(text, f"unknown service {service!r}", E.EINVAL) from None


def parse(text: str) -> Address:
    """An Address for a dial string; DialError (EINVAL) naming it when malformed."""
    s = text.strip()
    if not s:
        raise DialError(repr(text), "empty address", E.EINVAL)
    if s == "-":
        return Address(s, "stdio")
    if s.startswith("exec!"):
        try:
            argv = tuple(shlex.split(s[5:]))
        except ValueError as e:
            raise DialError(s, f"bad command: {e}", E.EINVAL) from None
        if not argv:
            raise DialError(s, "exec! needs a command", E.EINVAL)
        return Address(s, "exec", argv=argv)
    if "!" in s:
        parts = s.split("!")
        net = parts[0]
        if net == "unix":
            path = "!".join(parts[1:])
            if not path:
                raise DialError(s, "unix! needs a socket path", E.EINVAL)
            return Address(s, "unix", path=path)
        if net not in ("tcp", "net") or len(parts) not in (2, 3) or not parts[1]:
            raise DialError(s, "expected tcp!host!port, net!host!service or unix!path",
                            E.EINVAL)
        service = parts[2] if len(parts) == 3 else "9fs"
        if not service:
            raise DialError(s, "empty service", E.EINVAL)
        host = parts[1].strip("[]")  # tcp![::1]!564 is written both ways
        return Address(s, "tcp", host=host, port=_port(s, service))
    if s.startswith("/") or s.startswith("./"):
        return Address(s, "unix", path=s)
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\](?::(\w+))?", s)
    if m:
        return Address(s, "tcp", host=m.group(1), port=_port(s, m.group(2) or "9fs"))
    if s.count(":") == 1:
        host, service = s.split(":")
        if not host or not service:
            raise DialError(s, "expected host:port", E.EINVAL)
        return Address(s, "tcp", host=host, port=_port(s, service))
    if s.count(":") > 1:
        raise DialError(s, "an IPv6 address needs brackets: [addr]:port", E.EINVAL)
    if re.fullmatch(r"[\w.-]+", s):
        return Address(s, "tcp", host=s, port=DEFAULT_PORT)
    raise DialError(s, "not a dial string (tcp!host!port, unix!path, host:port, -)", E.EINVAL)


class _ProcessStream(trio.abc.HalfCloseableStream):
    """A child's stdin/stdout as one stream; closing it ends the child."""

    def __init__(self, proc: trio.Process):
        self.proc = proc
        self._send, self._recv = proc.stdin, proc.stdout

    async def send_all(self, data) -> None:
        await self._send.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._send.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None) -> bytes:
        return await self._recv.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._recv.aclose()
        if self.proc.returncode is None:
            self.proc.terminate()
            with trio.move_on_after(2) as cs:
                cs.shield = True
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()


def _root_cause(e: OSError) -> OSError:
    """trio's "all attempts to connect failed" keeps the real errors in its cause."""
    cause = e.__cause__
    errs = getattr(cause, "exceptions", [cause] if cause else [])
    return next((c for c in errs if isinstance(c, OSError) and c.errno), e)


def _why(e: OSError) -> str:
    return os.strerror(e.errno).lower() if e.errno else str(e)


async def open_stream(addr: Address, timeout: float = 15.0) -> trio.abc.Stream:
    """Connect; DialError naming the address if it is refused, unreachable or too slow."""
    try:
        with trio.fail_after(timeout):
            if addr.net == "tcp":
                stream = await trio.open_tcp_stream(addr.host, addr.port)
                # one small request must not wait for the next (Nagle): 9P is request/reply
                stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return stream
            if addr.net == "unix":
                try:
                    if not stat.S_ISSOCK(os.stat(addr.path).st_mode):
                        raise DialError(addr.text, "not a unix socket", E.ENOTSOCK)
                except FileNotFoundError:
                    raise DialError(addr.text, "no such socket", E.ENOENT) from None
                return await trio.open_unix_socket(addr.path)
            if addr.net == "stdio":
                return trio.StapledStream(trio.lowlevel.FdStream(os.dup(1)),
                                          trio.lowlevel.FdStream(os.dup(0)))
            proc = await trio.lowlevel.open_process(list(addr.argv), stdin=-1, stdout=-1)
            return _ProcessStream(proc)
    except trio.TooSlowError:
        raise DialError(addr.text, f"no answer within {timeout:g} s", E.ETIMEDOUT) from None
    except FileNotFoundError as e:
        raise DialError(addr.text, f"cannot run {e.filename}: no such file", E.ENOENT) from None
    except OSError as e:
        if isinstance(e, DialError):
            raise
        e = _root_cause(e)
        raise DialError(addr.text, _why(e), e.errno or E.EHOSTUNREACH) from None
