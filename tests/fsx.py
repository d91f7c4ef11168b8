"""fsx for py9pfuse: random reads, writes, appends, truncates, renames and reopens on a
few files through a real mount, each checked byte for byte against an in-memory model.

    python tests/fsx.py --ops 100000 --seed 1 --server diod|bundled [--keep-going]
                        [-o cache=none] [--avoid-known-bugs]
    python tests/fsx.py --ops 2000 --seed 1 --local /tmp/dir     (checks the checker)

As a module: run(ops, seed, server) mounts the server with foreground() (the daemon
stays our child, so its fid counts can be asked for), exercises it and returns a Report;
Fsx(dir, seed).run(n) does the operations alone on any directory.

After the operations every file is closed and removed, the kernel's caches are dropped
(its forgotten inodes are clunked), and the client's fid count must be back at its
baseline; on diod, after unmount, diod must not have logged "unclunked fids".

Server differences: none needed for the operations used here. All files live in one
directory, so renames stay within it (the bundled 9P2000 server, like 9P2000 itself,
cannot move a file to another directory); truncation works on both (9P2000: wstat of
the length, or Topen with OTRUNC for length 0). Files unlinked or renamed over are closed
first, so no operation depends on a server keeping a removed file open.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import errno as E
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mounts  # noqa: E402
import peers  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
MAX_IO = 256 * KIB
MAX_LEN = 4 * MIB  # no file grows beyond this (writes far past the end make holes)
# Written data is a slice of one random pattern of prime length at a random start (the
# op's "salt"): data shifted, stale or from another op does not match by chance, and a
# mismatch report can say which recent write the bytes found came from.
PATTERN_LEN = 1_048_573
_rng0 = random.Random(0x9F5)
PATTERN = _rng0.randbytes(PATTERN_LEN)
PATTERN2 = PATTERN + PATTERN[:MAX_IO]

WEIGHTS = {  # op: weight
    "write": 24, "read": 24, "seqread": 8, "append": 6, "truncate": 6, "write2": 4,
    "rename": 3, "reopen": 5, "fsync": 3, "fullcheck": 2, "stat": 4, "unlink": 1,
    "trunc_open": 1,
}


# py9pfuse bugs that fsx and load.py found (reproducers: test_fsx.py). fsx's
# --avoid-known-bugs skirts "stale read-ahead" and "O_APPEND reordered"; load.py's skirts
# "qid.path reused" and "stale listing attributes" (and it never appends more than 16 KiB).
# py9pfuse bugs this checker found, all fixed since; --avoid-known-bugs still steers
# clear of them, to compare runs with and without
KNOWN_BUGS = {
    "stale read-ahead": "a handle's read-ahead (fs/readahead.py) is dropped only by a write"
    " through that same handle: after an ftruncate (even through it), or a write or append"
    " through another fd, its reads return the old bytes or a false end of file",
    "SIGUSR1 too early": "the daemon installs its SIGUSR1 (counts) handler only after the"
    " mount is visible: a SIGUSR1 in between kills it (ready_for_counts() waits)",
    "qid.path reused": "inode numbers are qid.path + 2, and an inode still in the table"
    " keeps its walked fid: when the server reuses a qid.path (diod on ext4 reuses a freed"
    " inode number at once) before the kernel's FORGET of the old file, the new file gets"
    " the old file's inode and fid, and every open of it fails with ENOENT",
    "stale listing attributes": "opendir reads the listing with attributes, and readdir"
    " hands them to the kernel later as READDIRPLUS entries: the kernel takes them as newer"
    " than a write that finished in between, so a file's size goes back (stat shows the"
    " old size and reads through the page cache stop there)",
    "fid walk race": "P9Operations._fid checks node.fid, awaits a Twalk, then sets"
    " node.fid: callers at once (opens of a file just renamed or listed) each walk a fid,"
    " and all but the last are never clunked, not even at unmount",
    "O_APPEND reordered": "on a server that opens with O_APPEND (diod), a write(2) larger"
    " than one Twrite goes as several Twrites in flight, which the server appends in"
    " whatever order they arrive",
}


class Mismatch(Exception):
    """The mount disagreed with the model (message: the full report)."""


@dataclasses.dataclass
class Report:
    server: str
    seed: int
    ops: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    elapsed: float = 0.0
    short_reads: int = 0  # preads that returned less than asked before the end of file
    per_op: dict = dataclasses.field(default_factory=collections.Counter)
    failures: list = dataclasses.field(default_factory=list)  # mismatches (text)
    problems: list = dataclasses.field(default_factory=list)  # leak checks that failed
    counts: dict = dataclasses.field(default_factory=dict)  # name -> counts() sample
    unclunked: list = dataclasses.field(default_factory=list)  # diod's lines about us

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems

    def summary(self) -> str:
        rate = self.ops / self.elapsed if self.elapsed else 0.0
        lines = [f"fsx {self.server} seed {self.seed}: {self.ops} ops in {self.elapsed:.1f} s"
                 f" ({rate:.0f} ops/s), {self.bytes_written / MIB:.1f} MiB written,"
                 f" {self.bytes_read / MIB:.1f} MiB read, {self.short_reads} short reads",
                 "  ops: " + " ".join(f"{k}={v}" for k, v in sorted(self.per_op.items()))]
        for name, c in self.counts.items():
            lines.append(f"  counts {name}: {c}")
        if self.unclunked is not None:
            lines.append(f"  diod unclunked lines: {self.unclunked or 'none'}")
        if self.failures:
            lines.append(f"  {len(self.failures)} mismatches; the first"
                         f" {min(len(self.failures), 10)}:")
        lines += [f"  MISMATCH: {f.splitlines()[1]}" for f in self.failures[:10]]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append("  result: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def _size(rng: random.Random, top: int = MAX_IO) -> int:
    """1 .. top, log-uniform: as many small I/Os as large ones."""
    return max(1, min(top, int(2 ** rng.uniform(0, top.bit_length()))))


class Fsx:
    def __init__(self, root: str, seed: int, *, nfiles: int = 4, keep_going: bool = False,
                 out: Callable[[str], None] = print, history: int = 20,
                 avoid_known_bugs: bool = False):
        self.root, self.seed, self.keep_going, self.out = root, seed, keep_going, out
        # avoid_known_bugs keeps clear of two py9pfuse bugs (see KNOWN_BUGS), so that the
        # rest can be tested: the main fd is closed before the file is changed other than
        # by a write through it (write2 and append write through a second fd, truncate is
        # then by path, not ftruncate), and appends stay within one Twrite.
        self.avoid = avoid_known_bugs
        self.rng = random.Random(seed)
        self.names = [f"f{i}" for i in range(nfiles)]
        self.model: dict[str, bytearray] = {}  # name -> content, for files that exist
        self.fds: dict[str, int] = {}  # name -> its main fd (O_RDWR), while open
        self.seqpos: dict[str, int] = {}  # name -> where the next seqread on its fd goes
        self.log: collections.deque[str] = collections.deque(maxlen=history)
        self.writes: collections.deque[tuple] = collections.deque(maxlen=history)
        self.report = Report("local", seed)
        self.opno = 0

    # --- plumbing

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def note(self, text: str) -> None:
        self.log.append(f"#{self.opno} {text}")

    def data(self, size: int) -> tuple[int, bytes]:
        salt = self.rng.randrange(PATTERN_LEN)
        return salt, PATTERN2[salt:salt + size]

    def fd(self, name: str) -> int:
        """The main fd of an existing file, opened (O_RDWR) if need be."""
        fd = self.fds.get(name)
        if fd is None:
            fd = self.fds[name] = os.open(self.path(name), os.O_RDWR)
            self.seqpos[name] = 0
        return fd

    def create(self, name: str) -> int:
        fd = self.fds[name] = os.open(self.path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL,
                                      0o644)
        self.model[name] = bytearray()
        self.seqpos[name] = 0
        return fd

    def close(self, name: str) -> None:
        fd = self.fds.pop(name, None)
        if fd is not None:
            os.close(fd)

    def existing(self) -> str | None:
        have = [n for n in self.names if n in self.model]
        return self.rng.choice(have) if have else None

    def _pwrite_all(self, fd: int, data: bytes, off: int) -> None:
        done = 0
        while done < len(data):
            n = os.pwrite(fd, data[done:], off + done)
            if n <= 0:
                return self.fail(f"pwrite returned {n} at {off + done}")
            done += n

    def _model_write(self, name: str, off: int, data: bytes) -> None:
        m = self.model[name]
        if off > len(m):
            m.extend(bytes(off - len(m)))
        m[off:off + len(data)] = data

    def _read(self, fd: int, off: int, size: int) -> bytes:
        """pread until size bytes or the end of file (a short read is counted, not wrong:
        py9pfuse answers a file that had length 0 at open with one Tread per read)."""
        parts, pos, end, short = [], off, off + size, False
        while pos < end:
            b = os.pread(fd, end - pos, pos)
            if not b:
                break
            self.report.short_reads += short  # short, and yet not the end of file
            short = pos + len(b) < end
            parts.append(b)
            pos += len(b)
        got = b"".join(parts)
        self.report.bytes_read += len(got)
        return got

    def check_read(self, name: str, off: int, size: int, got: bytes, what: str) -> None:
        want = bytes(self.model[name][off:off + size])
        if got != want:
            self.fail(self.describe(name, off, got, want, what))

    def describe(self, name: str, off: int, got: bytes, want: bytes, what: str) -> str:
        lines = [f"{what} of {name} at {off}: got {len(got)} bytes, expected {len(want)}"
                 f" (model length {len(self.model[name])})"]
        n = min(len(got), len(want))
        diff = [i for i in range(n) if got[i] != want[i]] if got[:n] != want[:n] else []
        if diff:
            first, last = diff[0], diff[-1]
            lines.append(f"  differing bytes: {len(diff)} in file range [{off + first},"
                         f" {off + last}] (offsets {off + first:#x}..{off + last:#x})")
            # runs of differing bytes, the first few
            runs, start = [], diff[0]
            for a, b in zip(diff, diff[1:] + [None]):
                if b != a + 1:
                    runs.append((start, a))
                    start = b
            for a, b in runs[:8]:
                lines.append(f"    [{off + a}, {off + b}] ({b - a + 1} bytes): got"
                             f" {got[a:a + 16].hex()} want {want[a:a + 16].hex()}"
                             f" {self.whence(name, off + a, got[a:min(b + 1, a + 16)])}")
            if len(runs) > 8:
                lines.append(f"    ... {len(runs) - 8} more runs")
        if len(got) != len(want):
            lines.append(f"  length differs: the read ended at {off + len(got)}, the model"
                         f" at {off + len(want)}")
        return "\n".join(lines)

    def whence(self, name: str, pos: int, got: bytes) -> str:
        """Which recent write the bytes found look like (stale data shows where from)."""
        if got and not any(got):
            return "(zeros)"
        for opno, wname, off, salt, size in reversed(self.writes):
            if off <= pos < off + size:
                k, n = salt + pos - off, min(len(got), off + size - pos)
                if PATTERN2[k:k + n] == got[:n]:
                    return f"(the data of op #{opno}, a write to {wname} at {off})"
        # written at another offset? look for the bytes in the pattern near any salt
        for opno, wname, off, salt, size in reversed(self.writes):
            i = PATTERN2.find(got[:8], salt, salt + size)
            if len(got) >= 8 and i >= 0:
                return (f"(bytes of op #{opno}'s write to {wname} at {off}, its data offset"
                        f" {i - salt}, i.e. file offset {off + i - salt})")
        return ""

    def fail(self, text: str) -> None:
        full = (f"fsx MISMATCH seed {self.seed} op #{self.opno} in {self.root}\n{text}\n"
                f"last {len(self.log)} ops:\n  " + "\n  ".join(self.log))
        self.report.failures.append(full)
        self.out(full)
        if not self.keep_going:
            raise Mismatch(full)
        self.resync()

    def resync(self) -> None:
        """--keep-going: take what the server now has as the model, and go on."""
        for name in list(self.fds):
            self.close(name)
        for name in list(self.model):
            try:
                with open(self.path(name), "rb") as f:
                    self.model[name] = bytearray(f.read())
            except FileNotFoundError:
                del self.model[name]
        for name in self.names:
            if name not in self.model and os.path.exists(self.path(name)):
                with open(self.path(name), "rb") as f:
                    self.model[name] = bytearray(f.read())

    # --- the operations

    def op_write(self, name: str | None = None, second: bool = False) -> None:
        name = name or self.rng.choice(self.names)
        m = self.model.get(name)
        size = _size(self.rng)
        cur = len(m) if m is not None else 0
        r = self.rng.random()
        if r < 0.1:  # far past the end: a hole
            off = cur + self.rng.randrange(1, 2 * MIB)
        elif r < 0.25:  # at or just past the end
            off = cur + self.rng.randrange(0, 64)
        else:
            off = self.rng.randrange(0, max(cur, 1))
        off = min(off, MAX_LEN - size)
        salt, data = self.data(size)
        kind = "write2" if second else "write"
        self.note(f"{kind} {name} off {off} size {size} salt {salt}"
                  f"{' (create)' if m is None else ''} len {cur}->{max(cur, off + size)}")
        if m is None:
            fd = self.create(name)
        elif second:  # through a second fd, opened for this write: as another process
            if self.avoid:
                self.close(name)
            fd = os.open(self.path(name), os.O_WRONLY)
        else:
            fd = self.fd(name)
        try:
            self._pwrite_all(fd, data, off)
        finally:
            if second and m is not None:
                os.close(fd)
        self._model_write(name, off, data)
        self.writes.append((self.opno, name, off, salt, size))
        self.report.bytes_written += size

    def op_write2(self) -> None:
        self.op_write(self.existing(), second=True)

    def op_read(self, seq: bool = False) -> None:
        name = self.existing()
        if name is None:
            return self.op_write()
        cur = len(self.model[name])
        size = _size(self.rng) if not seq else self.rng.randrange(4 * KIB, MAX_IO + 1)
        if seq:
            off = self.seqpos.get(name, 0) if name in self.fds else 0
            if off >= cur:
                off = 0
        elif self.rng.random() < 0.05:
            off = cur + self.rng.randrange(0, 4096)  # at or past the end: nothing
        else:
            off = self.rng.randrange(0, max(cur, 1))
        self.note(f"{'seqread' if seq else 'read'} {name} off {off} size {size} len {cur}")
        fd = self.fd(name)
        got = self._read(fd, off, size)
        self.seqpos[name] = off + len(got)
        self.check_read(name, off, size, got, "pread")

    def op_seqread(self) -> None:
        self.op_read(seq=True)

    def op_append(self) -> None:
        name = self.existing()
        if name is None:
            return self.op_write()
        size = _size(self.rng, 32 * KIB if self.avoid else MAX_IO)
        cur = len(self.model[name])
        if cur + size > MAX_LEN:
            return self.op_truncate(name)
        salt, data = self.data(size)
        self.note(f"append {name} size {size} salt {salt} len {cur}->{cur + size}")
        if self.avoid:
            self.close(name)
        fd = os.open(self.path(name), os.O_WRONLY | os.O_APPEND)
        try:
            done = 0
            while done < size:
                done += os.write(fd, data[done:])
        finally:
            os.close(fd)
        self._model_write(name, cur, data)
        self.writes.append((self.opno, name, cur, salt, size))
        self.report.bytes_written += size

    def op_truncate(self, name: str | None = None) -> None:
        name = name or self.existing()
        if name is None:
            return self.op_write()
        cur = len(self.model[name])
        r = self.rng.random()
        new = (0 if r < 0.1 else self.rng.randrange(0, cur + 1) if r < 0.6
               else min(MAX_LEN, cur + self.rng.randrange(1, MIB)))
        self.note(f"truncate {name} {cur}->{new}")
        if self.avoid:
            self.close(name)
            os.truncate(self.path(name), new)
        else:
            os.ftruncate(self.fd(name), new)
        m = self.model[name]
        del m[new:]
        m.extend(bytes(new - len(m)))

    def op_rename(self) -> None:
        src = self.existing()
        if src is None:
            return self.op_write()
        dst = self.rng.choice([n for n in self.names if n != src])
        self.note(f"rename {src} -> {dst}{' (replacing it)' if dst in self.model else ''}")
        self.close(dst)  # what is renamed over is closed first (see the module docstring)
        os.rename(self.path(src), self.path(dst))
        self.model[dst] = self.model.pop(src)
        if src in self.fds:  # an open fd follows its file
            self.fds[dst] = self.fds.pop(src)
            self.seqpos[dst] = self.seqpos.pop(src, 0)

    def op_reopen(self) -> None:
        name = self.existing()
        if name is None:
            return self.op_write()
        self.note(f"reopen {name}")
        self.close(name)
        if self.rng.random() < 0.5:
            self.fd(name)  # else lazily by the next op that needs it

    def op_trunc_open(self) -> None:
        name = self.existing()
        if name is None:
            return self.op_write()
        self.note(f"open {name} O_TRUNC len {len(self.model[name])}->0")
        self.close(name)
        self.fds[name] = os.open(self.path(name), os.O_RDWR | os.O_TRUNC)
        self.seqpos[name] = 0
        self.model[name].clear()

    def op_fsync(self) -> None:
        name = self.existing()
        if name is None:
            return self.op_write()
        self.note(f"fsync {name}")
        os.fsync(self.fd(name))

    def op_fullcheck(self, name: str | None = None) -> None:
        name = name or self.existing()
        if name is None:
            return self.op_write()
        self.note(f"fullcheck {name} len {len(self.model[name])}")
        self.full_read(name)

    def full_read(self, name: str) -> None:
        fd = os.open(self.path(name), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            parts = []
            while chunk := os.read(fd, MIB):
                parts.append(chunk)
        finally:
            os.close(fd)
        got = b"".join(parts)
        self.report.bytes_read += len(got)
        self.check_read(name, 0, MAX_LEN + 1, got, "full read through a fresh open")
        if size != len(self.model[name]):
            self.fail(f"fstat of a fresh open of {name}: size {size}, model"
                      f" {len(self.model[name])}")

    def op_stat(self) -> None:
        name = self.existing()
        if name is None:
            return self.op_write()
        want = len(self.model[name])
        self.note(f"stat {name} len {want}")
        st = os.stat(self.path(name)).st_size
        fst = os.fstat(self.fds[name]).st_size if name in self.fds else st
        if st != want or fst != want:
            self.fail(f"size of {name}: stat {st}, fstat {fst}, model {want}")
        listed = sorted(n for n in os.listdir(self.root) if n in self.names)
        if listed != sorted(self.model):
            self.fail(f"listing {listed}, model {sorted(self.model)}")

    def op_unlink(self) -> None:
        name = self.existing()
        if name is None:
            return self.op_write()
        self.note(f"unlink {name}")
        self.close(name)
        os.unlink(self.path(name))
        del self.model[name]

    # --- the run

    def run(self, nops: int) -> Report:
        ops, weights = zip(*WEIGHTS.items())
        methods = {op: getattr(self, f"op_{op}") for op in ops}
        plan = self.rng.choices(ops, weights, k=nops)
        t0 = time.monotonic()
        try:
            for self.opno, op in enumerate(plan, 1):
                try:
                    methods[op]()
                except OSError as e:
                    self.fail(f"{op}: unexpected {E.errorcode.get(e.errno, e.errno)}: {e}")
                self.report.per_op[op] += 1
                self.report.ops = self.opno
            self.opno += 1
            for name in sorted(self.model):  # the last word: every file, whole
                self.note(f"final fullcheck {name}")
                self.full_read(name)
        finally:
            self.report.elapsed = time.monotonic() - t0
            for name in list(self.fds):
                with contextlib.suppress(OSError):
                    self.close(name)
        return self.report

    def remove_all(self) -> None:
        for name in self.names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name))


# --- mounting

@contextlib.contextmanager
def serving(server: str, workdir: str | None = None
            ) -> Iterator[tuple[str, str, peers.Peer | None]]:
    """(address, aname, peer or None) of a fresh server: "bundled" or a peer's name
    (workdir: where the peer's temp dir and export go, peers.start's default if None)."""
    if server == "bundled":
        with mounts.bundled_server() as addr:
            yield addr, "", None
    else:
        with peers.start(server, workdir=workdir) as peer:
            yield peer.address, peer.aname, peer


def catches_usr1(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(ln.split()[1], 16) for ln in f if ln.startswith("SigCgt:"))
    return bool(mask >> (10 - 1) & 1)  # SIGUSR1 is 10


def ready_for_counts(fg: mounts.Foreground, timeout: float = 10.0) -> None:
    """Wait until the daemon catches SIGUSR1: it mounts first and installs its handler
    after, and a SIGUSR1 in between kills it (a py9pfuse bug, see test_fsx.py)."""
    deadline = time.monotonic() + timeout
    while not catches_usr1(fg.proc.pid):
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon never installed its SIGUSR1 handler")
        time.sleep(0.01)


def drop_caches() -> None:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def settle(fg: mounts.Foreground, timeout: float = 15.0) -> dict:
    """Drop the kernel's caches (it forgets its inodes: we clunk their fids), then wait
    until nothing is in flight and the fid count holds still; the last counts."""
    drop_caches()
    deadline = time.monotonic() + timeout
    last = fg.counts()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        c = fg.counts()
        if c["in_flight"] == 0 and c["fids"] == last["fids"]:
            return c
        last = c
    return last


def run(ops: int, seed: int, server: str = "diod", options: Sequence[str] = (),
        keep_going: bool = False, out: Callable[[str], None] = print,
        fid_slack: int = 2, avoid_known_bugs: bool = False) -> Report:
    """Mount server (started here), run the operations, check for leaks; the Report."""
    with serving(server) as (address, aname, peer):
        label = server + (f" -o {','.join(options)}" if options else "")
        with mounts.foreground(address, *options, aname=aname) as fg:
            ready_for_counts(fg)
            base = fg.counts()
            work = os.path.join(fg.mnt, f"fsx-{seed}")
            os.mkdir(work)
            fsx = Fsx(work, seed, keep_going=keep_going, out=out,
                      avoid_known_bugs=avoid_known_bugs)
            try:
                rep = fsx.run(ops)
            except Mismatch:
                rep = fsx.report
            rep.server = label
            rep.counts["baseline"] = base
            rep.counts["closed"] = fg.counts()
            fsx.remove_all()
            os.rmdir(work)
            end = rep.counts["after drop_caches"] = settle(fg)
            if end["fids"] > base["fids"] + fid_slack or end["handles"] or end["in_flight"]:
                rep.problems.append(f"fids not back at baseline: {base} -> {end}")
        if peer is not None:
            time.sleep(0.5)  # diod logs it as the connection closes
            rep.unclunked = [ln for ln in peer.log().splitlines() if "unclunked" in ln]
            if rep.unclunked:
                rep.problems.append(f"diod: {rep.unclunked}")
        else:
            rep.unclunked = None
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--server", default="diod", help="bundled, or a peer: diod, ...")
    ap.add_argument("--keep-going", action="store_true", help="report every mismatch")
    ap.add_argument("-o", dest="options", action="append", default=[],
                    help="mount option(s), e.g. cache=none")
    ap.add_argument("--local", metavar="DIR", help="no mount: run on DIR (checks fsx)")
    ap.add_argument("--avoid-known-bugs", action="store_true",
                    help="keep clear of the py9pfuse bugs in KNOWN_BUGS")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    opts = [o for v in a.options for o in v.split(",") if o]
    print(f"fsx: {a.ops} ops, seed {seed}, "
          f"{'local ' + a.local if a.local else 'server ' + a.server} {' '.join(opts)}"
          f"{' (avoiding known bugs)' if a.avoid_known_bugs else ''}", flush=True)
    if a.local:
        work = os.path.join(a.local, f"fsx-{seed}")
        os.mkdir(work)
        fsx = Fsx(work, seed, keep_going=a.keep_going, avoid_known_bugs=a.avoid_known_bugs)
        try:
            rep = fsx.run(a.ops)
        except Mismatch:
            rep = fsx.report
        finally:
            fsx.remove_all()
            os.rmdir(work)
        rep.unclunked = None
    else:
        rep = run(a.ops, seed, a.server, opts, a.keep_going,
                  out=lambda s: print(s, flush=True), avoid_known_bugs=a.avoid_known_bugs)
    print(rep.summary(), flush=True)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
