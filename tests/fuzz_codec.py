"""A long fuzz run of the framer and decoder: `python tests/fuzz_codec.py [N] [SEED]`.

Inputs are frames recorded from real servers (tests/captures) mutated in the ways
broken peers break them (flipped bytes, inserted and deleted runs, lying size and
count fields, truncation, several frames glued together), plus plain random bytes.
Each goes through the framer fed in random chunks, the decoder, the directory-entry
parsers and the trace formatter. The only exception allowed is ProtocolError; the
run reports any other, the slowest single input, and the peak memory.
"""

from __future__ import annotations

import pathlib
import random
import struct
import sys
import time
import traceback
import tracemalloc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from py9pfuse import proto as p  # noqa: E402
from py9pfuse.proto.capture import loads  # noqa: E402

MSIZE = 1 << 16


def corpus() -> list[tuple[str, bytes]]:
    out = []
    for path in sorted((pathlib.Path(__file__).parent / "captures").glob("*.9p")):
        out += [(d, f) for _, d, f in loads(path.read_text()).records]
    return out


def mutate(rng: random.Random, frames: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    dialect, f = rng.choice(frames)
    b = bytearray(f)
    kind = rng.randrange(8)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:  # a field that lies: a big little-endian number anywhere in the body
        at = rng.randrange(7, max(8, len(b) - 1))
        n = rng.choice([0xFFFF, 0xFFFFFFFF, len(b), len(b) + 1, 0x7FFFFFFF, MSIZE])
        b[at : at + 4] = struct.pack("<I", n)[: max(0, len(b) - at)]
    elif kind == 2:  # truncate, keeping the size field honest
        b = b[: rng.randrange(len(b))]
        if len(b) >= 4:
            b[:4] = struct.pack("<I", len(b))
    elif kind == 3:  # insert or delete a run
        at = rng.randrange(len(b))
        if rng.random() < 0.5:
            b[at:at] = rng.randbytes(rng.randint(1, 40))
        else:
            del b[at : at + rng.randint(1, 40)]
    elif kind == 4:  # the size field lies
        b[:4] = struct.pack("<I", rng.choice([0, 6, 7, len(b) - 1, len(b) + 1, MSIZE + 1,
                                              0xFFFFFFFF]))
    elif kind == 5:  # another type number on the same body
        b[4] = rng.randrange(256)
    elif kind == 6:  # several frames glued, then damaged
        b += b"".join(rng.choice(frames)[1] for _ in range(rng.randint(1, 4)))
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    else:  # random bytes
        b = bytearray(rng.randbytes(rng.randint(0, 300)))
    return rng.choice(p.DIALECTS) if rng.random() < 0.2 else dialect, bytes(b)


def run_one(rng: random.Random, dialect: str, data: bytes) -> None:
    framer = p.Framer(MSIZE)
    try:
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 64)
            framer.feed(data[pos : pos + step])
            pos += step
            for frame in framer.frames():
                try:
                    msg = p.decode(frame, dialect)
                except p.ProtocolError:
                    continue
                p.trace_line(msg)
                if msg.NAME in ("Rread", "Rreaddir"):
                    try:
                        p.unpack_stats(msg.data, dialect)
                    except p.ProtocolError:
                        pass
                    try:
                        p.unpack_dirents(msg.data)
                    except p.ProtocolError:
                        pass
                p.encode(msg, dialect)
    except p.ProtocolError:
        pass


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else 1_000_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    rng = random.Random(seed)
    frames = corpus()
    tracemalloc.start()
    t0 = time.perf_counter()
    slowest, failures = (0.0, b""), []
    for i in range(n):
        dialect, data = mutate(rng, frames)
        t = time.perf_counter()
        try:
            run_one(rng, dialect, data)
        except Exception:  # anything but ProtocolError is a finding
            failures.append((dialect, data.hex(), traceback.format_exc()))
        dt = time.perf_counter() - t
        if dt > slowest[0]:
            slowest = (dt, data)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    print(f"{n} inputs from {len(frames)} captured frames, seed {seed}: {elapsed:.1f} s, "
          f"slowest input {slowest[0] * 1e3:.2f} ms ({len(slowest[1])} bytes), "
          f"peak traced memory {peak / 1024:.0f} KiB, {len(failures)} findings")
    for dialect, hexdata, tb in failures[:10]:
        print(f"--- {dialect} {hexdata}\n{tb}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
