"""py9pfuse: mount any 9P server (9P2000, 9P2000.u, 9P2000.L) on Linux through FUSE."""

__version__ = "0.1.0"

from .client import connect  # noqa: E402  (the scripting entry point)
