"""The bundled 9P2000 server: a ramfs with synthetic files, for the demo and the tests."""

from .ramfs import Node, demo_tree
from .serve import Server, serve_unix
