"""The py9pfuse command."""

from __future__ import annotations

import sys

import click

from . import __version__
from .proto import ProtocolError, decode, trace_line
from .proto.capture import loads


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="py9pfuse")
def cli() -> None:
    """Mount any 9P server on Linux through FUSE."""


@cli.command("decode")
@click.argument("capture", type=click.File("r"))
def decode_cmd(capture) -> None:
    """Print a recorded capture (tests/captures/*.9p) as a chatty9p trace."""
    try:
        cap = loads(capture.read())
        for direction, dialect, frame in cap.records:
            click.echo(trace_line(decode(frame, dialect)))
    except ProtocolError as e:
        raise click.ClickException(f"{capture.name}: {e}") from None


def main() -> None:
    cli(prog_name="py9pfuse")


if __name__ == "__main__":
    sys.exit(main())
