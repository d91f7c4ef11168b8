"""A TCP proxy on loopback that delays every byte by DELAY_MS in each direction, so that
a request/reply costs 2*DELAY_MS more, as across a network, while many requests may be
in flight at once (order is kept; nothing is serialized).

    python bench/delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS

Plain threads and blocking sockets: recv and send release the GIL, and the proxy must
cost as little CPU as it can, since on a 2-core machine it shares the cores with the
client and the server it measures (a trio version took a third of a core at 250 MiB/s).
"""

from __future__ import annotations

import collections
import socket
import sys
import threading
import time


def pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    queue: collections.deque = collections.deque()
    ready = threading.Condition()
    done = []

    def deliver() -> None:
        while True:
            with ready:
                while not queue and not done:
                    ready.wait()
                if not queue:
                    break
                when, data = queue.popleft()
            if (wait := when - time.monotonic()) > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    try:
        while data := src.recv(1 << 20):
            with ready:
                queue.append((time.monotonic() + delay, data))
                ready.notify()
    except OSError:
        pass
    with ready:
        done.append(True)
        ready.notify()
    sender.join()


def handle(client: socket.socket, target: int, delay: float) -> None:
    try:
        server = socket.create_connection(("127.0.0.1", target))
    except OSError:
        client.close()
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=pump, args=(server, client, delay), daemon=True)
    back.start()
    pump(client, server, delay)
    back.join()
    client.close()
    server.close()


def main(listen: int, target: int, delay_ms: float) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen))
    ls.listen(16)
    while True:
        client, _ = ls.accept()
        threading.Thread(target=handle, args=(client, target, delay_ms / 1000),
                         daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
