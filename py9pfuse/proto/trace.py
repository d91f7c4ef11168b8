"""One line per message in the format of lib9p's chatty9p and plan9port's fcallfmt.

    <-5- Twalk tag 5 fid 267 newfid 268 nwname 1 0:data
    -5-> Rwalk tag 5 nwqid 1 0:(0000000000000001 0 )

9P2000 messages print exactly as plan9port prints them; .L messages, which it does
not know, print as their name, tag, then `field value` pairs in wire order.
"""

from __future__ import annotations

from .constants import (DMAPPEND, DMAUTH, DMDIR, DMEXCL, NONUNAME, QTAPPEND, QTAUTH, QTDIR, QTEXCL,
                        QTSYMLINK)
from .messages import Message
from .stat import Stat
from .wire import Qid

_DUMP = 64  # bytes of data shown, as fcallfmt's DUMPL


def qid_type(t: int) -> str:
    return "".join(c for bit, c in ((QTDIR, "d"), (QTAPPEND, "a"), (QTEXCL, "l"),
                                    (QTAUTH, "A"), (QTSYMLINK, "L")) if t & bit)


def fmt_qid(q: Qid) -> str:
    return f"({q.path:016x} {q.version} {qid_type(q.type)})"


def fmt_perm(m: int) -> str:
    """Plan 9's %M: d/a/A/-, then l or -, then rwx three times."""
    first = "d" if m & DMDIR else "a" if m & DMAPPEND else "A" if m & DMAUTH else "-"
    s = first + ("l" if m & DMEXCL else "-")
    for shift in (6, 3, 0):
        b = m >> shift
        s += ("r" if b & 4 else "-") + ("w" if b & 2 else "-") + ("x" if b & 1 else "-")
    return s


def fmt_data(data: bytes) -> str:
    """Quoted text if printable, else hex in groups of four bytes, at most 64 bytes.

    Unlike fcallfmt, newline and tab print as \\n and \\t: a trace line stays one line.
    """
    head = data[:_DUMP]
    if all(32 <= c < 127 or c in (9, 10) for c in head):
        return "'" + head.decode("ascii").replace("\n", "\\n").replace("\t", "\\t") + "'"
    h = head.hex()
    return "'" + " ".join(h[i : i + 8] for i in range(0, len(h), 8)) + "'"


def fmt_stat(d: Stat) -> str:
    return (f"'{d.name}' '{d.uid}' '{d.gid}' '{d.muid}' q {fmt_qid(d.qid)} m 0{d.mode:o} "
            f"at {d.atime} mt {d.mtime} l {d.length} t {d.type} d {d.dev}")


def _signed(n: int) -> int:
    # fcallfmt prints fids with %d, so NOFID shows as -1
    return n - (1 << 32) if n >= 1 << 31 else n


def fmt_message(m: Message, redact: bool = False) -> str:
    """The text of one message; `redact` hides data (an afid's secrets)."""
    n, t = m.NAME, m.tag
    g = m.__getattribute__
    if n == "Tversion" or n == "Rversion":
        return f"{n} tag {t} msize {m.msize} version '{m.version}'"
    if n == "Tauth" or n == "Tattach":
        fid = f" fid {_signed(m.fid)}" if n == "Tattach" else ""
        nu = f" n_uname {m.n_uname}" if m.n_uname != NONUNAME else ""
        return f"{n} tag {t}{fid} afid {_signed(m.afid)} uname {m.uname} aname {m.aname}{nu}"
    if n in ("Rauth", "Rattach"):
        return f"{n} tag {t} qid {fmt_qid(g('aqid') if n == 'Rauth' else m.qid)}"
    if n == "Rerror":
        return f"Rerror tag {t} ename {m.ename}" + (f" errno {m.errno}" if m.errno is not None else "")
    if n == "Tflush":
        return f"Tflush tag {t} oldtag {m.oldtag}"
    if n == "Twalk":
        names = "".join(f"{i}:{w} " for i, w in enumerate(m.wnames))
        return (f"Twalk tag {t} fid {_signed(m.fid)} newfid {_signed(m.newfid)}"
                f" nwname {len(m.wnames)} {names}")
    if n == "Rwalk":
        qids = "".join(f"{i}:{fmt_qid(q)} " for i, q in enumerate(m.wqids))
        return f"Rwalk tag {t} nwqid {len(m.wqids)} {qids}"
    if n == "Topen":
        return f"Topen tag {t} fid {m.fid} mode {m.mode}"
    if n in ("Ropen", "Rcreate", "Rlopen", "Rlcreate"):
        tail = " " if n == "Rcreate" else ""
        return f"{n} tag {t} qid {fmt_qid(m.qid)} iounit {m.iounit}{tail}"
    if n == "Tcreate":
        return f"Tcreate tag {t} fid {m.fid} name {m.name} perm {fmt_perm(m.perm)} mode {m.mode}"
    if n == "Tread":
        return f"Tread tag {t} fid {_signed(m.fid)} offset {m.offset} count {m.count}"
    if n == "Rread":
        return f"Rread tag {t} count {len(m.data)} " + ("'<redacted>'" if redact else fmt_data(m.data))
    if n == "Twrite":
        return (f"Twrite tag {t} fid {_signed(m.fid)} offset {m.offset} count {len(m.data)} "
                + ("'<redacted>'" if redact else fmt_data(m.data)))
    if n in ("Tclunk", "Tremove", "Tstat"):
        return f"{n} tag {t} fid {m.fid}"
    if n == "Rstat":
        return f"Rstat tag {t}  stat {fmt_stat(m.stat)}"
    if n == "Twstat":
        return f"Twstat tag {t} fid {m.fid} stat {fmt_stat(m.stat)}"
    if n == "Rreaddir":
        return f"Rreaddir tag {t} count {len(m.data)}"
    return " ".join([n, "tag", str(t)] + [f"{f} {_fmt_value(f, g(f))}" for f, _, _ in m.FIELDS])


def _fmt_value(name: str, v) -> str:
    if name == "mode":
        return f"0{v:o}"
    if name in ("flags", "valid", "request_mask"):
        return hex(v)
    if isinstance(v, Qid):
        return fmt_qid(v)
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, bytes):
        return fmt_data(v)
    return str(v)


def trace_line(m: Message, conn: int = 0, redact: bool = False) -> str:
    """`<-N- Tmsg ...` for requests and `-N-> Rmsg ...` for replies, as chatty9p prints."""
    arrow = f"<-{conn}- " if m.NAME[0] == "T" else f"-{conn}-> "
    return arrow + fmt_message(m, redact)
