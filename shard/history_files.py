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

Compaction (`shard.history_compaction`) copies the live part of a file in
`history/` that is mostly dead into a new file there, named
`<source stem>.<token>.hist`, and leaves beside it a *move note*,
`<source name>.moved`: the source's name, the new file's, and which offset
went where. Any place that names the source, in memory or in a snapshot,
reads the same record through the note (`resolve_moved` translates a
recovered index), so the source can go as soon as the note is durable. A
note goes at the retention after every retained snapshot was taken once no
place in memory named its source any more.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left

import msgpack

from inmem.checksum import crc32c

from inmem.errors import CorruptionError
from inmem.recovery.errors import describe
from inmem.files import NotRegularFile, fsync_dir, make_dirs, open_regular, replace_durably
from inmem.wal.failpoints import failpoint, register
from inmem.wal.record import CRC, HEADER, HEADER_SIZE, PREFIX_CRCS, RECORD_BYTES_MAX
from inmem.wal.segment import list_segments, parse_segment_name, segment_name

from .effects import decode_batch

OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
#: decoded records kept for the next read: a replay or the search index reads a
#: record's effects one after another, never many records back (each is up to
#: `max_pending_writes` effects, so each cached one costs as many tuples)
_CACHE_RECORDS = 2

for _name in ("history.before_retain", "history.after_retain"):
    register(_name)

_unpack_header = HEADER.unpack_from
_unpack_crc = CRC.unpack_from

#: a compacted history file, and the note that says where a source's records went
COMPACTED_SUFFIX = ".hist"
MOVED_SUFFIX = ".moved"
TMP_SUFFIX = ".tmp"
_MOVED_MAGIC = b"IMHMOVE1"
_MOVED_CRC = struct.Struct("<I")
_LITTLE = sys.byteorder == "little"


def is_history_file(name: str) -> bool:
    return parse_segment_name(name) is not None or name.endswith(COMPACTED_SUFFIX)


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
        #: file_no -> the path its descriptor was opened on
        self._paths: dict[int, str] = {}
        #: place -> (lsn, payload) of records the writer may not have made durable yet
        self.pending: dict[int, tuple] = {}
        #: the WAL writer's durable LSN (set once the writer is open)
        self.durable_lsn = lambda: 0
        self._cache: dict[int, tuple] = {}
        #: names a compaction is writing: no retention removes them meanwhile
        self.busy: set[str] = set()
        #: move note name -> the WAL's next LSN once no place in memory named its source
        self.moved_done: dict[str, int] = {}
        #: bumped whenever a run gives up its extents (a file may have died a little)
        self.released = 0
        # The segment records were last placed in, and its file number shifted
        # into place: every record of a segment asks, and a number never changes.
        self._placing = (-1, 0)

    # -- the file table ------------------------------------------------------------

    def file_no(self, segment_first: int) -> int:
        """The file number of the WAL segment starting at `segment_first`."""
        return self.number(segment_name(segment_first))

    def number(self, name: str) -> int:
        """The file number of `name` (a new one if the table does not have it yet)."""
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
        named = [name for name in names if name is not None]  # None: a file removed
        for name in named:  # a snapshot's table: names of files in wal/ or history/ only
            if (type(name) is not str or os.path.basename(name) != name
                    or name.startswith(".") or not is_history_file(name)):
                raise ValueError(f"{name!r} in the history file table is not a history file's name")
        if len(set(named)) != len(named):
            raise ValueError("the history file table names a file twice")
        self._placing = (-1, 0)
        for name in names:
            self._no_of[name] = len(self.names)
            self.names.append(name)
            self.live.append(0)

    def place(self, segment_first: int, offset: int) -> int:
        first, high = self._placing
        if first != segment_first:
            high = self.file_no(segment_first) << OFFSET_BITS
            self._placing = (segment_first, high)
        return high | offset

    def _open(self, file_no: int) -> int:
        """A read descriptor on the file: its name in wal/, else the one in history/."""
        name = self.names[file_no]
        for d in (self.wal, self.dir):
            path = os.path.join(d, name)
            try:
                fd = open_regular(path)
            except FileNotFoundError:
                continue
            except OSError as exc:  # a directory or a FIFO under the name, no permission
                why = exc.kind if isinstance(exc, NotRegularFile) else exc.strerror or exc
                raise CorruptionError(f"the history file {path} cannot be read: {why}",
                                      path=path, offset=0) from None
            self._paths[file_no] = path
            return fd
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
            payload = self.read(place)
            try:
                _count, batches = decode_batch(payload)
                out = []
                for rid, effs in batches:
                    if rid == run_id:
                        out.extend(effs)
                bad = next((e for e in out if type(e) is not tuple or not e
                            or type(e[0]) is not int), None)
            except Exception as exc:  # its crc held: what it holds is not a batch
                self._bad(place >> OFFSET_BITS, place & OFFSET_MASK,
                          f"the record is not a batch of effects ({describe(exc)})")
            if bad is not None:
                self._bad(place >> OFFSET_BITS, place & OFFSET_MASK,
                          f"the record holds {bad!r:.80}, which is not an effect")
            if len(self._cache) >= _CACHE_RECORDS:
                self._cache.clear()
            self._cache[key] = out
        return out

    def read(self, place: int):
        """The payload of the record at `place`, checked as the WAL reader checks it."""
        held = self.pending.get(place)
        if held is not None:
            return held[1]
        head, body, length = self._fetch(place)
        return body[:length]

    def read_record(self, place: int) -> bytes:
        """The whole record at `place` (header, payload, crc) as it is on disk, checked."""
        head, body, _length = self._fetch(place)
        return head + body

    def _header(self, place: int):
        """(fd, file number, offset, header bytes) of the record at `place`."""
        file_no, offset = place >> OFFSET_BITS, place & OFFSET_MASK
        fd = self._fds.get(file_no)
        if fd is None:
            fd = self._fds[file_no] = self._open(file_no)
        head = self._pread(fd, file_no, HEADER_SIZE, offset)
        if len(head) < HEADER_SIZE:
            self._bad(file_no, offset, "the record's header runs past the end of the file")
        return fd, file_no, offset, head

    def _fetch(self, place: int):
        fd, file_no, offset, head = self._header(place)
        length, rtype, version = _unpack_header(head)
        prefix_crc = PREFIX_CRCS[version]
        if prefix_crc is None or not 0 < rtype < 256 or length > RECORD_BYTES_MAX:
            self._bad(file_no, offset, f"no record header here (type {rtype}, version {version}, "
                                       f"length {length})")
        body = self._pread(fd, file_no, length + CRC.size, offset + HEADER_SIZE)
        if len(body) < length + CRC.size:
            self._bad(file_no, offset, "the record runs past the end of the file")
        if crc32c(memoryview(body)[:length], prefix_crc[rtype]) != _unpack_crc(body, length)[0]:
            self._bad(file_no, offset, "the record's crc32c does not match its bytes")
        return head, body, length

    def record_size(self, place: int) -> int:
        """The bytes the record at `place` takes in its file (header and crc included)."""
        head = self._header(place)[3]
        return HEADER_SIZE + _unpack_header(head)[0] + CRC.size

    def path_of(self, place: int) -> str:
        """The path of the file holding the record at `place`, for an error about it."""
        file_no = place >> OFFSET_BITS
        if file_no >= len(self.names):
            return ""
        return self._paths.get(file_no) or os.path.join(self.dir, self.names[file_no] or "?")

    def _pread(self, fd: int, file_no: int, size: int, offset: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as exc:  # EIO: the disk lost it
            self._bad(file_no, offset, exc.strerror or str(exc))

    def _bad(self, file_no: int, offset: int, why: str):
        path = self.path_of(file_no << OFFSET_BITS)
        raise CorruptionError(f"history record at {path}:{offset} is unreadable: {why}",
                              path=path, offset=offset)

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
        busy = self.busy
        with os.scandir(self.dir) as entries:
            for entry in entries:
                name = entry.name
                if name in busy:
                    continue
                if name.endswith(TMP_SUFFIX):
                    # what a compaction wrote before a crash, or gave up on (a
                    # directory is not: nothing here makes one)
                    if name[:-len(TMP_SUFFIX)] not in busy and not entry.is_dir(
                            follow_symlinks=False):
                        doomed.append((None, entry.path))
                    continue
                if name.endswith(MOVED_SUFFIX):
                    # A note goes once every retained snapshot was taken after
                    # no place in memory named its source (LSNs only grow).
                    done = self.moved_done.get(name)
                    if done is not None and done < below_lsn:
                        doomed.append((None, entry.path))
                        del self.moved_done[name]
                    continue
                if not is_history_file(name):
                    continue
                no = self._no_of.get(name)
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

    # -- move notes (see shard.history_compaction) -------------------------------------

    def write_moved(self, source: str, target: str, old: array, new: array) -> str:
        """Write the note that `source`'s records at `old` offsets are in `target` at `new`.

        Durable when this returns (file and directory fsynced); returns its name.
        """
        name = source + MOVED_SUFFIX
        body = _MOVED_MAGIC + msgpack.packb([source, target, i64_to_le(old), i64_to_le(new)],
                                            use_bin_type=True)
        data = body + _MOVED_CRC.pack(crc32c(body))
        self.busy.add(name)
        try:
            replace_durably(os.path.join(self.dir, name), data, TMP_SUFFIX)
        finally:
            self.busy.discard(name)
        return name

    def read_moved(self) -> dict:
        """source name -> (target name, old offsets, new offsets), from every note in history/."""
        out = {}
        with os.scandir(self.dir) as entries:
            notes = [e.path for e in entries if e.name.endswith(MOVED_SUFFIX)]
        for path in notes:
            try:
                with open(open_regular(path), "rb") as f:
                    data = f.read()
            except OSError as exc:  # a directory or a FIFO under the name, no permission
                why = exc.kind if isinstance(exc, NotRegularFile) else exc.strerror or exc
                raise CorruptionError(f"the history move note {path} cannot be read: {why}",
                                      path=path, offset=0) from None
            body, tail = data[:-_MOVED_CRC.size], data[-_MOVED_CRC.size:]
            try:
                if (len(data) < len(_MOVED_MAGIC) + _MOVED_CRC.size
                        or not body.startswith(_MOVED_MAGIC)
                        or _MOVED_CRC.unpack(tail)[0] != crc32c(body)):
                    raise ValueError("bad magic or crc32c")
                source, target, old, new = msgpack.unpackb(body[len(_MOVED_MAGIC):], raw=False)
                old, new = i64_from_le(old), i64_from_le(new)
                if len(old) != len(new) or os.path.basename(path) != source + MOVED_SUFFIX:
                    raise ValueError("its offsets or its name do not add up")
                _check_moved(source, target, old, new)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise CorruptionError(f"the history move note {path} is damaged ({exc})",
                                      path=path, offset=0) from None
            out[source] = (target, old, new)
        return out

    def resolve_moved(self, histories) -> int:
        """Point every extent of `histories` that names a moved file at where its record went.

        A recovered index may come from a snapshot taken before a compaction
        moved records; the notes still say where each went (a chain of moves
        is followed to its end). Returns the extents changed.
        """
        moved = self.read_moved()
        if not moved:
            return 0
        _check_no_cycle(moved, self.dir)
        by_no = {self._no_of[name]: entry for name, entry in moved.items() if name in self._no_of}
        changed = 0
        live = self.live
        for h in histories:
            loc = h.ext_loc
            for i, place in enumerate(loc):
                if place < 0 or (place >> OFFSET_BITS) not in by_no:
                    continue
                p = place
                while (p >> OFFSET_BITS) in by_no:  # ends: the notes form no cycle
                    target, old, new = by_no[p >> OFFSET_BITS]
                    off = p & OFFSET_MASK
                    j = bisect_left(old, off)
                    if j == len(old) or old[j] != off:
                        break  # not copied: only a run deleted before the move named it
                    p = self.number(target) << OFFSET_BITS | new[j]
                    tno = p >> OFFSET_BITS
                    if target in moved and tno not in by_no:
                        by_no[tno] = moved[target]
                if p != place:
                    live[place >> OFFSET_BITS] -= 1
                    live[p >> OFFSET_BITS] += 1
                    loc[i] = p
                    changed += 1
        self._cache.clear()
        return changed

    def bytes_on_disk(self) -> int:
        total = 0
        with os.scandir(self.dir) as entries:
            for entry in entries:
                try:
                    if entry.is_file():
                        total += entry.stat().st_size
                except FileNotFoundError:
                    pass  # removed meanwhile by retention or compaction
        return total

    def _close(self, no: int) -> None:
        self._paths.pop(no, None)
        fd = self._fds.pop(no, None)
        if fd is not None:
            os.close(fd)
        self._cache.clear()

    def close(self) -> None:
        for no in list(self._fds):
            self._close(no)


def _check_moved(source: str, target: str, old: array, new: array) -> None:
    """ValueError unless a compaction can have written this note.

    It copies records in file order into a new file of its own in history/:
    the target is a plain history file name other than the source, and both
    offset lists rise strictly within one file's offsets.
    """
    if (type(target) is not str or target == source or os.path.basename(target) != target
            or target.startswith(".") or not is_history_file(target)):
        raise ValueError(f"its target {target!r} is not another history file's name")
    for label, offsets in (("old", old), ("new", new)):
        if offsets and (offsets[0] < 0 or offsets[-1] > OFFSET_MASK or any(
                a >= b for a, b in zip(offsets, offsets[1:]))):
            raise ValueError(f"its {label} offsets do not rise within a file")


def _check_no_cycle(moved: dict, directory: str) -> None:
    """CorruptionError if following the notes from some file comes back to it."""
    for start in moved:
        seen = {start}
        name = moved[start][0]
        while name in moved:
            if name in seen:
                path = os.path.join(directory, start + MOVED_SUFFIX)
                raise CorruptionError(
                    f"the history move note {path} is damaged (following the notes from "
                    f"{start} comes back to {name}: no compaction writes that)",
                    path=path, offset=0)
            seen.add(name)
            name = moved[name][0]


def i64_to_le(a: array) -> bytes:
    """An array of int64 as little-endian bytes, on any host (the on-disk order)."""
    if _LITTLE:
        return a.tobytes()
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def i64_from_le(data) -> array:
    """The array of int64 that `i64_to_le` wrote."""
    a = array("q")
    a.frombytes(data)
    if not _LITTLE:
        a.byteswap()
    return a
