"""Error strings <-> errno, and the chatty9p trace format."""

from __future__ import annotations

import errno as E

import pytest

from py9pfuse import proto as p


@pytest.mark.parametrize("text,want", [
    ("No such file or directory", E.ENOENT),          # strerror: u9fs, py9p, Unix servers
    ("file does not exist", E.ENOENT),                # Plan 9 kernel, ramfs
    ("'/usr/glenda/x' file does not exist", E.ENOENT),  # 9front namec, with the path
    ("file not found", E.ENOENT),                     # lib9p
    ("Permission denied", E.EACCES),
    ("permission denied", E.EACCES),
    ("file already exists", E.EEXIST),
    ("File exists", E.EEXIST),
    ("directory not empty", E.ENOTEMPTY),
    ("Directory not empty", E.ENOTEMPTY),
    ("directory is not empty", E.ENOTEMPTY),          # fossil
    ("file is a directory", E.EISDIR),
    ("walk in non-directory", E.ENOTDIR),
    ("Not a directory", E.ENOTDIR),
    ("Read-only file system", E.EROFS),
    ("Invalid cross-device link", E.EXDEV),
    ("Operation not supported", E.EOPNOTSUPP),
    ("wstat prohibited", E.EPERM),
    ("exclusive use file already open", E.EBUSY),
    ("unknown fid", E.EBADF),
    ("Bad fid!", E.EBADF),                             # aio9p
    ("something no server ever said", E.EIO),
    ("", E.EIO),
])
def test_errno_for(text, want):
    assert p.errno_for(text) == want


@pytest.mark.parametrize("n", [E.ENOENT, E.EEXIST, E.ENOTDIR, E.EISDIR, E.EACCES, E.ENOTEMPTY,
                               E.EIO, E.EPERM, E.EXDEV, E.EROFS, E.ENOSPC, E.EINVAL, E.EBADF,
                               E.ENAMETOOLONG, E.EOPNOTSUPP, E.EBUSY])
def test_our_server_strings_read_back_as_the_same_errno(n):
    assert p.errno_for(p.ename_for(n)) == n


# The example trace of shared/protocol.md (plan9port 9pfuse -D), line for line.
def test_trace_matches_chatty9p():
    q = p.Qid(0, 0, 1)
    lines = [
        p.trace_line(p.Tversion(8216, "9P2000", tag=65535), 5),
        p.trace_line(p.Rversion(8216, "9P2000", tag=65535), 5),
        p.trace_line(p.Twalk(267, 268, ["data"], tag=5), 5),
        p.trace_line(p.Rwalk([q], tag=5), 5),
        p.trace_line(p.Tread(268, 0, 8192, tag=5), 5),
        p.trace_line(p.Rread(b"home=/usr/oraccha", tag=5), 5),
    ]
    assert [ln.rstrip() for ln in lines] == [
        "<-5- Tversion tag 65535 msize 8216 version '9P2000'",
        "-5-> Rversion tag 65535 msize 8216 version '9P2000'",
        "<-5- Twalk tag 5 fid 267 newfid 268 nwname 1 0:data",
        "-5-> Rwalk tag 5 nwqid 1 0:(0000000000000001 0 )",
        "<-5- Tread tag 5 fid 268 offset 0 count 8192",
        "-5-> Rread tag 5 count 17 'home=/usr/oraccha'",
    ]


def test_trace_details():
    assert p.fmt_message(p.Tattach(0, p.NOFID, "glenda", "", tag=1)) == \
        "Tattach tag 1 fid 0 afid -1 uname glenda aname "
    assert p.fmt_message(p.Tcreate(3, "d", p.DMDIR | 0o755, 0, tag=2)) == \
        "Tcreate tag 2 fid 3 name d perm d-rwxr-xr-x mode 0"
    assert p.fmt_message(p.Rread(bytes(range(6)), tag=3)) == "Rread tag 3 count 6 '00010203 0405'"
    assert p.fmt_message(p.Rread(b"x" * 100, tag=3)) == "Rread tag 3 count 100 '" + "x" * 64 + "'"
    assert p.fmt_message(p.Twrite(1, 0, b"secret", tag=4), redact=True).endswith("'<redacted>'")
    assert p.fmt_message(p.Tgetattr(1, p.GETATTR_ALL, tag=5)) == \
        "Tgetattr tag 5 fid 1 request_mask 0x3fff"
    assert p.fmt_message(p.Tlcreate(1, "f", 0o102, 0o644, 0, tag=6)) == \
        "Tlcreate tag 6 fid 1 name 'f' flags 0x42 mode 0644 gid 0"
