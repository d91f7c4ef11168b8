"""`py9pfuse ADDR MOUNTPOINT`: sort the options, connect, mount, and only then let the
caller go (mount(8) waits for us), serve until unmounted, and never leave a dead mount.
"""

from __future__ import annotations

import errno as E
import os
import signal
import stat as S
import sys
import syslog
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pyfuse3
import trio

from . import options
from .client import P9Error, dialect_for, open_session
from .client.errors import describe
from .fs.ops import Config, P9Operations

# Options libfuse takes as they are (checked against libfuse 3.14 here).
FUSE_OPTIONS = {"allow_other", "allow_root", "default_permissions", "auto_unmount", "ro", "rw",
                "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "atime",
                "noatime", "dirsync"}
# Options mount(8) and mount.fuse3 add that mean nothing to us, or that libfuse refuses
# (relatime would make fuse_session_new fail): accepted and dropped, as helpers do.
IGNORED = {"_netdev", "noauto", "auto", "user", "users", "nouser", "owner", "group", "nofail",
           "defaults", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime",
           "nolazytime", "nodiratime", "diratime", "iversion", "noiversion", "mand", "nomand",
           "silent", "loud"}


def _choice(*allowed):
    def conv(v: str) -> str:
        if v not in allowed:
            raise options.OptionError(f"expected one of {', '.join(allowed)}, not {v!r}")
        return v
    return conv


_seconds = options.seconds("0 or more")


MOUNT = {
    **options.SESSION,
    "attr_timeout": (_seconds, "seconds the kernel may keep attributes (default 1)"),
    "entry_timeout": (_seconds, "seconds the kernel may keep a name lookup (default 1)"),
    "cache": (_choice("auto", "none"),
              "auto: page cache for ordinary files, direct I/O for synthetic ones; none: "
              "direct I/O always"),
    "debug": (lambda v: True, "trace every 9P message to stderr (as -D)"),
    "fsname": (str, "what /proc/mounts shows as the source (default: the address)"),
    "writeback": (lambda v: True, "let the kernel merge small writes (not for synthetic"
                                  " files: those keep one write, one Twrite)"),
    "readahead": (lambda v: 0 if v == "0" else options._size(v),
                  "bytes py9pfuse reads ahead of a sequential reader (default 4M; 0: none)"),
    "read_ahead_kb": (lambda v: int(_seconds(v)),
                      "kernel read-ahead for the mount, KiB (default 1024; 0 leaves it; root"
                      " only)"),
}


@dataclass
class MountOptions:
    session: dict = field(default_factory=dict)  # py9pfuse.connect keywords
    fuse: set = field(default_factory=set)  # for pyfuse3.init
    config: dict = field(default_factory=dict)  # Config fields
    debug: bool = False
    read_ahead_kb: int = 1024


def sort_options(values, address: str) -> MountOptions:
    """Ours, FUSE's and mount(8)'s, apart; OptionError for anything else."""
    ours, fuse = {}, set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            key = item.partition("=")[0]
            if not item or key in IGNORED or key.startswith("x-") or key == "comment":
                continue
            if key in FUSE_OPTIONS and "=" not in item:
                fuse.add(key)
            else:
                ours.update(options.parse([item], MOUNT))
    out = MountOptions(options.session_kwargs(ours), fuse, debug=ours.get("debug", False),
                       read_ahead_kb=ours.get("read_ahead_kb", 1024))
    for key in ("attr_timeout", "entry_timeout", "cache", "readahead", "writeback"):
        if key in ours:
            out.config[key] = ours[key]
    # commas would split the option libfuse is given; the address names the mount.
    # auto_unmount: fusermount3 stays to unmount if we die, even by SIGKILL, so a
    # crash never leaves "Transport endpoint is not connected" behind.
    out.fuse |= {f"fsname={ours.get('fsname', address).replace(',', '_')}", "subtype=py9pfuse",
                 "auto_unmount"}
    return out


class MountError(Exception):
    """A failure before the mount was ready: one line, exit status 1, nothing mounted."""


def check_mountpoint(path: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"{path}: mount point does not exist") from None
    except OSError as e:
        if e.errno == E.ENOTCONN:
            raise MountError(f"{path}: a dead mount is in the way (fusermount3 -u {path})") \
                from None
        raise MountError(f"{path}: {os.strerror(e.errno)}") from None
    if not S.S_ISDIR(st.st_mode):
        raise MountError(f"{path}: mount point is not a directory")
    return os.path.abspath(path)


async def serve(address: str, mountpoint: str, opts: MountOptions, ready: Callable[[], None],
                log: Callable[[str], None], before: Callable[[trio.Nursery], Awaitable] | None
                = None) -> None:
    """Connect, attach, mount; call ready(); serve until unmounted or signalled."""
    async with trio.open_nursery() as outer:
        if before is not None:  # the demo starts its server here
            await before(outer)
        try:
            async with open_session(address, log=log, **opts.session) as session:
                fs = dialect_for(session)
                root_attr = await fs.getattr(session.root)
                cfg = Config(**opts.config, trace_fuse=opts.debug, log=log,
                             mountpoint=mountpoint)
                ops = P9Operations(session, fs, root_attr, cfg)
                # the counts signal may come as soon as the mount shows, before its
                # receiver is set up below: it must not kill us meanwhile
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
                try:
                    pyfuse3.init(ops, mountpoint, opts.fuse)
                except RuntimeError:
                    raise MountError(f"{mountpoint}: FUSE refused to mount (is /dev/fuse there,"
                                     f" and fusermount3 installed?)") from None
                try:
                    ready()
                    async with trio.open_nursery() as nursery:
                        ops.nursery = nursery
                        nursery.start_soon(_on_signals, ops, log)
                        nursery.start_soon(_raise_readahead, mountpoint, opts.read_ahead_kb,
                                           log)
                        await pyfuse3.main()
                        nursery.cancel_scope.cancel()
                finally:
                    with trio.CancelScope(shield=True):
                        pyfuse3.close(unmount=True)
                        await ops.clunk_all()
        finally:
            outer.cancel_scope.cancel()


async def _raise_readahead(mountpoint: str, kb: int, log: Callable[[str], None]) -> None:
    """Let the kernel read ahead kb KiB at a time (it asks FUSE for 128 KiB otherwise,
    about 2 requests in flight): bigger requests, several Treads in flight each. Needs
    root. The kernel sets its own value when FUSE_INIT is answered, which happens once
    the main loop runs: so set ours after that, and check that it stayed. The device
    comes from mountinfo: a stat of the mount point would wait for this very process."""
    if not kb or os.geteuid() != 0:
        return
    try:
        with open("/proc/self/mountinfo") as f:
            dev = next(ln.split()[2] for ln in f if ln.split()[4] == mountpoint)
        path = f"/sys/class/bdi/{dev}/read_ahead_kb"
        for _ in range(50):
            await trio.sleep(0.02)
            with open(path, "w") as f:
                f.write(f"{kb}\n")
            await trio.sleep(0.02)
            with open(path) as f:
                if int(f.read()) == kb:
                    return
        log(f"{mountpoint}: read_ahead_kb did not stay at {kb}")
    except (OSError, StopIteration, ValueError) as e:
        log(f"{mountpoint}: could not raise read_ahead_kb: {e}")


async def _on_signals(ops: P9Operations, log: Callable[[str], None]) -> None:
    """SIGINT/SIGTERM/SIGHUP end the main loop, and close() unmounts: no dead mount.
    SIGUSR1 logs one line of counts (inodes, fids, requests), to look for leaks."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                   signal.SIGUSR1) as signals:
        async for sig in signals:
            if sig == signal.SIGUSR1:
                log(f"{ops.config.mountpoint}: {ops.counts()}")
                continue
            pyfuse3.terminate()
            return


def run(address: str, mountpoint: str, values, foreground: bool, debug: bool,
        before=None, after_ready: Callable[[], None] | None = None) -> int:
    """The mount command: 0 once mounted (a child serves on), 1 with one line otherwise."""
    try:
        opts = sort_options(values, address)
        mountpoint = check_mountpoint(mountpoint)
    except (options.OptionError, MountError) as e:
        print(f"py9pfuse: {e}", file=sys.stderr)
        return 1
    opts.debug = opts.debug or debug
    if opts.debug:
        opts.session["trace"] = lambda line: print(line, file=sys.stderr, flush=True)
        foreground = True  # a trace needs a terminal to go to
    if foreground:
        return _main(address, mountpoint, opts, lambda: after_ready and after_ready(),
                     _stderr_log, before)
    return _daemonize(address, mountpoint, opts, before, after_ready)


def _describe(e: BaseException, address: str, opts: MountOptions) -> str:
    if isinstance(e, OSError):
        return describe(e, address, opts.session.get("aname", ""))
    return str(e)


def _stderr_log(line: str) -> None:
    print(f"py9pfuse: {line}", file=sys.stderr, flush=True)


def _syslog(line: str) -> None:
    syslog.syslog(syslog.LOG_ERR, line)


def _main(address, mountpoint, opts, ready, log, before) -> int:
    try:
        trio.run(serve, address, mountpoint, opts, ready, log, before)
    except (P9Error, MountError, OSError) as e:
        print(f"py9pfuse: {_describe(e, address, opts)}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as eg:
        first = eg.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        print(f"py9pfuse: {_describe(first, address, opts)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _daemonize(address, mountpoint, opts, before, after_ready) -> int:
    """Fork before trio starts. The child mounts and reports "ok" or its one error line
    through a pipe; the parent exits with that, so mount(8) returns when we are ready."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        os.setsid()
        syslog.openlog("py9pfuse", syslog.LOG_PID, syslog.LOG_DAEMON)

        def ready():
            if after_ready:
                after_ready()
            sys.stdout.flush()
            os.write(wfd, b"ok\n")
            os.close(wfd)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            sys.stderr = sys.__stderr__  # fd 2, now /dev/null: the pipe is closed

        # until ready, errors go to the parent, which prints them
        sys.stderr = open(wfd, "w", buffering=1, closefd=False)
        code = _main(address, mountpoint, opts, ready, _syslog, before)
        sys.stderr.flush()
        os._exit(code)
    os.close(wfd)
    with open(rfd, "rb") as pipe:
        said = pipe.readline().decode(errors="replace")
        if said == "ok\n":
            return 0
        said += pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    sys.stderr.write(said or "py9pfuse: the mount process died before it was ready\n")
    return 1
