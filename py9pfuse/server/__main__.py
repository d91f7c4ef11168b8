"""python -m py9pfuse.server SOCKET: serve the demo tree on a unix socket until killed."""

import sys

import trio

from . import demo_tree, serve_unix


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m py9pfuse.server SOCKET-PATH")
    try:
        trio.run(serve_unix, sys.argv[1], demo_tree())
    except KeyboardInterrupt:
        pass


main()
