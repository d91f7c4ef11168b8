"""The py9pfuse command: scripting verbs in the spirit of plan9port's 9p(1).

    py9pfuse ls [-l] ADDR [PATH]      py9pfuse read ADDR PATH      py9pfuse stat ADDR PATH
    py9pfuse write ADDR PATH < data   py9pfuse decode CAPTURE
"""

from __future__ import annotations

import datetime
import functools
import stat as S
import sys

import click
import trio

from . import __version__
from .client import DirEntry, P9Error, connect
from .client.errors import describe
from .options import OptionError, parse, session_kwargs
from .proto import ProtocolError, decode, trace_line
from .proto.capture import loads


class Failure(click.ClickException):
    """One line on stderr, exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"py9pfuse: {self.message}", err=True)


def _trace(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def session_options(f):
    """-o OPTIONS and -D, shared by every verb that talks to a server."""

    @click.option("-o", "options", multiple=True, metavar="OPT[,OPT...]",
                  help="uname=, aname=, version=, msize=, timeout=, window=")
    @click.option("-D", "debug", is_flag=True, help="Trace every 9P message to stderr.")
    @functools.wraps(f)
    def wrapper(options, debug, **kw):
        try:
            opts = session_kwargs(parse(options))
        except OptionError as e:
            raise Failure(str(e)) from None
        if debug:
            opts["trace"] = _trace
        opts["log"] = lambda line: click.echo(f"py9pfuse: {line}", err=True)
        return f(opts=opts, **kw)

    return wrapper


def run(address: str, path: str, opts: dict, job) -> None:
    """Connect, run job(client), and turn any failure into one line naming what failed."""

    async def main():
        async with connect(address, **opts) as fs:
            await job(fs)

    try:
        trio.run(main)
    except P9Error as e:
        raise Failure(describe(e, address, opts.get("aname", ""), path)) from None
    except BrokenPipeError:
        sys.stderr.close()  # a reader such as head(1) went away: not our failure


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="py9pfuse")
def cli() -> None:
    """A 9P client: talk to a 9P server from the shell."""


@cli.command("ls")
@click.option("-l", "long", is_flag=True, help="Mode, size, time and name, as ls -l.")
@click.argument("address")
@click.argument("path", default="/")
@session_options
def ls_cmd(address: str, path: str, long: bool, opts: dict) -> None:
    """List directory PATH (default /) of the server at ADDRESS."""

    async def job(fs):
        attr = await fs.stat(path)
        entries = await fs.listdir(path) if S.S_ISDIR(attr.mode) else None
        if entries is None:  # ls of a file lists the file, as ls(1) does
            entries = [DirEntry(path.rstrip("/").rpartition("/")[2] or path, attr.qid, attr)]
        for e in sorted(entries, key=lambda e: e.name):
            if not long:
                click.echo(e.name)
                continue
            a = e.attr or await fs.stat(f"{path.rstrip('/')}/{e.name}")
            when = datetime.datetime.fromtimestamp(a.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M")
            click.echo(f"{S.filemode(a.mode)} {a.uid:>5} {a.gid:>5} {a.size:>10} {when} {e.name}")

    run(address, path, opts, job)


@cli.command("read")
@click.argument("address")
@click.argument("path")
@session_options
def read_cmd(address: str, path: str, opts: dict) -> None:
    """Copy file PATH to standard output, until the server says end of file."""
    out = sys.stdout.buffer

    async def job(fs):
        async for chunk in fs.chunks(path):
            out.write(chunk)
        out.flush()

    run(address, path, opts, job)


@cli.command("write")
@click.argument("address")
@click.argument("path")
@session_options
def write_cmd(address: str, path: str, opts: dict) -> None:
    """Copy standard input to file PATH (made if missing, else truncated)."""
    src = sys.stdin.buffer

    async def job(fs):
        async with fs.open_for_write(path) as fid:
            offset, unit = 0, fs.session.iounit(fid) * fs.session.window
            while data := await trio.to_thread.run_sync(src.read, unit):
                offset = await fs.write_at(fid, offset, data)

    run(address, path, opts, job)


@cli.command("stat")
@click.argument("address")
@click.argument("path")
@session_options
def stat_cmd(address: str, path: str, opts: dict) -> None:
    """Print the attributes of PATH, one per line."""

    async def job(fs):
        a = await fs.stat(path)
        q = a.qid
        for key, value in (("qid", f"({q.path:016x} {q.version} {q.type:#x})"),
                           ("mode", f"{S.filemode(a.mode)} ({a.mode:#o})"), ("uid", a.uid),
                           ("gid", a.gid), ("nlink", a.nlink), ("size", a.size),
                           ("atime", a.atime_ns / 1e9), ("mtime", a.mtime_ns / 1e9),
                           ("ctime", a.ctime_ns / 1e9)):
            click.echo(f"{key} {value}")

    run(address, path, opts, job)


@cli.command("decode")
@click.argument("capture", type=click.File("r"))
def decode_cmd(capture) -> None:
    """Print a recorded capture (tests/captures/*.9p) as a chatty9p trace."""
    try:
        cap = loads(capture.read())
        for direction, dialect, frame in cap.records:
            click.echo(trace_line(decode(frame, dialect)))
    except ProtocolError as e:
        raise Failure(f"{capture.name}: {e}") from None


@cli.command("mount")
@click.argument("address")
@click.argument("mountpoint")
@click.option("-o", "options", multiple=True, metavar="OPT[,OPT...]",
              help="Mount options: see py9pfuse(1).")
@click.option("-f", "foreground", is_flag=True, help="Stay in the foreground.")
@click.option("-D", "debug", count=True, help="Trace 9P messages (-DD: FUSE requests too).")
def mount_cmd(address: str, mountpoint: str, options, foreground: bool, debug: int) -> None:
    """Mount the 9P server at ADDRESS on MOUNTPOINT (also: py9pfuse ADDRESS MOUNTPOINT)."""
    from .mount import run as mount

    opts = list(options) + (["debug"] if debug > 1 else [])
    sys.exit(mount(address, mountpoint, opts, foreground, debug > 0))


@cli.command("demo")
@click.argument("mountpoint", default="/tmp/py9pfuse-demo")
@click.option("-f", "foreground", is_flag=True, help="Stay in the foreground.")
@click.option("-D", "debug", count=True, help="Trace 9P messages (-DD: FUSE requests too).")
def demo_cmd(mountpoint: str, foreground: bool, debug: int) -> None:
    """Mount the bundled demo 9P server (in memory) on MOUNTPOINT."""
    from .demo import run as demo

    sys.exit(demo(mountpoint, foreground, debug))


# Options that take a value, so that the mount form can find its first argument.
_VALUED = {"-o"}


def _with_mount_verb(argv: list[str]) -> list[str]:
    """`py9pfuse [-o X] ADDR MNT ...` is the mount form (mount.fuse3 calls it that way):
    if the first argument is not a verb, the verb is mount."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _VALUED:
            i += 2
        elif a.startswith("-") and a != "-":
            if a in ("-h", "--help", "--version"):
                return argv
            i += 1
        else:
            return argv if a in cli.commands else ["mount", *argv]
    return argv


def main() -> None:
    cli(args=_with_mount_verb(sys.argv[1:]), prog_name="py9pfuse")


if __name__ == "__main__":
    sys.exit(main())
