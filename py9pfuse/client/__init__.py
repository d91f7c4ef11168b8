"""The 9P client: dial strings, the session, fids, and one adapter per dialect."""

from .api import Client, connect
from .dial import Address, parse
from .dialects import NOW, Attr, Dialect, DirEntry, SetAttr, StatFs, dialect_for
from .errors import ConnectionLost, DialError, P9Error, ServerError, VersionError
from .fids import Fid
from .session import Session, negotiate, open_session
