"""The one exception the codec raises."""

from __future__ import annotations


class ProtocolError(Exception):
    """Bytes that are not a valid 9P message, or a message that cannot be encoded.

    The text says what was wrong and where (message type, field, byte offset), so a
    log line built from it is enough to find the fault in a capture. `type` and `tag`
    are set when the header was readable: a server can then answer that tag with an
    error instead of dropping the connection.
    """

    def __init__(self, text: str, type: int | None = None, tag: int | None = None):
        super().__init__(text)
        self.type = type
        self.tag = tag
