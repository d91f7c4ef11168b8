"""Client-session throughput against real servers: `python bench/session_bench.py [PEER...]`.

For each server (default: diod and py9p) it prints, measured in one run:
sequential read and write through the session (no FUSE) with one request in flight
and with the default window, small requests per second (one at a time, and 32 in
flight), and a plain read of the same file from the local disk. JSON goes to
bench/results-session.json. Figures are for comparing, not promises: the machine is
shared and small.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import trio

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

import py9pfuse  # noqa: E402
from peers import start  # noqa: E402
from py9pfuse import proto as p  # noqa: E402
from py9pfuse.client.session import DEFAULT_WINDOW  # noqa: E402

SIZES = {"diod": 256 << 20, "ganesha": 256 << 20}  # others are slower: smaller files
DEFAULT_SIZE = 32 << 20
SMALL_OPS = 5000


def mib_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / (1 << 20)


async def read_all(fs, fid, size: int, window: int) -> float:
    s = fs.session
    step = s.iounit(fid) * window
    t = time.perf_counter()
    off = 0
    while off < size:
        data = await s.read(fid, off, min(step, size - off), window=window)
        if not data:
            break
        off += len(data)
    assert off == size, (off, size)
    return time.perf_counter() - t


async def write_all(fs, fid, size: int, window: int) -> float:
    s = fs.session
    step = s.iounit(fid) * window
    block = os.urandom(step)
    t = time.perf_counter()
    off = 0
    while off < size:
        n = min(step, size - off)
        off = await fs.write_at(fid, off, block[:n])
    return time.perf_counter() - t


async def small_ops(fs, fid, parallel: int) -> float:
    s = fs.session
    msg = p.Tgetattr if s.dialect == p.P9_2000_L else p.Tstat
    args = (fid.num, p.GETATTR_BASIC) if s.dialect == p.P9_2000_L else (fid.num,)
    per_task = SMALL_OPS // parallel

    async def worker():
        for _ in range(per_task):
            await s.rpc(msg(*args))

    t = time.perf_counter()
    async with trio.open_nursery() as n:
        for _ in range(parallel):
            n.start_soon(worker)
    return per_task * parallel / (time.perf_counter() - t)


async def bench(peer, size: int) -> dict:
    if peer.export is None:
        raise SystemExit(f"{peer.name} keeps its files in memory: nothing to read locally")
    path = os.path.join(peer.export, "bench.dat")
    with open(path, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
    local = mib_s(size, time.perf_counter() - t)
    out = {"server": peer.name, "file_mib": size >> 20, "local_read_mib_s": local}
    async with py9pfuse.connect(peer.address, aname=peer.aname) as fs:
        out["dialect"], out["msize"] = fs.session.dialect, fs.session.msize
        for window in (1, DEFAULT_WINDOW):
            async with fs.open("/bench.dat") as fid:
                out[f"read_w{window}_mib_s"] = mib_s(size, await read_all(fs, fid, size, window))
            async with fs.open_for_write("/written.dat") as fid:
                out[f"write_w{window}_mib_s"] = mib_s(size, await write_all(fs, fid, size, window))
        async with fs.fid("/") as root:
            out["rpc_1_per_s"] = await small_ops(fs, root, 1)
            out["rpc_32_per_s"] = await small_ops(fs, root, 32)
    return out


def main(names: list[str]) -> None:
    rows = []
    for name in names or ["diod", "py9p"]:
        with start(name) as peer:
            rows.append(trio.run(bench, peer, SIZES.get(name, DEFAULT_SIZE)))
    w = DEFAULT_WINDOW
    head = (f"{'server':8} {'dialect':9} {'msize':>7} {'MiB':>5} | {'read w1':>8} {f'read w{w}':>8}"
            f" {'write w1':>8} {f'write w{w}':>9} | {'rpc/s 1':>8} {'rpc/s 32':>9} |"
            f" {'local read':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['server']:8} {r['dialect']:9} {r['msize']:>7} {r['file_mib']:>5} |"
              f" {r['read_w1_mib_s']:>8.0f} {r[f'read_w{w}_mib_s']:>8.0f}"
              f" {r['write_w1_mib_s']:>8.0f} {r[f'write_w{w}_mib_s']:>9.0f} |"
              f" {r['rpc_1_per_s']:>8.0f} {r['rpc_32_per_s']:>9.0f} | {r['local_read_mib_s']:>10.0f}")
    print("(MiB/s for read/write/local read; rpc/s: Tgetattr or Tstat per second with 1 and 32"
          " in flight)")
    meta = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "rows": rows}
    (HERE / "results-session.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
