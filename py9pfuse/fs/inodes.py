"""Inodes the kernel knows, each tied to a 9P file by its qid.path.

Each live inode may hold one walked (never opened) fid; opens clone it. The kernel's
lookup count says when the inode, and with it the fid, can go (forget).
"""

from __future__ import annotations

import errno as E
from dataclasses import dataclass

import pyfuse3

from ..client import Attr, Fid
from ..proto import Qid

ROOT = pyfuse3.ROOT_INODE
_MASK = (1 << 64) - 1
_FRESH = 1 << 63  # numbers for reused qid.paths count up from here
_KIND = 0x80 | 0x02  # QTDIR, QTSYMLINK: a qid.path now of another kind is another file


@dataclass(slots=True)
class Inode:
    ino: int
    qid: Qid
    parent: int  # the directory it was last looked up in, to walk it again by name
    name: str
    fid: Fid | None = None  # walked lazily: a readdir of 10,000 names walks nothing
    lookups: int = 0
    attr: Attr | None = None
    cache_key: tuple | None = None  # what the page cache holds: (version, mtime, size)
    seen: int = 0  # the table's clock when attr was last known to be current
    removed: bool = False  # we removed its last name: its qid.path may come back reused
    readaheads: list | None = None  # of its open handles: dropped on change


class InodeTable:
    def __init__(self, root_fid: Fid, root_attr: Attr):
        self.root = Inode(ROOT, root_fid.qid, ROOT, "", root_fid, 1, root_attr)
        self.inodes: dict[int, Inode] = {ROOT: self.root}
        # parent -> {name: ino}, as last seen (per directory: no tuple per name, which
        # is 6 MB over 100,000 files)
        self.names: dict[int, dict[str, int]] = {}
        self.reused: dict[int, int] = {}  # qid.path -> ino, for a qid.path given anew
        self._fresh = _FRESH
        self.clock = 0  # counts attribute updates: which of two is the newer

    def touch(self, node: Inode) -> None:
        """node.attr is current now (just read from the server, or changed by us)."""
        self.clock += 1
        node.seen = self.clock

    def ino_for(self, qid: Qid) -> int:
        """qid.path shifted by 2, so that no file takes FUSE's 0 or the root's 1."""
        if qid.path == self.root.qid.path:
            return ROOT
        if (ino := self.reused.get(qid.path)) is not None:
            return ino
        ino = (qid.path + 2) & _MASK
        return ino if ino > ROOT else ino + 2

    def place(self, qid: Qid, seen: int | None = None) -> int:
        """The inode number for qid now. A file we removed, whose inode the kernel still
        holds, may see its qid.path handed to a new file (ext4 reuses inode numbers at
        once): the new file gets a number of its own, or the kernel would take it for
        the dead one (a dead directory answers ENOENT, or ESTALE to a lookup). So does
        a qid.path that comes back as another kind of file (a removal we did not see)."""
        ino = self.ino_for(qid)
        node = self.inodes.get(ino)
        if node is not None and ((node.removed and (seen is None or node.seen <= seen))
                                 or (node.qid.type ^ qid.type) & _KIND):
            self._fresh += 1
            ino = self.reused[qid.path] = self._fresh
        return ino

    def get(self, ino: int) -> Inode:
        try:
            return self.inodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(E.ESTALE) from None

    def remember(self, attr: Attr, parent: int, name: str,
                 seen: int | None = None) -> tuple[Inode, bool]:
        """The inode for attr's file, made if new; counts one lookup. (inode, was it new)
        seen: the clock when attr was read, if before now (a listing read at opendir):
        attributes known to be newer are kept, as a write since then made them."""
        ino = self.place(attr.qid, seen)
        node = self.inodes.get(ino)
        new = node is None
        if new:
            node = self.inodes[ino] = Inode(ino, attr.qid, parent, name)
        if seen is None or node.seen <= seen:  # else a rename or write since is newer
            if ino != ROOT:
                self.rename(node, parent, name)
            node.qid = attr.qid
            node.attr = attr
            self.touch(node)
        node.lookups += 1
        return node, new

    def rename(self, node: Inode, parent: int, name: str) -> None:
        self._unname(node)
        node.parent, node.name = parent, name
        self.names.setdefault(parent, {})[name] = node.ino

    def _unname(self, node: Inode) -> None:
        d = self.names.get(node.parent)
        if d is not None and d.get(node.name) == node.ino:
            del d[node.name]
            if not d:
                del self.names[node.parent]

    def removed(self, parent: int, name: str, is_dir: bool) -> None:
        """parent/name was removed by us: if that was its last name, it is dead."""
        d = self.names.get(parent)
        ino = d.pop(name, None) if d is not None else None
        node = self.inodes.get(ino) if ino is not None else None
        if node is not None and (is_dir or node.attr is None or node.attr.nlink <= 1):
            node.removed = True
            self.touch(node)  # a listing read before this still shows the dead file

    def forget(self, ino: int, n: int) -> Inode | None:
        """Drop n lookups; the inode if it is now gone (its fid is the caller's to clunk)."""
        node = self.inodes.get(ino)
        if node is None or ino == ROOT:
            return None
        node.lookups -= n
        if node.lookups > 0:
            return None
        del self.inodes[ino]
        if self.reused.get(node.qid.path) == ino:
            del self.reused[node.qid.path]
        self._unname(node)
        return node
