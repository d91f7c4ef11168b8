"""A TCP proxy on loopback that delays every byte by DELAY_MS in each direction, so that
a request/reply costs 2*DELAY_MS more, as across a network, while many requests may be
in flight at once (order is kept; nothing is serialized).

    python bench/delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS
"""

from __future__ import annotations

import sys

import trio


async def pump(src: trio.SocketStream, dst: trio.SocketStream, delay: float) -> None:
    send, recv = trio.open_memory_channel(10_000)

    async def deliver():
        async for when, data in recv:
            await trio.sleep_until(when)
            await dst.send_all(data)
        await dst.send_eof()

    async with trio.open_nursery() as n:
        n.start_soon(deliver)
        async with send:
            while data := await src.receive_some(1 << 16):
                await send.send((trio.current_time() + delay, data))


async def handle(client: trio.SocketStream, target: int, delay: float) -> None:
    try:
        server = await trio.open_tcp_stream("127.0.0.1", target)
    except OSError:
        await client.aclose()
        return
    async with client, server:
        async with trio.open_nursery() as n:
            n.start_soon(pump, client, server, delay)
            n.start_soon(pump, server, client, delay)


async def main(listen: int, target: int, delay_ms: float) -> None:
    await trio.serve_tcp(lambda s: handle(s, target, delay_ms / 1000), listen,
                         host="127.0.0.1")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
