"""What the client raises. Every error is an OSError with an errno, so the FUSE layer
answers `e.errno` and a command prints `str(e)` as its one line."""

from __future__ import annotations

import errno as E


class P9Error(OSError):
    """Base of the client's errors."""

    def __init__(self, errno: int, text: str):
        super().__init__(errno, text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class ServerError(P9Error):
    """The server answered Rerror/Rlerror; `ename` is its words (or the errno's)."""

    def __init__(self, errno: int, ename: str, request: str = ""):
        self.ename = ename
        self.request = request  # e.g. "Twalk", so a log line says what was refused
        super().__init__(errno, ename)


class DialError(P9Error):
    """The address is malformed, unknown or does not answer."""

    def __init__(self, address: str, reason: str, errno: int = E.EHOSTUNREACH):
        super().__init__(errno, f"{address}: {reason}")
        self.address = address


class ConnectionLost(P9Error):
    """The connection died (EOF, reset, a stream that is no longer 9P); EIO for everyone."""

    def __init__(self, address: str, reason: str):
        super().__init__(E.EIO, f"{address}: connection lost: {reason}")


class VersionError(P9Error):
    """No dialect we accept could be agreed with the server."""

    def __init__(self, address: str, reason: str):
        super().__init__(E.EPROTONOSUPPORT, f"{address}: {reason}")


def describe(e: OSError, address: str, aname: str = "", path: str | None = None) -> str:
    """The one line a command prints for a failure: the address, then what was refused
    (the attach, or the path the user named), then the server's words."""
    if isinstance(e, ServerError):
        if e.request == "Tattach":
            return f"{address}: attach to {aname!r} refused: {e.ename}"
        return f"{address}: {path or e.request or 'request'}: {e.ename}"
    return str(e)  # our own errors name the address already
