"""A load test for py9pfuse: many processes at once on one mount, every result checked,
while the daemon's memory and fid counts are watched for leaks.

    python tests/load.py --procs 16 --seconds 300 --server diod|bundled [-o cache=none]

Each worker works in its own directory and in one shared by all: it creates files
(small, or 1 MiB), writes them, reads them back and compares, appends, overwrites,
renames, unlinks, makes and removes subdirectories, lists and stats. It only ever changes
or deletes its own files, so it knows what each must hold; in the shared directory other
workers' files come and go, and an ENOENT there (an entry gone between the listing and
the stat or open) is an expected race, counted apart. Any other OSError, or a byte or size
that differs, is an error.

Every few seconds the parent samples the daemon's RSS (VmRSS of the py9pfuse process) and
its counts (SIGUSR1). At the end the kernel's caches are dropped (its inodes forgotten,
their fids clunked) and in_flight must reach 0. Exit status 1 on any error, on fids after
that above baseline + 50, or on RSS growing without a pause by more than 30% from the
25% point of the run to its end; on diod, also if diod logged unclunked fids at unmount.

Server differences: the bundled server speaks 9P2000, which cannot move a file to another
directory (EXDEV), so there renames stay within a directory; on other servers they also
move files between a worker's own directory and the shared one. Appends are kept within
one Twrite (16 KiB), clear of py9pfuse's "O_APPEND reordered" bug (fsx.KNOWN_BUGS).

--avoid-known-bugs keeps clear of two more (fsx.KNOWN_BUGS), so that the rest can be
tested: "qid.path reused", by putting diod's export on tmpfs (/dev/shm), which does not
hand a freed inode number out again at once, as ext4 does; and "stale listing
attributes", by not listing the shared directory while others write in it (peek then
guesses other workers' names instead of listing them).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import errno as E
import itertools
import multiprocessing
import os
import queue
import random
import sys
import time
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsx  # noqa: E402
import mounts  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
BIG = MIB
MAX_FILES = 24  # per worker: past this, a create becomes an unlink
PATTERN = random.Random(0x10AD).randbytes(2 * MIB + 64 * KIB)

WEIGHTS = {
    "create": 10, "rewrite": 4, "readback": 14, "append": 6, "pwrite": 4, "rename": 5,
    "unlink": 5, "mkdir": 3, "rmdir": 2, "ls_own": 5, "ls_shared": 5, "stat": 6, "peek": 3,
}


class Bad(Exception):
    """What the mount said differs from what the worker knows."""


class Race(Exception):
    """An expected race in the shared directory (another worker's file went away)."""


def _size(rng: random.Random, top: int) -> int:
    return max(1, min(top, int(2 ** rng.uniform(0, top.bit_length()))))


class Worker:
    def __init__(self, idx: int, root: str, seed: int, cross_dir: bool, avoid: bool = False):
        self.idx, self.root, self.cross_dir, self.avoid = idx, root, cross_dir, avoid
        self.rng = random.Random(seed)
        self.own = os.path.join(root, f"w{idx:02d}")
        self.shared = os.path.join(root, "shared")
        self.files: dict[str, bytearray] = {}  # path -> content, own files only
        self.dirs: list[str] = []  # own subdirectories (of self.own)
        self.names = itertools.count()
        self.ops = collections.Counter()
        self.races = 0
        self.errors: list[str] = []  # the first 20, as "KIND: worker N op: what"
        self.kinds = collections.Counter()  # errno name, or "mismatch": all of them
        self.written = self.read = 0

    # --- helpers

    def data(self, size: int) -> bytes:
        s = self.rng.randrange(MIB)
        return PATTERN[s:s + size]

    def write_all(self, fd: int, data: bytes, off: int | None = None) -> None:
        view, done = memoryview(data), 0
        while done < len(data):
            chunk = view[done:done + 256 * KIB]
            n = os.write(fd, chunk) if off is None else os.pwrite(fd, chunk, off + done)
            if n <= 0:
                raise Bad(f"write returned {n}")
            done += n
        self.written += len(data)

    def read_all(self, path: str) -> tuple[bytes, int]:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            parts = []
            while chunk := os.read(fd, 256 * KIB):
                parts.append(chunk)
        finally:
            os.close(fd)
        got = b"".join(parts)
        self.read += len(got)
        return got, size

    def pick(self) -> str | None:
        return self.rng.choice(list(self.files)) if self.files else None

    def where(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return self.shared
        if r < 0.45 and self.dirs:
            return self.rng.choice(self.dirs)
        return self.own

    def newname(self) -> str:
        return f"w{self.idx:02d}-{next(self.names)}"

    # --- operations (each raises Bad, Race or OSError)

    def op_create(self) -> None:
        if len(self.files) >= MAX_FILES:
            return self.op_unlink()
        path = os.path.join(self.where(), self.newname())
        size = BIG if self.rng.random() < 0.1 else _size(self.rng, 64 * KIB)
        data = self.data(size)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self.write_all(fd, data)
        finally:
            os.close(fd)
        self.files[path] = bytearray(data)

    def op_rewrite(self) -> None:
        path = self.pick()
        if path is None:
            return self.op_create()
        data = self.data(BIG if self.rng.random() < 0.1 else _size(self.rng, 64 * KIB))
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            self.files[path] = bytearray()  # truncated, whatever happens next
            self.write_all(fd, data)
        finally:
            os.close(fd)
        self.files[path] = bytearray(data)

    def op_readback(self) -> None:
        path = self.pick()
        if path is None:
            return self.op_create()
        got, size = self.read_all(path)
        want = self.files[path]
        if size != len(want):
            raise Bad(f"{path}: fstat size {size}, expected {len(want)}")
        if got != want:
            n = min(len(got), len(want))
            first = next((i for i in range(n) if got[i] != want[i]), n)
            raise Bad(f"{path}: read {len(got)} bytes, expected {len(want)}; first"
                      f" difference at {first}")

    def op_append(self) -> None:
        path = self.pick()
        if path is None:
            return self.op_create()
        data = self.data(_size(self.rng, 16 * KIB))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            self.write_all(fd, data)
        finally:
            os.close(fd)
        self.files[path] += data

    def op_pwrite(self) -> None:
        path = self.pick()
        if path is None:
            return self.op_create()
        m = self.files[path]
        off = self.rng.randrange(0, len(m) + 4096)
        data = self.data(_size(self.rng, 128 * KIB))
        fd = os.open(path, os.O_WRONLY)
        try:
            self.write_all(fd, data, off)
        finally:
            os.close(fd)
        if off > len(m):
            m.extend(bytes(off - len(m)))
        m[off:off + len(data)] = data

    def op_rename(self) -> None:
        path = self.pick()
        if path is None:
            return self.op_create()
        d = os.path.dirname(path)
        if self.cross_dir and self.rng.random() < 0.5:
            d = self.shared if d != self.shared else self.own
        new = os.path.join(d, self.newname())
        os.rename(path, new)
        self.files[new] = self.files.pop(path)

    def op_unlink(self) -> None:
        path = self.pick()
        if path is None:
            return self.op_create()
        os.unlink(path)
        del self.files[path]

    def op_mkdir(self) -> None:
        if len(self.dirs) >= 4:
            return self.op_rmdir()
        d = os.path.join(self.own, f"d{next(self.names)}")
        os.mkdir(d)
        self.dirs.append(d)

    def op_rmdir(self) -> None:
        if not self.dirs:
            return self.op_mkdir()
        d = self.dirs.pop(self.rng.randrange(len(self.dirs)))
        for path in [p for p in self.files if os.path.dirname(p) == d]:
            os.unlink(path)
            del self.files[path]
        os.rmdir(d)

    def op_ls_own(self) -> None:
        d = self.rng.choice([self.own] + self.dirs)
        got = sorted(os.listdir(d))
        want = sorted([os.path.basename(p) for p in self.files if os.path.dirname(p) == d]
                      + [os.path.basename(x) for x in self.dirs if d == self.own])
        if got != want:
            raise Bad(f"listing of {d}: {got}, expected {want}")

    def op_ls_shared(self) -> None:
        names = os.listdir(self.shared)
        mine = {os.path.basename(p) for p in self.files if os.path.dirname(p) == self.shared}
        if missing := mine - set(names):
            raise Bad(f"listing of the shared directory lacks our {sorted(missing)}")
        for name in self.rng.sample(names, min(len(names), 10)):
            try:
                os.stat(os.path.join(self.shared, name))
            except FileNotFoundError:  # another worker's file, gone since the listing
                self.races += 1

    def op_stat(self) -> None:
        path = self.pick()
        if path is None:
            return self.op_create()
        size = os.stat(path).st_size
        if size != len(self.files[path]):
            raise Bad(f"{path}: stat size {size}, expected {len(self.files[path])}")

    def op_peek(self) -> None:
        """Read another worker's file in the shared directory (its content is unknown)."""
        if self.avoid:  # a guess at a name, not a listing
            others = [f"w{self.rng.randrange(16):02d}-{self.rng.randrange(200)}"]
        else:
            others = [n for n in os.listdir(self.shared)
                      if not n.startswith(f"w{self.idx:02d}-")]
        if not others:
            return
        try:
            self.read_all(os.path.join(self.shared, self.rng.choice(others)))
        except FileNotFoundError:
            raise Race from None

    # --- the run

    def run(self, seconds: float) -> None:
        os.mkdir(self.own)
        ops, weights = zip(*{**WEIGHTS, **({"ls_shared": 0} if self.avoid else {})}.items())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            op = self.rng.choices(ops, weights)[0]
            try:
                getattr(self, f"op_{op}")()
            except Race:
                self.races += 1
            except (OSError, Bad) as e:
                self.error(op, e)
                self.resync()
            self.ops[op] += 1

    def error(self, op: str, e: Exception) -> None:
        kind = (E.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError)
                else "mismatch" if isinstance(e, Bad) else type(e).__name__)
        self.kinds[kind] += 1
        if len(self.errors) < 20 or self.kinds[kind] == 1:
            self.errors.append(f"{kind}: worker {self.idx} {op}: {e}")

    def resync(self) -> None:
        """After an error, believe the mount, so one error is not counted again and again:
        a file it cannot read is forgotten only if its directory does not list it."""
        for path in list(self.files):
            try:
                self.files[path] = bytearray(self.read_all(path)[0])
            except OSError:
                try:
                    listed = os.path.basename(path) in os.listdir(os.path.dirname(path))
                except OSError:
                    listed = False
                if not listed:
                    del self.files[path]

    def cleanup(self) -> None:
        for path in list(self.files):
            try:
                os.unlink(path)
            except OSError as e:
                self.error("cleanup", e)
        for d in self.dirs:
            try:
                os.rmdir(d)
            except OSError as e:
                self.error("cleanup", e)
        try:
            os.rmdir(self.own)
        except OSError as e:
            self.error("cleanup", e)


def _work(idx: int, root: str, seed: int, cross_dir: bool, avoid: bool, seconds: float,
          q) -> None:
    w = Worker(idx, root, seed, cross_dir, avoid)
    try:
        w.run(seconds)
    except BaseException as e:  # whatever happens, the parent hears of it
        w.error("worker", e if isinstance(e, Exception) else Exception(repr(e)))
    finally:
        w.cleanup()
        q.put((idx, dict(w.ops), w.races, dict(w.kinds), w.errors, w.written, w.read))


# --- the parent

@dataclasses.dataclass
class Sample:
    t: float
    rss_kib: int
    counts: dict

    def line(self) -> str:
        c = self.counts
        return (f"t={self.t:6.1f}s rss={self.rss_kib / 1024:7.1f} MiB fids={c['fids']:6d}"
                f" inodes={c['inodes']:6d} handles={c['handles']:4d} in_flight={c['in_flight']}")


@dataclasses.dataclass
class LoadReport:
    server: str
    procs: int
    seconds: float
    ops: int = 0
    per_op: dict = dataclasses.field(default_factory=collections.Counter)
    errors: int = 0
    error_kinds: dict = dataclasses.field(default_factory=collections.Counter)
    error_lines: list = dataclasses.field(default_factory=list)
    races: int = 0
    written: int = 0
    read: int = 0
    elapsed: float = 0.0
    samples: list = dataclasses.field(default_factory=list)  # during the run
    baseline: Sample | None = None
    after_workers: Sample | None = None
    after_forget: Sample | None = None
    unclunked: list | None = None
    problems: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.problems

    def summary(self) -> str:
        rss = [s.rss_kib for s in self.samples] or [0]
        fids = [s.counts["fids"] for s in self.samples] or [0]
        lines = [
            f"load {self.server}: {self.procs} procs, {self.elapsed:.1f} s, {self.ops} ops"
            f" ({self.ops / max(self.elapsed, 1e-9):.0f} ops/s), {self.errors} errors,"
            f" {self.races} expected races, {self.written / MIB:.0f} MiB written,"
            f" {self.read / MIB:.0f} MiB read",
            "  ops: " + " ".join(f"{k}={v}" for k, v in sorted(self.per_op.items())),
            f"  RSS MiB: first {rss[0] / 1024:.1f} last {rss[-1] / 1024:.1f}"
            f" max {max(rss) / 1024:.1f}",
            f"  fids during the run: first {fids[0]} last {fids[-1]} max {max(fids)}",
        ]
        for name in ("baseline", "after_workers", "after_forget"):
            s = getattr(self, name)
            if s is not None:
                lines.append(f"  {name}: {s.line()}")
        if self.unclunked is not None:
            lines.append(f"  diod unclunked lines: {self.unclunked or 'none'}")
        if self.error_kinds:
            lines.append("  errors by kind: " + " ".join(
                f"{k}={v}" for k, v in self.error_kinds.most_common()))
            seen = set()  # the first of each kind, then the first few of all
            firsts = [e for e in self.error_lines
                      if (k := e.split(":", 1)[0]) not in seen and not seen.add(k)]
            shown = firsts + [e for e in self.error_lines if e not in firsts][:20]
            lines += [f"  ERROR {e}" for e in shown]
            if len(shown) < self.errors:
                lines.append(f"  ... {self.errors - len(shown)} more errors")
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append("  result: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def growth_problem(samples: list[Sample]) -> str | None:
    """RSS that rose at every sample from the 25% point on, by more than 30%."""
    if len(samples) < 5:
        return None
    tail = samples[len(samples) // 4:]
    rss = [s.rss_kib for s in tail]
    if all(b >= a for a, b in zip(rss, rss[1:])) and rss[-1] > 1.3 * rss[0]:
        return f"RSS grew steadily from {rss[0]} KiB to {rss[-1]} KiB"
    return None


def run(procs: int, seconds: float, server: str = "diod", options: Sequence[str] = (),
        out: Callable[[str], None] = print, every: float = 5.0, seed: int = 1,
        fid_slack: int = 50, avoid_known_bugs: bool = False) -> LoadReport:
    label = server + (f" -o {','.join(options)}" if options else "") + \
        (" (avoiding known bugs)" if avoid_known_bugs else "")
    rep = LoadReport(label, procs, seconds)
    ctx = multiprocessing.get_context("fork")
    workdir = "/dev/shm" if avoid_known_bugs and os.path.isdir("/dev/shm") else None
    with fsx.serving(server, workdir) as (address, aname, peer):
        with mounts.foreground(address, *options, aname=aname) as fg:
            pid = fg.proc.pid
            fsx.ready_for_counts(fg)

            def sample(t0: float) -> Sample:
                return Sample(time.monotonic() - t0, rss_kib(pid), fg.counts())

            t0 = time.monotonic()
            rep.baseline = sample(t0)
            out(f"baseline: {rep.baseline.line()}")
            root = os.path.join(fg.mnt, "load")
            os.mkdir(root)
            os.mkdir(os.path.join(root, "shared"))
            q = ctx.Queue()
            workers = [ctx.Process(target=_work, args=(i, root, seed * 1000 + i,
                                                       server != "bundled", avoid_known_bugs,
                                                       seconds, q))
                       for i in range(procs)]
            results = {}
            try:
                t0 = time.monotonic()
                for w in workers:
                    w.start()
                next_at = t0
                while len(results) < procs:
                    now = time.monotonic()
                    if now >= next_at and now < t0 + seconds:
                        s = sample(t0)
                        rep.samples.append(s)
                        out(s.line())
                        next_at += every
                    try:
                        r = q.get(timeout=max(0.05, min(1.0, next_at - time.monotonic())))
                        results[r[0]] = r
                    except queue.Empty:
                        pass
                    if time.monotonic() > t0 + seconds + 120:
                        rep.problems.append(f"workers still running 120 s after the end:"
                                            f" {sorted(set(range(procs)) - set(results))}")
                        break
                rep.elapsed = time.monotonic() - t0
            finally:
                for w in workers:
                    w.join(timeout=5)
                    if w.is_alive():
                        w.kill()
                        w.join()
            for idx, ops, races, kinds, errs, written, read in results.values():
                rep.per_op.update(ops)
                rep.races += races
                rep.error_kinds.update(kinds)
                rep.error_lines += errs
                rep.written += written
                rep.read += read
            rep.ops = sum(rep.per_op.values())
            rep.errors = sum(rep.error_kinds.values())
            rep.after_workers = sample(t0)
            out(f"after the workers: {rep.after_workers.line()}")
            try:
                os.rmdir(os.path.join(root, "shared"))
                os.rmdir(root)
            except OSError as e:
                rep.problems.append(f"cleanup: {e}")
            settled = fsx.settle(fg, timeout=30)
            rep.after_forget = Sample(time.monotonic() - t0, rss_kib(pid), settled)
            out(f"after drop_caches: {rep.after_forget.line()}")
            base, end = rep.baseline.counts, settled
            if end["fids"] > base["fids"] + fid_slack:
                rep.problems.append(f"fids after forget {end['fids']} > baseline"
                                    f" {base['fids']} + {fid_slack}")
            if end["in_flight"]:
                rep.problems.append(f"{end['in_flight']} requests still in flight")
            if end["handles"]:
                rep.problems.append(f"{end['handles']} handles still open")
            if why := growth_problem(rep.samples + [rep.after_workers]):
                rep.problems.append(why)
        if peer is not None:
            time.sleep(0.5)
            rep.unclunked = [ln for ln in peer.log().splitlines() if "unclunked" in ln]
            if rep.unclunked:
                rep.problems.append(f"diod: {rep.unclunked}")
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--server", default="diod", help="bundled, or a peer: diod, ...")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", dest="options", action="append", default=[],
                    help="mount option(s), e.g. cache=none")
    ap.add_argument("--avoid-known-bugs", action="store_true",
                    help="keep clear of the py9pfuse bugs named in the docstring")
    a = ap.parse_args(argv)
    opts = [o for v in a.options for o in v.split(",") if o]
    rep = run(a.procs, a.seconds, a.server, opts, out=lambda s: print(s, flush=True),
              every=a.every, seed=a.seed, avoid_known_bugs=a.avoid_known_bugs)
    print(rep.summary(), flush=True)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
