"""The 9P protocol as bytes and values: no sockets, no trio, no FUSE.

    frame = encode(Twalk(fid=1, newfid=2, wnames=["usr", "glenda"], tag=7), "9P2000")
    framer = Framer(msize=8192); framer.feed(frame)
    for f in framer.frames():
        msg = decode(f, "9P2000")

Anything that is not a valid message raises ProtocolError and nothing else.
"""

from .constants import *  # noqa: F401,F403  (the protocol's numbers are its vocabulary)
from .errors import ProtocolError
from .errstr import ename_for, errno_for
from .framer import Framer
from .messages import *  # noqa: F401,F403
from .messages import MESSAGES, Message, decode, encode, message_types
from .stat import Dirent, Stat, pack_dirents, pack_stat, pack_stats, unpack_dirents, unpack_stats
from .trace import fmt_message, trace_line
from .wire import Qid
