"""A bulk load of one run: the search index reads the held history in memory, never the WAL back.

A durable store holds a run's newest history items in memory until they are
on disk and the search index has read them. Under a steady stream of writes
the index's background slices fall behind, so before this the held items
went at HELD_MAX unread, and the index later read every record back from
the WAL just to skip binary values. Now, once more than INDEX_HELD_AT are
held and the index has read everything before them, it reads them on the
spot and they go.
"""

from __future__ import annotations

import pytest

import inmem
import inmem.shard.durable as durable
from inmem.shard.history import History

#: smaller than the store's own limits, so that a few thousand writes cross them
HELD_MAX = 2048
INDEX_HELD_AT = 512


@pytest.fixture
def disk_reads(monkeypatch):
    """Calls that read history back from disk (positions below what is held)."""
    calls = []
    earlier = History._earlier

    def counted(self, start, stop):
        calls.append((self.run_id, start, stop))
        return earlier(self, start, stop)

    monkeypatch.setattr(History, "_earlier", counted)
    return calls


@pytest.mark.parametrize("mode", ["buffered", "strict"])
def test_a_bulk_load_is_indexed_from_memory_and_its_history_let_go(tmp_path, monkeypatch,
                                                                   disk_reads, mode):
    monkeypatch.setattr(durable, "HELD_MAX", HELD_MAX)
    monkeypatch.setattr(durable, "INDEX_HELD_AT", INDEX_HELD_AT)
    n = 3 * HELD_MAX + 123
    with inmem.open(tmp_path / "db", durability=mode, snapshot_on_close=False,
                    max_pending_writes=100) as db:
        run = db.begin_run(name="bulk")
        for i in range(n):
            # Mostly binary values, which the index skips; now and then a text one.
            value = f"needle{i} in a haystack" if i % 1000 == 0 else i.to_bytes(8, "little") * 12
            db.kv.put(run, f"k{i:08d}", value)
        backend = db._backend
        with backend.lock:
            journal = backend.engine.runs[run].journal
            held = len(journal.items)
            indexed = backend.engine.index.watermark.get(run, 0)
        assert disk_reads == [], "the index read history back from disk"
        # The index kept up while the run was written, so nothing it needed went unread.
        assert indexed >= n + 1 - INDEX_HELD_AT - 100
        assert held <= INDEX_HELD_AT + 100
        found = db.search("needle5000")
        assert [h.ref for h in found.results] == ["k00005000"]
        # What went is on disk, and read back from there when it is asked for.
        view = db.replay_run(run)
        assert view.position == n + 1 and len(view.kv) == n
        assert view.kv[f"k{n - 1:08d}"] == (n - 1).to_bytes(8, "little") * 12
        assert disk_reads
