"""`-o` options, as mount(8) and people write them: `-o uname=glenda,aname=/srv`."""

from __future__ import annotations

from .proto import DIALECTS


class OptionError(ValueError):
    """An option that is unknown or has a bad value; the text is the user's one line."""


def _version(v: str) -> str | None:
    aliases = {d.lower(): d for d in DIALECTS}
    aliases.update({"l": "9P2000.L", ".l": "9P2000.L", "u": "9P2000.u", ".u": "9P2000.u",
                    "2000": "9P2000", "auto": None})
    if v.lower() not in aliases:
        raise OptionError(f"version={v}: expected 9P2000, 9P2000.u, 9P2000.L or auto")
    return aliases[v.lower()]


def _size(v: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20}.get(v[-1:].lower(), 1)
    try:
        n = int(v[:-1] if mult > 1 else v) * mult
    except ValueError:
        raise OptionError(f"msize={v}: expected a number of bytes (e.g. 65536 or 1M)") from None
    if not 512 <= n <= 1 << 30:
        raise OptionError(f"msize={v}: must be between 512 and 1G")
    return n


def _no_password(v: str) -> str:
    raise OptionError("password=: a password on the command line is visible to every user"
                      " (ps); use keyfile= or $PY9PFUSE_PASSWORD")


def _auth(v: str) -> str:
    from .client.auth import METHODS

    if v not in METHODS:
        raise OptionError(f"auth={v}: expected one of {', '.join(METHODS)}")
    return v


def _positive(kind):
    def conv(v: str):
        try:
            n = kind(v)
        except ValueError:
            n = -1
        if n <= 0:
            raise OptionError(f"expected a positive number, not {v!r}")
        return n
    return conv


def seconds(zero: str):
    """A converter of seconds, 0 or more; `zero` says what 0 means, for the message."""
    def conv(v: str) -> float:
        try:
            n = float(v)
        except ValueError:
            n = -1
        if n < 0:
            raise OptionError(f"expected seconds ({zero}), not {v!r}")
        return n
    return conv


_seconds_or_off = seconds("0: off")


def _reconnect(v: str) -> float:
    return RECONNECT_WAIT if v == "" else _positive(float)(v)


RECONNECT_WAIT = 60.0  # seconds a request waits for a lost server to come back
KEEPALIVE = 20.0

# name -> (converter, what it is for); converters raise OptionError.
SESSION = {
    "uname": (str, "user name to attach as (default: your login name)"),
    "aname": (str, "attach name: which tree of the server (diod: the export path)"),
    "version": (_version, "9P2000, 9P2000.u, 9P2000.L or auto (default: the best the server has)"),
    "msize": (_size, "largest message to ask for (default 1M; the server may lower it)"),
    "timeout": (_positive(float), "seconds to wait for a reply that should not block (default 30)"),
    "window": (_positive(int), "Treads/Twrites in flight for one large read or write (default 16)"),
    "auth": (_auth, "auto (default), none, munge, p9any, p9sk1 or factotum: how to answer"
                    " a server that asks for authentication"),
    "user": (str, "Plan 9 identity for p9sk1 (default: uname)"),
    "authdom": (str, "authentication domain to answer, of those the server offers"),
    "authserver": (str, "dial string of the auth server (tcp!host!567) for p9sk1 tickets"),
    "keyfile": (str, "file holding the password (mode 0600 or stricter)"),
    "factotum": (str, "dial string of plan9port's factotum (default: in $NAMESPACE)"),
    "reconnect": (_reconnect, "when the connection is lost, dial and attach again and carry"
                              " on; requests wait up to the given seconds (default 60) for it"),
    "keepalive": (_seconds_or_off, "seconds of silence after which the server is asked"
                                   " something; as long again without an answer and the"
                                   " connection is lost (default 20; 0: off)"),
    "password": (_no_password, ""),
}


def parse(values: list[str] | tuple[str, ...], known: dict = SESSION) -> dict:
    """`["a=1,b", "c=2"]` -> {"a": converted 1, "b": True, "c": converted 2}."""
    out = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, raw = item.partition("=")
            if key not in known:
                raise OptionError(f"unknown option {key!r} (known: {', '.join(sorted(known))})")
            conv = known[key][0]
            try:
                out[key] = conv(raw) if eq else conv("")
            except OptionError as e:
                raise OptionError(f"{key}: {e}" if not str(e).startswith(key) else str(e)) from None
    return out


def session_kwargs(opts: dict) -> dict:
    """The keyword arguments of py9pfuse.connect for these options (the key is read,
    or asked for, here: before a mount goes into the background)."""
    kw = {k: opts[k] for k in ("uname", "aname", "version", "msize", "window", "auth")
          if k in opts}
    if "timeout" in opts:
        kw["op_timeout"] = opts["timeout"]
    kw["keepalive"] = opts.get("keepalive", KEEPALIVE) or None
    if "reconnect" in opts:
        kw["reconnect"] = opts["reconnect"]
    if kw.get("auth") not in ("none", "munge"):
        kw["identity"] = identity(opts)
    return kw


def identity(opts: dict):
    """Who we are for Plan 9 authentication, with the key from keyfile=, from
    $PY9PFUSE_PASSWORD, or typed at a prompt; None when none of them says."""
    import getpass
    import os
    import stat
    import sys

    from .client.auth import Identity
    from .client.p9crypt import passtokey

    password = None
    if "keyfile" in opts:
        path = os.path.expanduser(opts["keyfile"])
        try:
            st = os.stat(path)
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise OptionError(f"keyfile={path}: readable by others (mode"
                                  f" {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
            if st.st_uid != os.getuid():
                raise OptionError(f"keyfile={path}: not owned by you")
            with open(path, encoding="utf-8") as f:
                password = f.readline().rstrip("\n")
        except OSError as e:
            raise OptionError(f"keyfile={path}: {e.strerror.lower()}") from None
    elif os.environ.get("PY9PFUSE_PASSWORD"):
        password = os.environ["PY9PFUSE_PASSWORD"]
    elif opts.get("auth") in ("p9any", "p9sk1") and sys.stdin.isatty():
        # (with auth=factotum the key stays in factotum: nothing to ask)
        password = getpass.getpass(f"password for {opts.get('user') or opts.get('uname')}: ")
    user = opts.get("user") or opts.get("uname")
    if password is None and not any(opts.get(k) for k in ("user", "uname", "authdom",
                                                           "authserver", "factotum")):
        return None
    if user is None:
        import pwd
        user = pwd.getpwuid(os.getuid()).pw_name
    return Identity(user, passtokey(password) if password is not None else None,
                    opts.get("authdom"), opts.get("authserver"), opts.get("factotum"))
