"""What a stored checkpoint reads back as: LangGraph's `CheckpointTuple`.

A record (see `keys.py`) holds a checkpoint without its channel values and
pending writes; the reads fetch those beside it (`kv.get_linked`, or a page
of `list` at once) and `checkpoint_tuple` puts the pieces together.
"""

from __future__ import annotations

from langgraph.checkpoint.base import CheckpointTuple, writes_sort_key


def checkpoint_tuple(loads, thread_id, record, checkpoint, blobs, writes, metadata,
                     apart=None) -> CheckpointTuple:
    """The CheckpointTuple of a record; `loads`: the serializer's `loads_typed`;
    `checkpoint` (decoded for this call) is completed in place with its channel values
    (`blobs`, in the order of its channel_versions); `writes`: its writes document;
    `metadata`: decoded already, or None; `apart`: the pending writes kept apart, by key."""
    values = {}
    # blobs follow the order of channel_versions
    for channel, blob in zip(checkpoint.get("channel_versions", ()), blobs):
        if blob is not None and blob[0] != "empty":
            values[channel] = loads((blob[0], blob[1]))
    pending = []
    if writes:
        rows = writes.values()
        if len(writes) > 1:
            rows = sorted(rows, key=_write_order)
        pending = []
        for w in rows:
            if w[2] is not None:
                pending.append((w[0], w[1], loads((w[2], w[3]))))
                continue
            value = (apart or {}).get(w[3])
            if value is not None:  # (None: deleted with its checkpoint meanwhile)
                pending.append((w[0], w[1], loads((value[0], value[1]))))
    checkpoint["channel_values"] = values
    ns = record.ns
    parent = None
    if record.parent_id:
        parent = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                   "checkpoint_id": record.parent_id}}
    return CheckpointTuple(
        {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                          "checkpoint_id": record.checkpoint_id}},
        checkpoint,
        loads(record.metadata) if metadata is None else metadata,
        parent,
        pending,
    )


def apart_keys(doc) -> list:
    """The keys of the pending writes a writes document keeps apart (see keys.py)."""
    if not doc or not isinstance(doc, dict):
        return []
    return [w[3] for w in doc.values() if w[2] is None]


def _write_order(w):
    return writes_sort_key(w[4], w[0], w[5])
