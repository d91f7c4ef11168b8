"""Through-the-mount figures next to their ceilings, measured in one run:
`python bench/fuse_bench.py [--size MiB] [--files N]`.

For diod (9P2000.L) it mounts py9pfuse and times each workload three ways: through the
mount, with the raw client (the session API, no FUSE, same server, same files) and on
the local disk (the exported directory itself). It prints one table of MiB/s or
operations/s and the ratios, and writes bench/results-fuse.json. Caches are dropped
(echo 3 > /proc/sys/vm/drop_caches, as root) before the "cold" rows.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import trio

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

import py9pfuse  # noqa: E402
from mounts import mounted  # noqa: E402
from peers import start  # noqa: E402

MiB = 1 << 20


def drop_caches() -> None:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: the "cold" rows are then warm, and say so


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def read_file(path: str, bs: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, bs):
            pass
    finally:
        os.close(fd)


def write_file(path: str, size: int, bs: int) -> None:
    block = os.urandom(bs)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // bs):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def small_files(root: str, n: int) -> None:
    d = os.path.join(root, "small")
    os.makedirs(d, exist_ok=True)
    data = b"x" * 4096
    for i in range(n):
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(data)
    for i in range(n):
        with open(os.path.join(d, f"f{i}"), "rb") as f:
            f.read()
    for i in range(n):
        os.unlink(os.path.join(d, f"f{i}"))
    os.rmdir(d)


def find(path: str) -> None:
    subprocess.run(["find", path], stdout=subprocess.DEVNULL, check=True)


def source_tree(n: int) -> dict[str, bytes]:
    """n files shaped like a source tree: 40 per directory, 1-24 KiB of text each."""
    import random
    rnd = random.Random(9)
    words = [b"static", b"int", b"return", b"struct", b"void", b"if", b"(", b")", b";\n"]
    out = {}
    for i in range(n):
        size = rnd.randint(1, 24) * 1024
        body = b" ".join(rnd.choice(words) for _ in range(size // 4))[:size]
        out[f"src/m{i // 40}/f{i}.c"] = body
    return out


def make_tarball(files: dict[str, bytes]) -> str:
    import io
    import tarfile
    import tempfile
    path = os.path.join(tempfile.mkdtemp(prefix="p9tar-"), "src.tar")
    with tarfile.open(path, "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def untar(tarball: str, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    subprocess.run(["tar", "xf", tarball, "-C", dest], check=True)


def ls_l(path: str) -> None:
    subprocess.run(["ls", "-l", path], stdout=subprocess.DEVNULL, check=True)


def stat_all(path: str, names: list[str]) -> None:
    for n in names:
        os.stat(os.path.join(path, n))


def parallel_read(paths: list[str], bs: int) -> None:
    ts = [threading.Thread(target=read_file, args=(p, bs)) for p in paths]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# --- the raw client: the same work through the session, no FUSE


async def raw(peer, size: int, nfiles: int, names: list[str], src: dict) -> dict:
    out = {}
    async with py9pfuse.connect(peer.address, aname=peer.aname) as fs:
        s = fs.session
        async with fs.open("/big.dat") as fid:
            t = time.perf_counter()
            off, step = 0, s.iounit(fid) * s.window
            while data := await s.read(fid, off, step):
                off += len(data)
            out["read"] = time.perf_counter() - t
        async with fs.open_for_write("/raw-written.dat") as fid:
            block = os.urandom(MiB)
            t = time.perf_counter()
            for i in range(size // MiB):
                await fs.write_at(fid, i * MiB, block)
            await fs.fs.fsync(fid)
            out["write"] = time.perf_counter() - t
        async with fs.open_for_write("/raw-written4k.dat") as fid:
            block = os.urandom(4096)
            small = size  # 256 MiB by default, as the 1 MiB row
            t = time.perf_counter()
            for i in range(small // 4096):  # one Twrite at a time, as write(2) makes them
                await fs.write_at(fid, i * 4096, block)
            await fs.fs.fsync(fid)
            out["write4k"] = time.perf_counter() - t
        async with fs.fid("/many") as d:
            t = time.perf_counter()
            entries = await fs.fs.readdir(d)
            # what ls -l needs on .L: every entry walked and getattr'd, pipelined
            async with trio.open_nursery() as n:
                lim = trio.Semaphore(32)

                async def one(name):
                    async with lim:
                        f = await s.walk(d, [name])
                        await fs.fs.getattr(f)
                        await s.clunk(f)

                for e in entries:
                    n.start_soon(one, e.name)
            out["ls"] = time.perf_counter() - t
            t = time.perf_counter()
            for name in names:  # stat(2) one by one: walk, getattr, clunk
                f = await s.walk(d, [name])
                await fs.fs.getattr(f)
                await s.clunk(f)
            out["stat"] = time.perf_counter() - t
        t = time.perf_counter()
        await fs.mkdir("/rawsmall")
        for i in range(nfiles):
            await fs.write_bytes(f"/rawsmall/f{i}", b"x" * 4096)
        for i in range(nfiles):
            await fs.read_bytes(f"/rawsmall/f{i}")
        for i in range(nfiles):
            await fs.remove(f"/rawsmall/f{i}")
        await fs.remove("/rawsmall")
        out["small"] = time.perf_counter() - t
        t = time.perf_counter()  # find: readdir of every directory, one after another
        todo = ["/tree"]
        while todo:
            path = todo.pop()
            async with fs.fid(path) as d:
                for e in await fs.fs.readdir(d):
                    if e.qid.type & 0x80:
                        todo.append(f"{path}/{e.name}")
        out["find"] = time.perf_counter() - t
        t = time.perf_counter()  # untar: mkdir and create+write+close, one by one
        made = set()
        for name, data in src.items():
            parts = name.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                d = "/rawuntar/" + "/".join(parts[:k])
                if d not in made:
                    if not made:
                        await fs.mkdir("/rawuntar")
                    await fs.mkdir(d)
                    made.add(d)
            await fs.write_bytes(f"/rawuntar/{name}", data)
        out["untar"] = time.perf_counter() - t
    return out


def proc_stat(pid: int) -> tuple[int, float]:
    """(peak RSS in KiB, CPU seconds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return hwm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_and_fids(nfiles: int) -> list[dict]:
    """find -ls over nfiles files: peak RSS of the daemon; CPU seconds per GiB read; the
    fids the daemon holds against the inodes the kernel keeps, after the find and after
    the kernel forgot (drop_caches); and what diod still counts at unmount."""
    import re
    from mounts import foreground
    rows = []
    with start("diod") as peer:
        exp = peer.export
        for d in range(nfiles // 1000):
            os.mkdir(os.path.join(exp, f"d{d}"))
            for i in range(1000):
                open(os.path.join(exp, f"d{d}", f"f{i}"), "w").close()
        with open(os.path.join(exp, "big.dat"), "wb") as f:
            for _ in range(256):
                f.write(os.urandom(MiB))
        with foreground(peer.address, aname=peer.aname) as m:
            pid = m.proc.pid
            drop_caches()
            _, cpu0 = proc_stat(pid)
            read_file(os.path.join(m.mnt, "big.dat"), MiB)
            _, cpu1 = proc_stat(pid)
            cpu_row = {"workload": "CPU seconds per GiB read (cold)", "unit": "s/GiB",
                       "fuse": (cpu1 - cpu0) * 4, "raw": None, "local": None}
            t = timed(lambda: subprocess.run(["find", m.mnt, "-ls"],
                                             stdout=subprocess.DEVNULL, check=True))
            rss, _ = proc_stat(pid)
            after_find = m.counts()
            drop_caches()  # the kernel forgets its inodes: each FORGET clunks a fid
            t0 = time.monotonic()
            while (c := m.counts())["in_flight"] or c["fids"] > c["walked"] + 1:
                if time.monotonic() - t0 > 120:
                    break
                time.sleep(0.5)
            settle = time.monotonic() - t0
            rows.append({"workload": f"find -ls over {nfiles} files", "unit": "files/s",
                         "fuse": nfiles / t, "raw": None, "local": None,
                         "peak_rss_mib": rss / 1024,
                         "fids_after_find": after_find["fids"],
                         "inodes_after_find": after_find["inodes"],
                         "fids_after_forget": c["fids"], "inodes_after_forget": c["inodes"],
                         "forget_seconds": settle})
            rows.append(cpu_row)
        time.sleep(0.5)
        n = re.search(r"connection closed with (\d+) unclunked fids", peer.log())
        rows[0]["fids_at_unmount"] = int(n.group(1)) if n else 0
    return rows


def writeback_rows() -> list[dict]:
    """4 KiB writes (then fsync), write-through against -o writeback, on diod."""
    out = {}
    with start("diod") as peer:
        for opts in ([], ["writeback"]):
            with mounted(peer.address, *opts, aname=peer.aname) as mnt:
                name = os.path.join(mnt, f"w4-{len(opts)}")  # created anew: page-cached
                out[bool(opts)] = 32 / timed(lambda: write_file(name, 32 * MiB, 4096))
    return [{"workload": "4 KiB writes + fsync: -o writeback vs default", "unit": "MiB/s",
             "fuse": out[True], "raw": out[False], "local": None,
             "note": "raw column: the default (write-through)"}]


def classic_rows(other: str | None) -> list[dict]:
    """A 9P2000 server (py9p): sequential read and ls -l through py9pfuse, the raw
    client, and another client if given."""
    rows = []
    with start("py9p") as peer:
        exp = peer.export
        with open(os.path.join(exp, "big.dat"), "wb") as f:
            f.write(os.urandom(32 * MiB))
        os.mkdir(os.path.join(exp, "many"))
        for i in range(1000):
            open(os.path.join(exp, "many", f"e{i}"), "w").close()

        async def raw_read():
            async with py9pfuse.connect(peer.address) as fs:
                t = time.perf_counter()
                await fs.read_bytes("/big.dat")
                return time.perf_counter() - t

        raw_t = trio.run(raw_read)
        measures = {}
        with mounted(peer.address) as mnt:
            measures["py9pfuse"] = (timed(lambda: read_file(os.path.join(mnt, "big.dat"), MiB)),
                                    timed(lambda: ls_l(os.path.join(mnt, "many"))))
        if other:
            mnt = tempfile_dir()
            host, port = peer.address.split("!")[1:]
            cmd = other.format(addr=peer.address, hostport=f"{host}:{port}", mnt=mnt)
            try:
                subprocess.run(cmd, shell=True, check=True, timeout=30)
                measures[other.split()[0]] = (
                    timed(lambda: read_file(os.path.join(mnt, "big.dat"), MiB)),
                    timed(lambda: ls_l(os.path.join(mnt, "many"))))
            finally:
                subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        for who, (rd, ls) in measures.items():
            rows.append({"workload": f"py9p 9P2000, seq read, {who}", "unit": "MiB/s",
                         "fuse": 32 / rd, "raw": 32 / raw_t, "local": None})
            rows.append({"workload": f"py9p 9P2000, ls -l 1000, {who}", "unit": "entries/s",
                         "fuse": 1000 / ls, "raw": None, "local": None})
    return rows


def bundled_rows() -> list[dict]:
    """The bundled 9P2000 server (an in-memory tree): the same read and ls -l through
    py9pfuse and through the raw client; the files are made with the raw client."""
    from mounts import bundled_server
    with bundled_server() as address:
        async def setup_and_raw():
            async with py9pfuse.connect(address) as fs:
                await fs.write_bytes("/big.dat", os.urandom(32 * MiB))
                await fs.mkdir("/many")
                for i in range(1000):
                    await fs.write_bytes(f"/many/e{i}", b"")
                t = time.perf_counter()
                await fs.read_bytes("/big.dat")
                return time.perf_counter() - t

        raw_t = trio.run(setup_and_raw)
        with mounted(address) as mnt:
            rd = timed(lambda: read_file(os.path.join(mnt, "big.dat"), MiB))
            ls = timed(lambda: ls_l(os.path.join(mnt, "many")))
    return [{"workload": "bundled 9P2000, seq read", "unit": "MiB/s", "fuse": 32 / rd,
             "raw": 32 / raw_t, "local": None},
            {"workload": "bundled 9P2000, ls -l 1000", "unit": "entries/s", "fuse": 1000 / ls,
             "raw": None, "local": None}]


def tempfile_dir() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix="p9other-")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delayed_read(peer, mib: int, server_warm: bool) -> dict:
    """Sequential read through a proxy adding 2 ms of round trip: the defaults against
    one Tread per FUSE request and no read-ahead of ours (window=1,readahead=0). Each
    mount is new, so the client's cache is cold. server_warm: the server reads its file
    from its page cache, as a server on another machine with the file cached would;
    else from disk, with the caches dropped, on the cores the client uses too."""
    port = free_port()
    target = int(peer.address.rsplit("!", 1)[1])
    proxy = subprocess.Popen([sys.executable, str(HERE / "delay_proxy.py"), str(port),
                              str(target), "1"])
    local = os.path.join(peer.export, "big.dat")
    whole = mib * MiB >= os.path.getsize(local)
    try:
        time.sleep(0.5)
        got = {}
        for window, opts in ((16, []), (1, ["window=1", "readahead=0"])):
            rates = []
            for _ in range(3):  # the median of three: one read lasts under a second
                with mounted(f"tcp!127.0.0.1!{port}", *opts, aname=peer.aname) as mnt:
                    if server_warm:
                        read_file(local, MiB)
                    else:
                        drop_caches()
                    path = os.path.join(mnt, "big.dat")
                    rates.append(mib / timed(lambda: read_file(path, MiB) if whole
                                             else read_prefix(path, mib * MiB)))
            got[window] = sorted(rates)[1]
    finally:
        proxy.terminate()
        proxy.wait(5)
    return {"workload": "+2 ms RTT, server " + ("warm" if server_warm else "cold")
            + ": default vs 1 in flight", "unit": "MiB/s",
            "fuse": got[16], "raw": got[1], "local": None,
            "note": "raw column: the same mount with window=1,readahead=0; each the median"
                    " of three reads, each on a new mount"}


def read_prefix(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        left = size
        while left > 0 and (n := len(os.read(fd, min(MiB, left)))):
            left -= n
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256, help="MiB for the sequential rows")
    ap.add_argument("--files", type=int, default=2000, help="small files")
    ap.add_argument("--entries", type=int, default=10000, help="directory size for ls/stat")
    ap.add_argument("--find", type=int, default=20_000, help="files in the tree for find")
    ap.add_argument("--untar", type=int, default=3000, help="files in the source tarball")
    ap.add_argument("--tree", type=int, default=100_000, help="files for find -ls and RSS")
    ap.add_argument("--other", help="another FUSE 9P client to measure on the 9P2000 server:"
                                    " a command with {addr} and {mnt}, e.g. '9pfuse {addr} {mnt}'")
    a = ap.parse_args()
    size = a.size * MiB
    rows = []
    with start("diod") as peer:
        exp = peer.export
        with open(os.path.join(exp, "big.dat"), "wb") as f:
            for _ in range(a.size):
                f.write(os.urandom(MiB))
        os.mkdir(os.path.join(exp, "many"))
        names = [f"e{i:05d}" for i in range(a.entries)]
        for n in names:
            open(os.path.join(exp, "many", n), "w").close()
        for i in range(8):
            with open(os.path.join(exp, f"par{i}.dat"), "wb") as f:
                f.write(os.urandom(size // 8))
        for d in range(a.find // 1000):
            os.makedirs(os.path.join(exp, "tree", f"d{d}"))
            for i in range(1000):
                open(os.path.join(exp, "tree", f"d{d}", f"f{i}"), "w").close()
        src = source_tree(a.untar)
        src_mib = sum(len(b) for b in src.values()) / MiB
        tarball = make_tarball(src)
        r = trio.run(raw, peer, size, a.files, names, src)
        with mounted(peer.address, aname=peer.aname) as mnt:
            def row(name, unit, amount, fuse_s, raw_s=None, local_s=None):
                rows.append({"workload": name, "unit": unit, "amount": amount,
                             "fuse": amount / fuse_s,
                             "raw": amount / raw_s if raw_s else None,
                             "local": amount / local_s if local_s else None})

            big_m, big_l = os.path.join(mnt, "big.dat"), os.path.join(exp, "big.dat")
            drop_caches()
            local_cold = timed(lambda: read_file(big_l, MiB))
            drop_caches()
            row("seq read cold, 1 MiB reads", "MiB/s", a.size,
                timed(lambda: read_file(big_m, MiB)), r["read"], local_cold)
            row("seq read warm, 1 MiB reads", "MiB/s", a.size,
                timed(lambda: read_file(big_m, MiB)), r["read"],
                timed(lambda: read_file(big_l, MiB)))
            drop_caches()
            row("seq read cold, 4 KiB reads", "MiB/s", a.size,
                timed(lambda: read_file(big_m, 4096)), r["read"],
                timed(lambda: read_file(big_l, 4096)))
            row("seq read warm, 4 KiB reads", "MiB/s", a.size,
                timed(lambda: read_file(big_m, 4096)), r["read"],
                timed(lambda: read_file(big_l, 4096)))
            row("seq write + fsync, 1 MiB", "MiB/s", a.size,
                timed(lambda: write_file(os.path.join(mnt, "w.dat"), size, MiB)), r["write"],
                timed(lambda: write_file(os.path.join(exp, "lw.dat"), size, MiB)))
            small = size  # 256 MiB by default, as the 1 MiB row
            row("seq write + fsync, 4 KiB", "MiB/s", small // MiB,
                timed(lambda: write_file(os.path.join(mnt, "w4.dat"), small, 4096)), r["write4k"],
                timed(lambda: write_file(os.path.join(exp, "lw4.dat"), small, 4096)))
            many_m, many_l = os.path.join(mnt, "many"), os.path.join(exp, "many")
            drop_caches()
            row(f"ls -l of {a.entries} entries, cold", "entries/s", a.entries,
                timed(lambda: ls_l(many_m)), r["ls"], timed(lambda: ls_l(many_l)))
            time.sleep(1.2)  # past attr_timeout
            row(f"stat of {a.entries} files", "stats/s", a.entries,
                timed(lambda: stat_all(many_m, names)), r["stat"],
                timed(lambda: stat_all(many_l, names)))
            row(f"{a.files} files: create+write 4K, read, delete", "files/s", a.files,
                timed(lambda: small_files(mnt, a.files)), r["small"],
                timed(lambda: small_files(exp, a.files)))
            tree_m, tree_l = os.path.join(mnt, "tree"), os.path.join(exp, "tree")
            drop_caches()
            row(f"find over {a.find} files, cold", "files/s", a.find,
                timed(lambda: find(tree_m)), r["find"], timed(lambda: find(tree_l)))
            row(f"untar {len(src)} files ({src_mib:.0f} MiB)", "files/s", len(src),
                timed(lambda: untar(tarball, os.path.join(mnt, "untar"))), r["untar"],
                timed(lambda: untar(tarball, os.path.join(exp, "untar-local"))))
            pars = [os.path.join(mnt, f"par{i}.dat") for i in range(8)]
            drop_caches()
            one = timed(lambda: [read_file(p, MiB) for p in pars])  # one reader, in turn
            drop_caches()
            par = timed(lambda: parallel_read(pars, MiB))
            rows.append({"workload": "8 files: 8 readers at once vs 1 (cold)",
                         "unit": "MiB/s", "fuse": size / MiB / par, "raw": size / MiB / one,
                         "local": None, "note": "raw column: one reader through the mount"})
        rows.append(delayed_read(peer, a.size, server_warm=True))
        rows.append(delayed_read(peer, a.size, server_warm=False))
    rows += memory_and_fids(a.tree)
    rows += writeback_rows()
    rows += classic_rows(a.other)
    rows += bundled_rows()
    print(f"{'workload':46} {'unit':>10} {'py9pfuse':>10} {'raw':>10} {'local':>10}"
          f" {'fuse/raw':>8} {'fuse/local':>10}")
    for w in rows:
        f, rr, lo = w["fuse"], w["raw"], w["local"]
        print(f"{w['workload']:46} {w['unit']:>10} {f:>10.1f} {rr or 0:>10.0f} {lo or 0:>10.0f}"
              f" {(f / rr if rr else 0):>8.2f} {(f / lo if lo else 0):>10.2f}"
              + (f"  peak RSS {w['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in w else "")
              + (f"; fids/inodes after find {w['fids_after_find']}/{w['inodes_after_find']},"
                 f" after forget {w['fids_after_forget']}/{w['inodes_after_forget']}"
                 f" ({w['forget_seconds']:.0f} s), left at unmount {w['fids_at_unmount']}"
                 if "fids_after_find" in w else ""))
    (HERE / "results-fuse.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
