"""Where LangGraph's data lives in inmem: run ids and the key layout inside a run.

A LangGraph thread is one inmem run, `<prefix>thread:<thread_id>`, so every
checkpoint of the thread, every namespace, blob and pending write sits on
the shard that owns that run id, and reading a thread is reading one run.
The run is created "paused" on the thread's first write: paused runs accept
writes and are never reported as orphaned after a restart, which suits a
thread that lives across many invocations. It is created unsearchable
(`searchable=False`): checkpoints are serialized state read by key, whose
only words would be ids and version strings, and indexing them cost each
put more than the put itself.

Inside a thread's run (`ns` and channel names escaped by `esc`; the root
namespace is the empty string, so its keys read `checkpoint//<id>`):

| primitive | key                               | value                                            |
|-----------|-----------------------------------|--------------------------------------------------|
| kv        | `checkpoint/<ns>/<checkpoint_id>` | the record: [packed fields, refs] (see `Record`) |
| kv        | `head/<ns>`                       | the newest checkpoint's record, for get_tuple    |
| kv        | `blob/<ns>/<channel>/<version>`   | [serde type, bytes] of one channel value         |
| json      | `writes/<ns>/<checkpoint_id>`     | {"<task_id>/<idx>": [task, channel, type, bytes, task_path, idx]} |
| kv        | `write/<ns>/<checkpoint_id>/<task_id>/<idx>` | [serde type, bytes] of a pending write kept apart |
| kv        | `saver/<hex>`                     | None: the mark of a saver's memory, put with each checkpoint that has a run id (see `indexed.py`) |
| kv        | `gone/<ns>/<checkpoint_id>`       | None, for an hour (`GONE_TTL_S`): the checkpoint was deleted by a prune or delete_for_runs (see `cuts.py`) |

A pending write's value over `WRITE_INLINE_MAX` bytes serialized (or one
the document has no more room for) is kept apart, in its own KV entry, and
its row in the writes document reads [task, channel, None, its key,
task_path, idx]: the document of a step whose parallel tasks write several
MiB stays small, instead of growing past the largest value a document may
be (`max_value_bytes`) and failing the step.

A record is stored as [its fields packed in one msgpack bytes, refs]: one
bytes value is checked and encoded at the cost of a copy, where nested
lists are walked item by item. `refs` lists the keys of its channel blobs
and of its pending writes, so `kv.get_linked` reads a checkpoint, its
values and its writes in one round trip. Checkpoint ids are time-ordered (uuid6), so the keys of
one namespace sort oldest to newest. Channel values are stored once per version and shared by
every checkpoint that points at that version; pending writes of a task are
set each at its own path, so concurrent tasks never overwrite each other.

One more run, `<prefix>runs`, holds a JSON document per LangGraph run id
listing the threads that have checkpoints of it, so `delete_for_runs`
visits those threads only, and for an hour after `delete_thread` a KV entry
`gone-thread/<sha256 of the thread id>` holding a uuid6 made at the delete
(see `late_writes.py`). The long-term store is one run of its own
(`<prefix>store` by default; see `store.py`).

A run id and a key are at most KEY_BYTES_MAX UTF-8 bytes: `check_names`
refuses a thread id or namespace too long for the run id or keys it makes,
naming it, before anything is sent.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import NamedTuple
from uuid import UUID

import msgpack

from inmem.errors import InvalidKey, InvalidValue
from inmem.values import KEY_BYTES_MAX

_packb = msgpack.Packer(use_bin_type=True).pack
_unpackb = msgpack.unpackb
_new_tuple = tuple.__new__

DEFAULT_PREFIX = "langgraph:"


@lru_cache(maxsize=8192)
def esc(text: str) -> str:
    """`text` with '%', '/' and ':' escaped, so '/' only ever separates key parts."""
    return text.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


def unesc(text: str) -> str:
    return text.replace("%3A", ":").replace("%2F", "/").replace("%25", "%")


def thread_run(prefix: str, thread_id) -> str:
    """The run of thread `thread_id`: a str, or an int or UUID as LangGraph's savers take
    one (by its text); InvalidValue for anything else (a list given for one id would name
    the thread "['a', 'b']", None a thread "None")."""
    if type(thread_id) is not str and (type(thread_id) not in (int, UUID)):
        raise InvalidValue(f"a thread id is a str (or an int or UUID), got "
                           f"{type(thread_id).__name__}")
    return f"{prefix}thread:{thread_id}"


def index_run(prefix: str) -> str:
    return f"{prefix}runs"


def thread_tag(prefix: str) -> str:
    return f"{prefix}thread"


def checkpoint_key(ns: str, checkpoint_id: str) -> str:
    return f"checkpoint/{esc(ns)}/{checkpoint_id}"


def checkpoint_prefix(ns: str | None) -> str:
    """Keys of one namespace's checkpoints, or of every namespace's when `ns` is None."""
    return "checkpoint/" if ns is None else f"checkpoint/{esc(ns)}/"


def head_key(ns: str) -> str:
    return f"head/{esc(ns)}"


def blob_key(ns: str, channel: str, version) -> str:
    return f"{blob_prefix(ns, channel)}{version}"


@lru_cache(maxsize=8192)
def blob_prefix(ns: str, channel: str) -> str:
    """The start of a channel's blob keys: `blob_key` less the version."""
    return f"blob/{esc(ns)}/{esc(channel)}/"


#: namespaces whose keys a saver keeps made (`namespace_keys`), and channels per
#: namespace: a graph's subgraphs make a namespace per task, so both are bounded
NS_KEYS_MAX = 1024


class NamespaceKeys(dict):
    """The keys of one namespace, as every put and get_tuple makes them, their parts
    escaped once: channel -> the start of its blob keys (`blob_prefix`, made on first
    use); `head` (`head_key`); `checkpoints` and `writes`, the starts of its
    checkpoints' and writes documents' keys, less the checkpoint id."""

    __slots__ = ("head", "checkpoints", "writes", "_blobs")

    def __init__(self, ns: str) -> None:
        super().__init__()
        e = esc(ns)
        self.head = f"head/{e}"
        self.checkpoints = f"checkpoint/{e}/"
        self.writes = f"writes/{e}/"
        self._blobs = f"blob/{e}/"

    def __missing__(self, channel: str) -> str:
        if len(self) >= NS_KEYS_MAX:
            self.clear()
        made = self[channel] = f"{self._blobs}{esc(channel)}/"
        return made


def namespace_keys(cache: dict, ns: str) -> NamespaceKeys:
    """The NamespaceKeys of `ns`, made and kept in `cache` (emptied when full)."""
    if len(cache) >= NS_KEYS_MAX:
        cache.clear()
    made = cache[ns] = NamespaceKeys(ns)
    return made


def writes_key(ns: str, checkpoint_id: str) -> str:
    return f"writes/{esc(ns)}/{checkpoint_id}"


def write_key(ns: str, checkpoint_id: str, task_id: str, idx: int) -> str:
    """Where a pending write kept apart from its writes document lives."""
    return f"{write_prefix(ns, checkpoint_id)}{esc(str(task_id))}/{idx}"


def write_prefix(ns: str, checkpoint_id: str) -> str:
    """The start of the keys of one checkpoint's pending writes kept apart."""
    return f"write/{esc(ns)}/{checkpoint_id}/"


def writes_of(keys: list, places) -> dict:
    """The keys among `keys` (of writes kept apart) of each checkpoint (ns, id) among
    `places`: (ns, id) -> [key]. The usual key's place is read off its first three
    parts; an id holding a '/' is found by a look at each place's prefix."""
    prefixes = {write_prefix(ns, cid): (ns, cid) for ns, cid in places}
    starts = tuple(prefixes)
    found: dict = {}
    if not starts:
        return found
    for k in keys:
        place = prefixes.get(k[:k.find("/", k.find("/", 6) + 1) + 1])
        if place is None:
            if not k.startswith(starts):
                continue
            place = next(prefixes[p] for p in starts if k.startswith(p))
        found.setdefault(place, []).append(k)
    return found


def gone_key(ns: str, checkpoint_id: str) -> str:
    """Where a cut notes, for GONE_TTL_S, that it deleted a checkpoint (see cuts.py)."""
    return f"gone/{esc(ns)}/{checkpoint_id}"


def thread_gone_key(thread_id) -> str:
    """Where `delete_thread` notes, in the index run for GONE_TTL_S, when it deleted a
    thread (see late_writes.py): a hash of the thread id, so any id makes a short key."""
    digest = hashlib.sha256(str(thread_id).encode("utf-8", "surrogatepass")).hexdigest()
    return f"gone-thread/{digest}"


#: how long a deleted checkpoint's note stays: pending writes for it that come later
#: than this are stored, as writes that come before their checkpoint are
GONE_TTL_S = 3600


#: a pending write serialized to more bytes than this is kept apart (see above): the
#: document is rewritten whole by each write to it, so what it holds is kept small
WRITE_INLINE_MAX = 4 * 1024


def json_name(name: str) -> str:
    """A JSON path step naming `name` whatever its characters: `$["name"]`."""
    return '$["' + name.replace("\\", "\\\\").replace('"', '\\"') + '"]'


#: the position of the references in a stored record (what `kv.get_linked` follows)
REFS = 1


class Record(NamedTuple):
    """A checkpoint as stored: everything but its channel values and pending writes.

    `run_id` is the metadata's run id kept in the clear, so deleting a run's
    checkpoints reads records without decoding their metadata. `refs` names
    the blobs of its channel versions, in the checkpoint's channel order,
    then its pending writes' document: [blob key, ..., ["json", writes key]].
    """
    ns: str
    checkpoint_id: str
    parent_id: str | None
    checkpoint: tuple  # (serde type, bytes) of the checkpoint without channel_values
    metadata: tuple    # (serde type, bytes)
    run_id: str | None
    refs: list

    def stored(self) -> list:
        """The value stored for this record: [its fields packed, refs]."""
        return stored_record(self.ns, self.checkpoint_id, self.parent_id, self.checkpoint,
                             self.metadata, self.run_id, self.refs)


def stored_record(ns, checkpoint_id, parent_id, checkpoint, metadata, run_id, refs) -> list:
    """The value stored for a record of these fields (`Record.stored`, without the Record)."""
    return [_packb([ns, checkpoint_id, parent_id, checkpoint[0], checkpoint[1], metadata[0],
                    metadata[1], run_id]), refs]


def read_record(value) -> Record:
    """The Record of a stored value (see `Record.stored`)."""
    f = _unpackb(value[0], raw=False)
    # tuple.__new__ rather than Record(...), whose __new__ is a Python function: a
    # fifth of what reading a record costs, and every get_tuple and list reads them.
    return _new_tuple(Record, (f[0], f[1], f[2], (f[3], f[4]), (f[5], f[6]), f[7], value[1]))


#: a name of at most this many characters is at most KEY_BYTES_MAX UTF-8 bytes
SHORT = KEY_BYTES_MAX // 4


def check_names(thread_id, run: str, ns: str, key: str) -> None:
    """InvalidKey, naming the thread or namespace, when the run id a thread id makes or
    the key a namespace makes is over KEY_BYTES_MAX UTF-8 bytes."""
    for what, name, made in (("thread id", thread_id, run), ("checkpoint_ns", ns, key)):
        size = len(made.encode("utf-8", "surrogatepass"))
        if size > KEY_BYTES_MAX:
            raise InvalidKey(
                f"{what} {str(name)[:40]!r}... ({len(str(name))} characters) is too long: it "
                f"makes the {'run id' if made is run else 'key'} {made[:60]!r}... of {size} "
                f"UTF-8 bytes, over {KEY_BYTES_MAX}")
