"""Fingerprints of a listing, group by group, so that an unchanged listing costs the database
nothing (migration 0008; :meth:`qrsync.store.runs.ListingWriter.stage`).

Most runs find nothing new. Each group of :data:`GROUP_ROWS` rules, in listing order, is
serialised once (``marshal`` of plain tuples: fast, and the same rules always give the same
bytes) and hashed; while the groups equal those of the account's last complete listing they
wait in a :class:`Spool` (the first in memory, the others on disk) instead of being staged and
merged. A listing equal to the last one to its end writes no rule and no staged row; the first
group that differs sends the spooled groups and everything after it down the ordinary path.
"""

from __future__ import annotations

import hashlib
import marshal
import struct
import tempfile
from collections.abc import Iterator
from itertools import islice
from typing import IO, NamedTuple

from qrsync.model import Rule

GROUP_ROWS = 5000
"""Rules per digest; stored with the digests, so that changing it only costs one full merge."""
_MARSHAL_VERSION = 2
"""Version 2 writes no back-references: equal rules give equal bytes whatever objects hold them."""
_HEADER = struct.Struct("<16sI")


class Group(NamedTuple):
    rules: list[Rule]
    data: bytes
    digest: bytes


def chunked(rules: Iterator[Rule]) -> Iterator[list[Rule]]:
    """``rules`` in lists of :data:`GROUP_ROWS`."""
    while chunk := list(islice(rules, GROUP_ROWS)):
        yield chunk


def digested(rules: Iterator[Rule]) -> Iterator[Group]:
    """``rules`` in groups of :data:`GROUP_ROWS`, each with its serialised form and digest."""
    for chunk in chunked(rules):
        data = marshal.dumps([tuple(rule) for rule in chunk], _MARSHAL_VERSION)
        yield Group(chunk, data, hashlib.blake2b(data, digest_size=16).digest())


class Spool:
    """Groups set aside, read back in order: the first in memory (most listings are one
    group), the others on disk (a temporary file, gone when closed)."""

    def __init__(self) -> None:
        self._first: Group | None = None
        self._file: IO[bytes] | None = None
        self.groups = 0

    def add(self, group: Group) -> None:
        if self.groups == 0:
            self._first = group
            self.groups = 1
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="qrsync-listing-")
        self._file.write(_HEADER.pack(group.digest, len(group.data)))
        self._file.write(group.data)
        self.groups += 1

    def replay(self) -> Iterator[Group]:
        if self._first is not None:
            yield self._first
        if self._file is None:
            return
        self._file.seek(0)
        for _ in range(self.groups - 1):
            digest, size = _HEADER.unpack(self._file.read(_HEADER.size))
            data = self._file.read(size)
            yield Group([Rule(*row) for row in marshal.loads(data)], data, digest)

    def close(self) -> None:
        self._first = None
        if self._file is not None:
            self._file.close()
            self._file = None
