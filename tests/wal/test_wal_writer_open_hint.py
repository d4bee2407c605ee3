"""A writer continues a log where recovery's reader says it ends, without reading it again.

`WalWriter(log_end=...)` takes (newest segment, offset after its last record,
LSN after it) from a reader that read that segment to a clean end; the log it
then writes must be the log it would have written after finding the end
itself, and a hint for another segment is ignored.
"""

from __future__ import annotations

import os

from inmem.wal.reader import CleanEnd, WalReader
from inmem.wal.writer import WalWriter


def written(directory) -> list:
    return [(lsn, payload) for lsn, _t, payload in WalReader(directory)]


def read_to_end(directory):
    reader = WalReader(directory)
    list(reader)
    assert reader.outcome == CleanEnd()
    return reader


def fill(directory, payloads, **options):
    w = WalWriter(directory, "strict", **options)
    for p in payloads:
        w.append(p)
    w.close()


def test_continuing_at_the_hinted_end_writes_what_finding_it_writes(tmp_path):
    for hinted in (False, True):
        d = tmp_path / f"hinted-{hinted}"
        fill(d, [b"a%d" % i for i in range(50)], segment_bytes_max=300)
        reader = read_to_end(d)
        hint = (reader.segment, reader.end_offset, reader.next_lsn) if hinted else None
        w = WalWriter(d, "strict", segment_bytes_max=300, start_lsn=reader.next_lsn,
                      log_end=hint)
        for i in range(20):
            w.append(b"b%d" % i)
        w.close()
    assert written(tmp_path / "hinted-True") == written(tmp_path / "hinted-False")
    assert [p for _l, p in written(tmp_path / "hinted-True")] == \
        [b"a%d" % i for i in range(50)] + [b"b%d" % i for i in range(20)]
    assert sorted(os.listdir(tmp_path / "hinted-True")) == \
        sorted(os.listdir(tmp_path / "hinted-False"))


def test_a_hint_naming_another_segment_is_ignored(tmp_path):
    fill(tmp_path, [b"x%d" % i for i in range(30)], segment_bytes_max=200)
    reader = read_to_end(tmp_path)
    stale = (os.path.join(tmp_path, "00000000000000000000.wal"), 3, 1)
    assert stale[0] != reader.segment
    w = WalWriter(tmp_path, "strict", segment_bytes_max=200, start_lsn=reader.next_lsn,
                  log_end=stale)
    w.append(b"after")
    w.close()
    assert [p for _l, p in written(tmp_path)][-2:] == [b"x29", b"after"]
