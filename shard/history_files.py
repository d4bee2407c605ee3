"""Where a durable shard's history lives on disk: the WAL's own records, kept while a run needs them.

Why the WAL's records and not a second history log: every effect is already
written once, encoded, checksummed and fsynced, into a WAL record. A history
log of the same format would write every byte twice and double the fsync
traffic of the write path, to hold exactly the bytes the WAL holds. So the
history of a durable run is a compact index into WAL records (`History` in
`shard.history`: per stretch of the run's effects that sits in one record, the
journal position it starts at, the record's place and how many of the run's
effects in the record come before it), and this module keeps the files those
records are in and reads them back.

A record's place is one int, `file_no << 40 | offset`: `file_no` indexes this
shard's table of file names (a WAL segment is named by its first LSN, so a
name is unique for the life of the directory), and `offset` is where the
record's header starts. A read checks the header and the record's crc32c as
the WAL reader does; a record the index names must be whole, so anything
else is a CorruptionError naming the file and offset. Records handed to the
WAL writer but not yet durable are read from the payloads kept here until the
writer reports them durable, so a replay always sees every acknowledged write.

Retention. Snapshot retention deletes WAL segments that the oldest retained
snapshot covers. Just before, each of those that history still needs gets a
second name in `history/` (a hard link: nothing is copied, and every place
keeps its meaning, since a name is looked up in `wal/` first and then in
`history/`); the WAL directory stays a gapless run of segments, which
recovery checks. Each file counts the extents that name it; a run deleted
takes its extents away, and a file in `history/` that no extent names is
removed at the next retention, which follows a durable snapshot (by then no
retained snapshot can bring the deleted run back without the WAL that
deletes it again). The step is bracketed by the failpoints
`history.before_retain` and `history.after_retain`; a crash anywhere in it
leaves every file the index names under one of its two names.

Compaction, copying the live records out of a history file that is mostly
dead, is not done: a file is kept whole while any extent names it.
"""

from __future__ import annotations

import os

from crc32c import crc32c

from inmem.errors import CorruptionError
from inmem.files import fsync_dir, make_dirs
from inmem.wal.failpoints import failpoint, register
from inmem.wal.record import CRC, FORMAT_VERSION, HEADER, HEADER_SIZE, PREFIX_CRC, RECORD_BYTES_MAX
from inmem.wal.segment import list_segments, parse_segment_name, segment_name

from .effects import decode_batch

OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
_CACHE_RECORDS = 8

for _name in ("history.before_retain", "history.after_retain"):
    register(_name)

_unpack_header = HEADER.unpack_from
_unpack_crc = CRC.unpack_from


def history_dir(directory) -> str:
    return os.path.join(os.fspath(directory), "history")


class HistoryFiles:
    """The files one durable shard's history index points into."""

    def __init__(self, directory):
        self.wal = os.path.join(os.fspath(directory), "wal")
        self.dir = history_dir(directory)
        make_dirs(self.dir, tighten=True)
        #: file_no -> segment file name (None: removed)
        self.names: list[str | None] = []
        self._no_of: dict[str, int] = {}
        #: file_no -> how many history extents name it
        self.live: list[int] = []
        self._fds: dict[int, int] = {}
        #: place -> (lsn, payload) of records the writer may not have made durable yet
        self.pending: dict[int, tuple] = {}
        #: the WAL writer's durable LSN (set once the writer is open)
        self.durable_lsn = lambda: 0
        self._cache: dict[int, tuple] = {}

    # -- the file table ------------------------------------------------------------

    def file_no(self, segment_first: int) -> int:
        name = segment_name(segment_first)
        no = self._no_of.get(name)
        if no is None:
            no = self._no_of[name] = len(self.names)
            self.names.append(name)
            self.live.append(0)
        return no

    def adopt(self, names: list) -> None:
        """Take over a snapshot's file table, so its places keep their meaning (empty table only)."""
        if self.names:
            raise ValueError("a history file table is adopted before anything is placed")
        for name in names:
            self._no_of[name] = len(self.names)
            self.names.append(name)
            self.live.append(0)

    def place(self, segment_first: int, offset: int) -> int:
        return self.file_no(segment_first) << OFFSET_BITS | offset

    def _open(self, file_no: int) -> int:
        """A read descriptor on the file: its name in wal/, else the one in history/."""
        name = self.names[file_no]
        for d in (self.wal, self.dir):
            try:
                return os.open(os.path.join(d, name), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                continue
        raise CorruptionError(f"the history file {name} is in neither {self.wal} nor {self.dir}",
                              path=os.path.join(self.dir, name), offset=0)

    # -- writing ---------------------------------------------------------------------

    def handed_over(self, lsn: int, place: int, payload) -> None:
        """A record is with the WAL writer: readable from memory until it is durable."""
        pending = self.pending
        pending[place] = (lsn, payload)
        if len(pending) > 8:
            durable = self.durable_lsn()
            for p in [p for p, (l, _) in pending.items() if l < durable]:
                del pending[p]

    # -- reading -----------------------------------------------------------------------

    def run_effects(self, place: int, run_id: str) -> list:
        """Every effect of run `run_id` in the record at `place`, in order."""
        key = (place, run_id)
        out = self._cache.get(key)
        if out is None:
            _count, batches = decode_batch(self.read(place))
            out = []
            for rid, effs in batches:
                if rid == run_id:
                    out.extend(effs)
            if len(self._cache) >= _CACHE_RECORDS:
                self._cache.clear()
            self._cache[key] = out
        return out

    def read(self, place: int):
        """The payload of the record at `place`, checked as the WAL reader checks it."""
        held = self.pending.get(place)
        if held is not None:
            return held[1]
        file_no, offset = place >> OFFSET_BITS, place & OFFSET_MASK
        fd = self._fds.get(file_no)
        if fd is None:
            fd = self._fds[file_no] = self._open(file_no)
        head = os.pread(fd, HEADER_SIZE, offset)
        if len(head) < HEADER_SIZE:
            self._bad(file_no, offset, "the record's header runs past the end of the file")
        length, rtype, version = _unpack_header(head)
        if version != FORMAT_VERSION or not 0 < rtype < 256 or length > RECORD_BYTES_MAX:
            self._bad(file_no, offset, f"no record header here (type {rtype}, version {version}, "
                                       f"length {length})")
        body = os.pread(fd, length + CRC.size, offset + HEADER_SIZE)
        if len(body) < length + CRC.size:
            self._bad(file_no, offset, "the record runs past the end of the file")
        payload = body[:length]
        if crc32c(payload, PREFIX_CRC[rtype]) != _unpack_crc(body, length)[0]:
            self._bad(file_no, offset, "the record's crc32c does not match its bytes")
        return payload

    def _bad(self, file_no: int, offset: int, why: str):
        name = self.names[file_no]
        raise CorruptionError(f"history record at {name}:{offset} is unreadable: {why}",
                              path=os.path.join(self.dir, name or "?"), offset=offset)

    def forget_cached(self) -> None:
        self._cache.clear()

    # -- retention -------------------------------------------------------------------

    def retain(self, below_lsn: int) -> tuple[list, list]:
        """Before WAL retention deletes the segments below `below_lsn`: keep what history needs.

        Each of those segments that an extent names gets a second name in
        `history/` (a hard link: no byte is copied, every place keeps its
        meaning), and the files there that no extent names any more are
        removed. Returns (linked, removed) paths. The directory is fsynced
        before the WAL deletes anything.
        """
        segments = list_segments(self.wal)
        keep = []
        for (first, path), (following, _) in zip(segments, segments[1:]):
            if following > below_lsn:
                continue
            name = os.path.basename(path)
            no = self._no_of.get(name)
            if no is not None and self.live[no] and not os.path.exists(os.path.join(self.dir, name)):
                keep.append((path, os.path.join(self.dir, name)))
        doomed = []
        with os.scandir(self.dir) as entries:
            for entry in entries:
                if parse_segment_name(entry.name) is None:
                    continue
                no = self._no_of.get(entry.name)
                if no is None or not self.live[no]:
                    doomed.append((no, entry.path))
        if not keep and not doomed:
            return [], []
        failpoint("history.before_retain")
        for src, dst in keep:
            try:
                os.link(src, dst)
            except FileExistsError:
                pass
        for no, path in doomed:
            if no is not None:
                self._close(no)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        fsync_dir(self.dir)
        failpoint("history.after_retain")
        return [d for _, d in keep], [p for _, p in doomed]

    def bytes_on_disk(self) -> int:
        total = 0
        with os.scandir(self.dir) as entries:
            for entry in entries:
                if entry.is_file():
                    total += entry.stat().st_size
        return total

    def _close(self, no: int) -> None:
        fd = self._fds.pop(no, None)
        if fd is not None:
            os.close(fd)
        self._cache.clear()

    def close(self) -> None:
        for no in list(self._fds):
            self._close(no)


def record_places(wal: str, start_lsn: int, sizes: list) -> list | None:
    """(segment first LSN, offset) of the records from `start_lsn` on, one per payload size.

    Recovery read these records with the WAL reader; this walks their headers
    again to learn where each sits. None when the walk disagrees with what was
    read (a region skipped as damaged shifts the records after it), and the
    caller keeps those effects in memory instead.
    """
    out = []
    want = len(sizes)
    if not want:
        return out
    lsn = None
    segments = list_segments(wal)
    for i, (first, path) in enumerate(segments):
        if i + 1 < len(segments) and segments[i + 1][0] <= start_lsn:
            continue  # ends before the records wanted
        if out and first != lsn:
            return None
        with open(path, "rb", buffering=0) as f:
            data = f.readall()
        lsn, offset, end = first, 0, len(data)
        while offset + HEADER_SIZE <= end and len(out) < want:
            length, rtype, version = _unpack_header(data, offset)
            if rtype == 0:
                break
            if lsn >= start_lsn:
                if length != sizes[len(out)]:
                    return None
                out.append((first, offset))
            offset += HEADER_SIZE + length + CRC.size
            lsn += 1
        if len(out) == want:
            return out
    return None
