"""Every message the cluster exchanges: frames, header, bodies, errors, limits, slots.

Frames (ZeroMQ multipart messages)::

    client DEALER  -> coordinator ROUTER   [header, body]
    coordinator    -> shard ROUTER         [client identity, header, body]
    replies walk the same path back, with the request's header echoed unchanged.

The ROUTERs add (and strip) the peer identity frames; a shard treats every
frame before the last two as an opaque envelope and sends it back as it came.

The header is 12 bytes, little-endian, and its first byte is the protocol
version in every version, so a peer can always tell that it is talking to
another version::

    | version u8 | kind u8 | target u16 | request id u64 |

    kind OP       body [op, args]             target = slot of the run (routed)
    kind BATCH    body [[op, args], ...]      target = slot of every op in it (routed)
    kind ADMIN    body [name, args]           target = shard id (coordinator -> shard)
    kind CLUSTER  body [name, args]           answered by the coordinator itself

The coordinator reads only the header: it forwards OP and BATCH bodies to the
shard that owns the slot without decoding them. A reply body is the msgpack
result; for BATCH a list of results in request order. An error travels as a
msgpack extension (EXT_ERROR) holding `InmemError.to_wire()`, in place of the
result, so a batch carries its failures in place and the client's unpacker
rebuilds them as the same `inmem` classes with the same messages.

Values keep their exact type across the wire. The client packs with exact
types: a tuple, set, subclass or other object that msgpack cannot carry as it
is becomes an EXT_OPAQUE naming its type, and an int beyond 64 bits becomes an
EXT_BIGINT, so the shard's engine refuses them with the same error (and the
same message) as the embedded engine. Strings travel with `surrogatepass`
for the same reason.

Decoding is defensive: a malformed frame, another version, an unknown
operation or arguments of the wrong shape raise `ProtocolError`, which the
receiver sends back as an error reply or counts and drops. Nothing here uses
`assert` on network input.

Decoding is also bounded, because a body turns into Python objects that can
be far larger than its bytes (`decode_body`):

- a body over `CHECK_FROM` bytes is first walked by msgpack's allocation-free
  skip, so a truncated body, trailing junk or nesting deeper than msgpack's
  stack (1024) costs nothing. This matters beyond garbage: msgpack
  preallocates up to 10,000 slots for each array it opens, so 1024 nested
  headers claiming big arrays in a 10 KiB body would take 80 MiB before the
  decoder noticed that the elements are missing. After the walk every array
  holds the elements it claims, and those are bytes of the body;
- no string, bytes, extension, array or map may claim more than the body
  can hold, nor more than `ELEMENTS_MAX` elements;
- a request's empty lists and maps may cost at most 4 bytes of memory per
  byte of request (`EMPTIES_BYTES_PER_BYTE`, about one empty per 16 bytes):
  an empty container is one byte on the wire and 64 to 72 bytes in memory,
  the cheapest way to make a decoder allocate (a body of nothing else would
  cost 72 times its size);
- extension payloads are decoded with the same bounds, and an opaque
  stand-in's payload is small or refused.

So decoding an N-byte request costs what its content costs as Python objects:
about 8 bytes per element, plus the objects themselves, which for the densest
shapes a real value can have (many one-entry maps) is up to ~80 N. The frame
size limit (`max_message_bytes`) is what bounds N.
"""

from __future__ import annotations

import array
import io
import struct
import sys

import msgpack

from .checksum import crc32c
from .display import short_value
from .errors import InmemError, InvalidValue, ProtocolError, ValueTooLarge, from_wire
from .ops import FANOUT_OPS, VALUE_ARGS
from .values import check_value

VERSION = 1
HEADER = struct.Struct("<BBHQ")
HEADER_BYTES = HEADER.size

KIND_OP = 1
KIND_BATCH = 2
KIND_ADMIN = 3
KIND_CLUSTER = 4
KINDS = frozenset((KIND_OP, KIND_BATCH, KIND_ADMIN, KIND_CLUSTER))

SLOT_COUNT = 4096
DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20
#: frames a shard accepts before [header, body]: the coordinator's identity plus
#: the client's; more is not a message we sent
ENVELOPE_FRAMES_MAX = 4

#: bodies larger than this are walked before they are decoded (see the module doc);
#: up to here the worst case, every array nested and preallocated, stays under 1 MiB
CHECK_FROM = 512
#: bytes the walk reads at a time
_WALK_READ = 64 * 1024
#: elements one array or map may claim, however long its body
ELEMENTS_MAX = 2**24
#: what decoding an empty list or map costs in memory (the object and its slot in
#: its container), for one byte on the wire
EMPTY_LIST_BYTES = 64
EMPTY_MAP_BYTES = 72
#: a request's empty lists and maps may cost this many bytes per byte of request,
#: plus EMPTIES_FREE_BYTES: about one empty per 16 bytes, which real requests stay
#: under (an op with an empty list and an empty map among its arguments and a run id
#: of the default 32 characters takes 57 bytes), while a body of nothing else is
#: refused at 4 times its size
EMPTIES_BYTES_PER_BYTE = 4
EMPTIES_FREE_BYTES = 256 * 1024
#: bytes an opaque stand-in's payload (type name, hashability, short repr) may take
_OPAQUE_BYTES_MAX = 4096
#: the first byte of every encoding of an empty array (fixarray, array 16, array 32)
#: and of an empty map: each empty starts with one of them, so counting these bytes
#: over-estimates the empties a body holds (the bytes may sit inside a string or
#: start a longer array), which is enough to know when no exact count is needed
_EMPTY_LIST_LEADS = b"\x90\xdc\xdd"
_EMPTY_MAP_LEADS = b"\x80\xde\xdf"
_NOT_EMPTY_LEADS = bytes(b for b in range(256) if b not in _EMPTY_LIST_LEADS + _EMPTY_MAP_LEADS)
#: how long a snapshot or a history compaction of every shard may take (seconds): the
#: coordinator's bound on the shards' answers, and the clients' on the coordinator's
SLOW_ADMIN_TIMEOUT_S = 600.0

#: messages queued per peer on a socket that reads from the network (ZMQ_RCVHWM).
#: ZeroMQ counts messages, not bytes, and stops reading from a peer whose queue
#: is full, so the rest waits in the kernel and the sender instead of in this
#: process, and nothing is dropped. It is large enough for a burst: thousands of
#: clients with a request each in flight all pass through the coordinator's one
#: connection to a shard, and a shard takes up to 4096 per turn.
RECV_QUEUE_MAX = 8192

EXT_OPAQUE = 1
EXT_BIGINT = 2
EXT_ERROR = 3

#: test hooks: wipe every shard, pin the shards' clock, change max_value_bytes; a
#: cluster answers them only when started with test_hooks=True (never in production)
DEBUG_OPS = frozenset(("debug.reset", "debug.clock", "debug.max_value_bytes"))
#: cluster-level requests the coordinator answers (FANOUT_OPS included)
CLUSTER_OPS = FANOUT_OPS | DEBUG_OPS | frozenset(("ping", "status", "slotmap", "info",
                                                  "snapshot", "recovery_report", "fanout",
                                                  "compact_history"))
#: requests a shard answers besides engine operations
ADMIN_OPS = DEBUG_OPS | frozenset(("hello", "ping", "info", "snapshot", "recovery_report",
                                   "compact_history"))

#: value types that need no walk through the value model
SCALARS = _SCALARS = frozenset((str, int, float, bool, bytes, type(None)))
_unpackb = msgpack.unpackb
_ExtType = msgpack.ExtType
_header_pack = HEADER.pack
_header_unpack = HEADER.unpack
_crc = crc32c


# -- routing ---------------------------------------------------------------------


def slot_of(run_id) -> int:
    """The slot of a run: crc32c of its UTF-8 id, mod 4096.

    A run id that is not a str cannot exist, so it goes to slot 0, where the
    shard refuses it with the same error the embedded engine raises.
    """
    if type(run_id) is not str:
        return 0
    return _crc(run_id.encode("utf-8", "surrogatepass")) & (SLOT_COUNT - 1)


def pack_owners(owners) -> bytes:
    """A slot map as the coordinator's hello carries it: a little-endian u16 shard per slot."""
    table = array.array("H", owners)
    if sys.byteorder != "little":
        table.byteswap()
    return table.tobytes()


def unpack_owners(data: bytes):
    """The slot -> shard table of `pack_owners`' bytes, on a host of either byte order."""
    if type(data) is not bytes or len(data) != 2 * SLOT_COUNT:
        raise ProtocolError("a slot map is 2 bytes per slot")
    if sys.byteorder == "little":
        return memoryview(data).cast("H")
    table = array.array("H", data)
    table.byteswap()
    return table


# -- headers ---------------------------------------------------------------------


def header(kind: int, target: int, request_id: int) -> bytes:
    return _header_pack(VERSION, kind, target, request_id & 0xFFFFFFFFFFFFFFFF)


def parse_header(frame) -> tuple[int, int, int]:
    """(kind, target, request id) of a header frame; ProtocolError when it is not one."""
    if len(frame) != HEADER_BYTES:
        raise ProtocolError(f"a header is {HEADER_BYTES} bytes, got {len(frame)}")
    version, kind, target, rid = _header_unpack(frame)
    if version != VERSION:
        raise ProtocolError(f"peer speaks protocol version {version}, this one speaks "
                            f"{VERSION}; upgrade the older side")
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind}")
    return kind, target, rid


def request_id_of(frame) -> int | None:
    """The request id of a header frame of any version, if it is long enough to hold one."""
    if len(frame) != HEADER_BYTES:
        return None
    return _header_unpack(frame)[3]


# -- the client side: packing requests, unpacking replies ------------------------


class _Opaque:
    """Base of the stand-ins a shard builds for values msgpack could not carry as they are.

    A stand-in has the original's type name, hashability and repr, which is
    all the engine looks at before it refuses one, so its error message is the
    one the embedded engine gives for the original.
    """

    __slots__ = ("_repr",)

    def __init__(self, text: str):
        self._repr = text

    def __repr__(self) -> str:
        return self._repr


def _opaque_class(name: str, hashable: bool):
    cls = type(name, (_Opaque,), {"__slots__": ()})
    if not hashable:
        cls.__hash__ = None
    return cls


#: longest repr carried for a stand-in (it only ever ends up in an error message)
_OPAQUE_REPR_MAX = 200


_opaque_classes: dict = {}
_OPAQUE_CLASSES_MAX = 1024


def _client_default(obj):
    """msgpack `default` for the client: tag what msgpack would otherwise lose."""
    t = type(obj)
    if t is int:  # only reached when the int does not fit in 64 bits
        return msgpack.ExtType(EXT_BIGINT, str(obj).encode("ascii"))
    hashable = t.__hash__ is not None
    try:
        text = repr(obj)[:_OPAQUE_REPR_MAX]
    except Exception:
        text = f"<{t.__name__}>"
    return msgpack.ExtType(EXT_OPAQUE, msgpack.packb([t.__name__, hashable, text],
                                                     unicode_errors="surrogatepass"))


def new_packer() -> msgpack.Packer:
    """A request packer; not thread-safe, so the client keeps one per thread."""
    return msgpack.Packer(use_bin_type=True, strict_types=True, default=_client_default,
                          unicode_errors="surrogatepass")


def check_values(op: str, args) -> None:
    """Refuse a write's out-of-model value here, with the engine's own check and message."""
    positions = VALUE_ARGS.get(op) if type(op) is str else None
    if positions is None or type(args) not in (list, tuple):
        return  # not a write the engine knows: it refuses it with its own message
    n = len(args)
    for i in positions:
        if i < n:
            v = args[i]
            if type(v) not in _SCALARS:
                check_value(v)


def _listed(x):
    return list(x) if type(x) is tuple else x


def op_body(op: str, args):
    """The wire form of one operation: [op, [args...]] with no tuples left in it.

    Arguments of the wrong shape go as they are, for the engine to refuse with
    the message the embedded engine gives.
    """
    if op == "tx.commit" and len(args) == 3 and isinstance(args[2], (list, tuple)):
        writes = []
        for w in args[2]:
            try:
                wop, wargs = w
            except (TypeError, ValueError):
                raise InvalidValue(f"malformed transaction write {short_value(w)}") from None
            check_values(wop, wargs)
            writes.append([wop, _listed(wargs)])
        reads = args[1]
        if isinstance(reads, (list, tuple)):
            reads = [_listed(r) for r in reads]
        return [op, [args[0], reads, writes]]
    check_values(op, args)
    return [op, list(args)]


def pack_checked(packer, body, max_message_bytes: int) -> bytes:
    """Pack a request body; a value msgpack refuses or a body over the limit raises here."""
    try:
        data = packer.pack(body)
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()
        raise InvalidValue(f"value cannot be encoded: {exc}") from None
    if len(data) > max_message_bytes:
        raise ValueTooLarge(f"request of {len(data)} bytes is over max_message_bytes "
                            f"({max_message_bytes}); send smaller values or smaller batches")
    return data


# -- bounded decoding ---------------------------------------------------------------


class _TooManyEmpties(Exception):
    pass


class _EmptiesBudget:
    """list_hook and object_hook for the rare body that may hold too many empty containers."""

    __slots__ = ("left",)

    def __init__(self, left: int):
        self.left = left

    def hook(self, obj):
        if not obj:
            self.left -= EMPTY_LIST_BYTES if type(obj) is list else EMPTY_MAP_BYTES
            if self.left < 0:
                raise _TooManyEmpties
        return obj


def _empties_bound(body: bytes) -> int:
    """At least what the empty lists and maps in `body` cost to decode.

    One C-speed pass keeps only the lead bytes (a tenth of the time six
    pattern counts over the whole body took); the counts run over what is left.
    """
    leads = body.translate(None, _NOT_EMPTY_LEADS)
    if not leads:
        return 0
    count = leads.count
    lists = count(b"\x90") + count(b"\xdc") + count(b"\xdd")
    return EMPTY_LIST_BYTES * lists + EMPTY_MAP_BYTES * (len(leads) - lists)


def _check_structure(body, n: int) -> None:
    """Walk `body` without building anything; ProtocolError unless it is exactly one value."""
    # Read through a file (which shares the body's bytes) so the walk holds a
    # slice of it at a time: as much as the largest string in it, at most.
    walker = msgpack.Unpacker(io.BytesIO(body), read_size=min(n, _WALK_READ), max_buffer_size=n)
    try:
        walker.skip()
    except msgpack.OutOfData:
        raise ProtocolError(f"malformed message body: it ends inside a value "
                            f"({n} bytes, truncated?)") from None
    except msgpack.StackError:
        raise ProtocolError("malformed message body: nested deeper than 1024 levels") from None
    except Exception as exc:
        raise ProtocolError(f"malformed message body: {type(exc).__name__}: {exc}") from None
    end = walker.tell()
    if end != n:
        raise ProtocolError(f"malformed message body: {n - end} bytes after the value")


def decode_body(body, ext_hook=None, empties: bool = False, unicode_errors: str = "strict"):
    """msgpack.unpackb with the bounds in the module doc; ProtocolError for anything wrong.

    `empties` turns on the budget of empty lists and maps (requests; a reply
    is the cluster's own and may legitimately be nothing but empty values).
    """
    if type(body) is not bytes:
        body = bytes(body)
    n = len(body)
    if n == 0:
        raise ProtocolError("malformed message body: it is empty")
    if n > CHECK_FROM:
        _check_structure(body, n)
    elements = n if n < ELEMENTS_MAX else ELEMENTS_MAX
    allowed = n * EMPTIES_BYTES_PER_BYTE + EMPTIES_FREE_BYTES
    hook = None
    # Every empty takes a byte, so a short body cannot go over; of the longer
    # ones, only those the C-speed count cannot clear pay for an exact count.
    if empties and n * EMPTY_MAP_BYTES > allowed and _empties_bound(body) > allowed:
        hook = _EmptiesBudget(allowed).hook
    try:
        if n < ELEMENTS_MAX and hook is None:
            # msgpack's own limits for a body of n bytes are the ones below (each
            # length at most n, maps n // 2): fewer keywords, as they cost per call.
            return _unpackb(body, raw=False, ext_hook=ext_hook or _ExtType,
                            strict_map_key=False, unicode_errors=unicode_errors)
        return _unpackb(body, raw=False, ext_hook=ext_hook or _ExtType, strict_map_key=False,
                        unicode_errors=unicode_errors, list_hook=hook, object_hook=hook,
                        max_str_len=n, max_bin_len=n, max_ext_len=n,
                        max_array_len=elements, max_map_len=elements // 2)
    except ProtocolError:
        raise
    except _TooManyEmpties:
        raise ProtocolError(
            f"this {n}-byte request holds more empty lists and maps than it may (about one "
            f"per {EMPTY_LIST_BYTES // EMPTIES_BYTES_PER_BYTE} bytes of request, as each costs "
            f"~{EMPTY_LIST_BYTES} bytes to decode); send fewer of them per request") from None
    except Exception as exc:
        raise ProtocolError(f"malformed message body: {type(exc).__name__}: {exc}") from None


def _client_ext_hook(code, data):
    if code == EXT_ERROR:
        try:
            # surrogatepass: a message may quote a bad string exactly as it came
            return from_wire(decode_body(data, unicode_errors="surrogatepass"))
        except Exception as exc:
            return ProtocolError(f"malformed error in a reply: {exc}")
    return msgpack.ExtType(code, data)


def unpack_reply(body):
    """The result in a reply body; an error comes back as an InmemError instance."""
    try:
        return decode_body(body, _client_ext_hook)
    except ProtocolError as exc:
        return ProtocolError(f"in a reply: {exc}")
    except Exception as exc:
        return ProtocolError(f"malformed reply: {type(exc).__name__}: {exc}")


# -- the shard side: unpacking requests, packing replies --------------------------


def _server_ext_hook(code, data):
    if code == EXT_BIGINT:
        if len(data) > 64:
            raise ProtocolError("oversized integer")
        return int(data)
    if code == EXT_OPAQUE:
        if len(data) > _OPAQUE_BYTES_MAX:
            raise ProtocolError(f"an opaque value's description is over {_OPAQUE_BYTES_MAX} "
                                "bytes; this client did not send it")
        try:
            name, hashable, text = decode_body(data, unicode_errors="surrogatepass")
        except (TypeError, ValueError):
            raise ProtocolError("malformed opaque value: not [name, hashable, text]") from None
        if type(name) is not str or not name.isidentifier():
            name = "object"
        if type(text) is not str:
            text = f"<{name}>"
        key = (name, bool(hashable))
        cls = _opaque_classes.get(key)
        if cls is None:
            if len(_opaque_classes) >= _OPAQUE_CLASSES_MAX:
                key = ("object", bool(hashable))
                cls = _opaque_classes.get(key)
            if cls is None:
                cls = _opaque_classes[key] = _opaque_class(*key)
        return cls(text[:_OPAQUE_REPR_MAX])
    if code == EXT_ERROR:
        raise ProtocolError("an error is not a request")
    return msgpack.ExtType(code, data)


def _unpack_request(body):
    return decode_body(body, _server_ext_hook, True, "surrogatepass")


def _check_op(item, known):
    if type(item) is not list or len(item) != 2:
        raise ProtocolError("an operation is [op, args]")
    op, args = item
    if type(op) is not str or op not in known:
        raise ProtocolError(f"unknown operation {op!r:.80}")
    if type(args) is not list:
        raise ProtocolError(f"arguments of {op} must be a list")
    return op, args


def decode_op(body, known) -> tuple[str, list]:
    """(op, args) of an OP or ADMIN body; ProtocolError for anything else."""
    # _unpack_request and, for the common case, _check_op, inline: this runs once per request.
    item = decode_body(body, _server_ext_hook, True, "surrogatepass")
    if type(item) is list and len(item) == 2:
        op, args = item
        if type(op) is str and op in known and type(args) is list:
            return op, args
    return _check_op(item, known)


def decode_batch(body, known) -> list:
    """The operations of a BATCH body, each [op, args] or a ProtocolError in its place."""
    items = _unpack_request(body)
    if type(items) is not list:
        raise ProtocolError("a batch is a list of [op, args]")
    out = []
    append = out.append
    for item in items:
        # The common case inline (what _check_op checks): this runs once per operation.
        if type(item) is list and len(item) == 2:
            op = item[0]
            if type(op) is str and op in known and type(item[1]) is list:
                append(item)
                continue
        try:
            append(list(_check_op(item, known)))
        except ProtocolError as exc:
            append(exc)
    return out


def _server_default(obj):
    if isinstance(obj, InmemError):
        return msgpack.ExtType(EXT_ERROR, msgpack.packb(obj.to_wire(), use_bin_type=True,
                                                        default=_plain_default,
                                                        unicode_errors="surrogatepass"))
    return _plain_default(obj)


def _plain_default(obj):
    # Error fields and results hold only plain values; anything else is shown, not lost.
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    return repr(obj)


def new_reply_packer() -> msgpack.Packer:
    """The shard's reply packer: NamedTuples go as arrays, errors as EXT_ERROR."""
    return msgpack.Packer(use_bin_type=True, default=_server_default,
                          unicode_errors="surrogatepass")


def error_body(err: InmemError) -> bytes:
    return msgpack.packb(err, use_bin_type=True, default=_server_default,
                         unicode_errors="surrogatepass")


def oversized_reply(size: int, limit: int) -> bytes:
    """What a client takes in place of a reply of `size` bytes over its own `limit`:
    the ProtocolError its request then raises (the reply itself is dropped)."""
    return error_body(ProtocolError(
        f"reply of {size} bytes is over this client's max_message_bytes ({limit}); ask for "
        "less at a time, or connect with a larger max_message_bytes"))


#: how to ask for less than a reply over max_message_bytes, by operation
_ASK_LESS = {
    "kv.keys": "ask for a page at a time (limit= and after=) or a key prefix",
    "kv.items": "ask for a page at a time (limit= and after=) or a key prefix",
    "kv.get_many": "ask for fewer keys at a time",
    "run.list": ("list them a page at a time: runs.list(..., limit=...), then after= the "
                 "last run of each page"),
    "ev.read": "read the events in ranges",
    "ev.range": "read the events in smaller ranges",
    "ev.by_type": ("read them a page at a time: events.by_type(..., limit=...), then after= "
                   "the last event of each page"),
    "tr.by_type": ("read them a page at a time: traces.by_type(..., limit=...), then after= "
                   "the last trace of each page"),
    "tr.by_tag": ("read them a page at a time: traces.by_tag(..., limit=...), then after= "
                  "the last trace of each page"),
    "tr.roots": ("read them a page at a time: traces.roots(..., limit=...), then after= "
                 "the last trace of each page"),
    "run.replay": "replay an earlier position (at=)",
    None: "split the pipeline: its replies travel together",
}


def oversized_result(size: int, limit: int, op: str | None) -> ProtocolError:
    """The error a reply of `size` bytes over the shard's `limit` becomes (`op`: its
    operation, None for a pipeline's batch), saying what to ask instead."""
    less = _ASK_LESS.get(op)
    raise_it = ("raise max_message_bytes on the cluster ([cluster] max_message_bytes) "
                "and in connect()")
    return ProtocolError(f"reply of {size} bytes is over max_message_bytes ({limit}); "
                         + (f"{less}, or {raise_it}" if less else raise_it))


def pack_results(packer, results: list, max_message_bytes: int) -> bytes:
    """Pack a batch's results. Over the limit, the largest results give way to the error
    that says so, one by one until the rest fits: the small ones, every write's
    acknowledgement among them, still come back."""
    try:
        data = packer.pack(results)
    except Exception as exc:
        packer.reset()
        return error_body(ProtocolError(f"result cannot be encoded: {exc}"))
    if len(data) <= max_message_bytes:
        return data
    total = len(data)
    sizes = [len(packer.pack(r)) for r in results]
    for i in sorted(range(len(results)), key=sizes.__getitem__, reverse=True):
        if total <= max_message_bytes:
            break
        results[i] = oversized_result(sizes[i], max_message_bytes, None)
        total -= sizes[i] - len(packer.pack(results[i]))
    return pack_reply(packer, results, max_message_bytes, None)


def pack_reply(packer, result, max_message_bytes: int, op: str | None = "") -> bytes:
    """Pack a result; one that cannot be packed or is over the limit becomes an error
    (`op`, the operation, lets it say what to ask instead; None: a pipeline's batch)."""
    try:
        data = packer.pack(result)
    except Exception as exc:
        packer.reset()
        return error_body(ProtocolError(f"result cannot be encoded: {exc}"))
    if len(data) > max_message_bytes:
        return error_body(oversized_result(len(data), max_message_bytes, op))
    return data


# -- shaping results into the API's types -----------------------------------------


# -- merging the replies of a fan-out ---------------------------------------------


def merge_fanout(op: str, results: list, args=()):
    """One answer from every shard's answer, in an order that does not depend on timing
    (`args`: the request's arguments)."""
    if op == "run.list":
        merged = [r for part in results for r in part]
        merged.sort(key=lambda r: (r[6], r[0]))  # created_at, then run_id: the documented order
        # A page: each shard sent at most `limit` runs after the cursor, so the page's
        # runs are all among them, the first `limit` of the merge.
        limit = args[4] if len(args) > 4 else None
        return merged[:limit] if type(limit) is int and limit > 0 else merged
    if op == "run.orphaned":
        # The shards are asked for their orphaned RunInfos (see fanout_request) so
        # that ids can be ordered by creation across shards.
        merged = [r for part in results for r in part]
        merged.sort(key=lambda r: (r[6], r[0]))
        return [r[0] for r in merged]
    if op in DEBUG_OPS:
        return None
    if op == "fanout":
        return results
    if op == "compact_history":
        return sorted((c for part in results for c in part), key=lambda c: c["shard"])
    if op == "snapshot":
        merged = [s for part in results for s in part]
        merged.sort(key=lambda s: s[0])
        return merged
    raise ProtocolError(f"no merge rule for {op!r}")


def fanout_request(op: str, args) -> tuple[str, list]:
    """What each shard is asked for a fanned-out op."""
    if op == "run.orphaned":
        return "run.list", ["orphaned", None, None]
    return op, list(args)


__all__ = [
    "VERSION", "HEADER", "HEADER_BYTES", "SCALARS", "KIND_OP", "KIND_BATCH", "KIND_ADMIN",
    "KIND_CLUSTER",
    "SLOT_COUNT", "DEFAULT_MAX_MESSAGE_BYTES", "CLUSTER_OPS", "ADMIN_OPS",
    "RECV_QUEUE_MAX", "slot_of", "header", "parse_header", "request_id_of",
    "new_packer", "decode_body",
    "op_body", "pack_checked", "unpack_reply", "decode_op", "decode_batch",
    "new_reply_packer", "error_body", "oversized_reply", "pack_reply", "merge_fanout", "fanout_request",
]
