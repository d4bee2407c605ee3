"""A data directory whose WAL was written in record format 1 opens and goes on in format 2.

The format 1 log is made here by hand, from the documented layouts (the
record header, the batch payload, every write in its field form), as the
previous release wrote it: the store must recover it, replay its runs from
those records (their history is read back from the format 1 records), take
new writes, which are logged in format 2 beside them, and recover both after
a restart.
"""

from __future__ import annotations

import os
import struct

import msgpack

import inmem
from inmem.checksum import crc32c

RUN = "upgraded"
T0 = 1_700_000_000_000_000


def v1_record(groups: list) -> bytes:
    """One format 1 record holding `groups`, each [run id, [effect, ...]] in the field form."""
    payload = msgpack.packb([len(groups), groups])
    head = struct.pack("<IBB", len(payload), 1, 1)
    return head + payload + struct.pack("<I", crc32c(bytes([1, 1]) + payload))


def write_v1_store(path) -> None:
    create = [1, RUN, "old", None, ["t"], None, T0]
    puts = [[10, f"k{i}", msgpack.packb(f"v{i}"), 1, T0 + 1 + i, None] for i in range(5)]
    again = [10, "k0", msgpack.packb("v0 again"), 2, T0 + 10, None]
    delete = [11, "k4", None, 2, T0 + 11, None]
    records = [v1_record([[RUN, [create]]]), v1_record([[RUN, puts]]),
               v1_record([[RUN, [again, delete]]])]
    for sub in ("wal", "snapshots", "history"):
        os.makedirs(os.path.join(path, sub), mode=0o700)
    with open(os.path.join(path, "wal", f"{0:020d}.wal"), "wb") as f:
        f.write(b"".join(records))


def versions_in(path) -> list:
    out = []
    for name in sorted(os.listdir(os.path.join(path, "wal"))):
        data = open(os.path.join(path, "wal", name), "rb").read()
        off = 0
        while off + 10 <= len(data):
            length, rtype, version = struct.unpack_from("<IBB", data, off)
            if rtype == 0:
                break
            out.append(version)
            off += 6 + length + 4
    return out


def test_a_format_1_store_opens_replays_and_goes_on_in_format_2(tmp_path):
    path = str(tmp_path / "db")
    write_v1_store(path)
    with inmem.open(path, "strict", snapshot_on_close=False) as db:
        assert {k: db.kv.get(RUN, k) for k in db.kv.keys(RUN)} == \
            {"k0": "v0 again", "k1": "v1", "k2": "v2", "k3": "v3"}
        assert db.kv.get_versioned(RUN, "k0").version == 2
        assert db.replay_run(RUN, at=6).kv == {f"k{i}": f"v{i}" for i in range(5)}
        before = [db.replay_run(RUN, at=k) for k in range(9)]
        db.kv.put(RUN, "k1", "new")
        db.kv.put(RUN, "k9", "fresh")
    assert versions_in(path)[:3] == [1, 1, 1] and set(versions_in(path)[3:]) == {2}
    with inmem.open(path, "strict", snapshot_on_close=False) as db:
        assert [db.replay_run(RUN, at=k) for k in range(9)] == before
        assert db.kv.get(RUN, "k1") == "new" and db.kv.get(RUN, "k9") == "fresh"
        assert db.kv.get_versioned(RUN, "k1").version == 2
        assert db.replay_run(RUN).kv == {"k0": "v0 again", "k1": "new", "k2": "v2", "k3": "v3",
                                         "k9": "fresh"}
        assert db.info()["shards"][0]["history"]["in_memory"] == 0
