"""Where a cluster pipeline is cut so that its reads of every shard keep their queued place."""

from inmem.routing import batch_segments


def _ops(spec: str) -> list:
    # "k": a run operation, "b": begin_run; "L": runs.list and "o": orphaned_runs,
    # which read every shard.
    table = {"k": ("kv.put", ["run-1", "k", 1, None]), "L": ("run.list", [None, None, 100]),
             "o": ("run.orphaned", []), "b": ("run.begin", ["run-2", None, None, None])}
    return [table[c] for c in spec]


def test_a_batch_without_reads_of_every_shard_goes_whole():
    assert batch_segments(_ops("kkbk")) is None
    assert batch_segments([]) is None


def test_reads_of_every_shard_at_the_end_go_whole():
    # They are sent after the rest is answered: their queued place already.
    assert batch_segments(_ops("kkLo")) is None
    assert batch_segments(_ops("L")) is None


def test_a_run_operation_after_such_a_read_starts_a_new_part():
    assert batch_segments(_ops("Lk")) == [(0, 1), (1, 2)]
    assert batch_segments(_ops("kLLbkoL")) == [(0, 3), (3, 7)]
    assert batch_segments(_ops("LkLkL")) == [(0, 1), (1, 3), (3, 5)]
