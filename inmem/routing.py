"""What a cluster client decides without doing any I/O: URLs, options, the slot map, batches, shard health.

The blocking client (`inmem.client`) and the asyncio client
(`inmem.async_client`) send and wait in their own ways but must route, group
and judge exactly alike, and fail with the same errors and messages; the
pieces they share live here as plain functions over plain data:

- `check_url`, `check_number`, `check_connect_options`: what `connect` accepts;
- `SlotMap.parse`: the coordinator's `slotmap` reply as the owner of every slot;
- `plan_batch` and `chunks`: a pipeline's operations grouped per shard into
  BATCH bodies of at most `BATCH_CHUNK_OPS` operations under the message limit;
- `apply_batch_reply`: one BATCH reply put back in pipeline order;
- `shard_gone` and `shard_down`: what the coordinator's status of a shard says
  about a request that got no answer from it (ShardUnavailable or Timeout);
- the Timeout messages both clients raise.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Iterator, NamedTuple

from .errors import (InmemError, InvalidOption, InvalidURL, ProtocolError, ShardUnavailable,
                     Timeout)
from .ops import CALL_PLANS, FANOUT_OPS, REPLY_SHAPES, ROUTE_BY_FIRST, VALUE_ARGS, route_run, shape
from .protocol import SCALARS, SLOT_COUNT, check_values, op_body, pack_checked, slot_of
from .values import check_value

#: the schemes a coordinator listens on
URL_SCHEMES = ("ipc", "tcp")
#: what `connect` takes besides url and timeout
CONNECT_OPTIONS = ("request_timeout", "max_message_bytes", "direct", "stream", "keys")
#: the smallest max_message_bytes a client or a cluster takes
MIN_MESSAGE_BYTES = 1024
#: operations per BATCH message: big enough to amortise a message, small enough
#: that the shard applies one chunk while the client packs the next
BATCH_CHUNK_OPS = 256
#: how long to wait between asking a cluster that is not ready yet
NOT_READY_PAUSE_S = 0.05
#: `wait_ready`: how long to wait between two status requests. A status is one
#: small request the coordinator answers from memory, and whoever waits for
#: readiness waits for exactly this moment, so it is asked often
READY_POLL_S = 0.005
#: how often a client's ZeroMQ socket to an ipc endpoint tries to connect while it is not there
LOCAL_RECONNECT_MS = 5
#: direct requests: how often, while waiting for a reply, to ask whether the shard died
DIRECT_CHECK_S = 0.25
#: the longest a call waits for the slot map again after a shard's address refused it
REFRESH_MAX_S = 1.0


def packed_call(op, args, packer, max_bytes: int):
    """An operation as a client sends it: (its run, its packed body, whether its result
    goes through `shape`), or None for one the coordinator answers itself.

    The hot first step of both clients' `call`: the operation's plan from the
    table, its values checked in passing (InvalidValue for one outside the
    model), one pack, and the size checked after it (ValueTooLarge).
    """
    plan = CALL_PLANS.get(op)
    if plan is None:  # tx.commit, or an operation the shard will refuse by name
        run = route_run(op, args)
        body = op_body(op, args)
        shaped = True
    else:
        at, values, reply = plan
        if at < 0:
            return None
        n = len(args)
        run = args[at] if n > at else None
        for i in values:
            if i < n and type(args[i]) not in SCALARS:
                check_value(args[i])
        body = [op, list(args)]
        shaped = reply is not None
    try:
        data = packer.pack(body)
    except (TypeError, ValueError, OverflowError):
        data = None
    if data is None or len(data) > max_bytes:
        data = pack_checked(packer, body, max_bytes)  # raises the error
    return run, data, shaped


def check_url(url) -> str:
    """`url` when it is ipc://path or tcp://host:port, else InvalidURL saying what is wanted."""
    if not isinstance(url, str):
        raise InvalidURL(f"a cluster URL is a str like ipc:///path/coordinator.sock or "
                         f"tcp://host:port, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in URL_SCHEMES or not rest:
        raise InvalidURL(f"a cluster URL looks like ipc:///path/coordinator.sock or "
                         f"tcp://host:port, got {url!r:.200}; use the coordinator's "
                         "client endpoint (inmem status prints it)")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidURL(f"a tcp cluster URL is tcp://host:port with a port from 1 to "
                             f"65535, got {url!r:.200}")
    return url


def check_number(name: str, value, allow_none: bool = False):
    """`value` as float seconds above 0 (or None when allowed), else InvalidOption."""
    if value is None and allow_none:
        return None
    if type(value) not in (int, float) or not value > 0:
        raise InvalidOption(f"{name} must be a number of seconds above 0, got {value!r:.60}")
    return float(value)


def check_connect_options(options: dict) -> None:
    unknown = options.keys() - set(CONNECT_OPTIONS)
    if unknown:
        raise InvalidOption(f"connect() got unknown options {sorted(unknown)}; it takes "
                            f"timeout and {', '.join(CONNECT_OPTIONS)}")


def check_client_options(max_message_bytes, direct, stream=True) -> None:
    # The cluster's own floor (its config refuses less): below it not even a small
    # request fits, and connect() would fail on its first message instead.
    if type(max_message_bytes) is not int or max_message_bytes < MIN_MESSAGE_BYTES:
        raise InvalidOption(f"max_message_bytes must be an int of at least "
                            f"{MIN_MESSAGE_BYTES}, got {max_message_bytes!r:.60}")
    for name, flag in (("direct", direct), ("stream", stream)):
        if type(flag) is not bool:
            raise InvalidOption(f"{name} must be True or False, got {flag!r:.60}")


def bare(exc: InmemError) -> InmemError:
    """`exc` without its traceback, to be handed back in a result list."""
    # The traceback holds the frame that holds the list: a reference cycle.
    return exc.with_traceback(None)


class SlotMap(NamedTuple):
    """Which shard owns each slot, the first slot of each shard, and each shard's endpoint."""

    owners: list
    shard_slot: list
    endpoints: list
    shard_count: int
    max_message_bytes: int | None
    #: each shard's Curve public key as the coordinator announced it (None: not announced)
    shard_keys: list | None

    @classmethod
    def parse(cls, m: dict) -> "SlotMap":
        """The coordinator's `slotmap` reply, expanded to one owner per slot."""
        owners = [0] * SLOT_COUNT
        first: dict = {}
        for start, end, shard in m["ranges"]:
            owners[start:end + 1] = [shard] * (end - start + 1)
            first.setdefault(shard, start)
        count = m["shard_count"]
        return cls(owners, [first.get(s, 0) for s in range(count)], list(m["shards"]), count,
                   m.get("max_message_bytes"), m.get("shard_keys"))


# -- pipelines -----------------------------------------------------------------------


_OP_OF = itemgetter(0)


def batch_segments(ops) -> list | None:
    """Where a pipeline must be cut so that it runs in its queued order on a cluster.

    Its run operations go to their shards in per-shard batches, and the
    operations that read every shard (`runs.list`, `orphaned_runs`...) are sent
    after those batches are answered (`plan_batch`'s `later`). That order is the
    queued one only while no run operation is queued after such a read; else
    the pipeline goes as consecutive parts, each ending with its reads of every
    shard: [(start, end), ...]. None: it goes whole.
    """
    if FANOUT_OPS.isdisjoint(map(_OP_OF, ops)):
        return None  # the usual pipeline, looked over at C speed
    cuts = []
    fanout = False
    for i, (op, args) in enumerate(ops):
        if op in FANOUT_OPS and route_run(op, args) is None:
            fanout = True
        elif fanout:
            cuts.append(i)
            fanout = False
    if not cuts:
        return None
    bounds = [0, *cuts, len(ops)]
    return list(zip(bounds, bounds[1:]))


def plan_batch(ops, owners, results: list, later: list,
               chunk_ops: int = BATCH_CHUNK_OPS) -> Iterator[tuple[int, list, list]]:
    """Group `ops` per owning shard: yield (shard, indexes, bodies) as each chunk fills.

    A full chunk is yielded at once, so its sender can send it while the rest
    is packed; the partial chunks follow at the end. An operation that cannot
    be encoded gets its error in `results`; operations that fan out to every
    shard go to `later`, by index, to be sent on their own.
    """
    groups: dict = {}  # shard -> ([indexes], [bodies]) not yielded yet
    shard_of_run: dict = {}
    by_first, value_args = ROUTE_BY_FIRST, VALUE_ARGS
    for i, (op, args) in enumerate(ops):
        # What route_run and op_body do, inline for the common operation:
        # this loop runs once per pipelined operation.
        if op in by_first and args and op != "tx.commit":
            run = args[0]
            if op in value_args:
                try:
                    check_values(op, args)
                except InmemError as exc:
                    results[i] = bare(exc)
                    continue
            body = [op, list(args)]
        else:
            run = route_run(op, args)
            if run is None and op in FANOUT_OPS:
                later.append(i)
                continue
            try:
                body = op_body(op, args)
            except InmemError as exc:
                results[i] = bare(exc)
                continue
        shard = shard_of_run.get(run) if type(run) is str else None
        if shard is None:
            shard = owners[slot_of(run)]
            if type(run) is str:
                shard_of_run[run] = shard
        g = groups.get(shard)
        if g is None:
            g = groups[shard] = ([], [])
        g[0].append(i)
        g[1].append(body)
        if len(g[0]) >= chunk_ops:
            yield shard, g[0], g[1]
            groups[shard] = ([], [])
    for shard, (indexes, bodies) in groups.items():
        if indexes:
            yield shard, indexes, bodies


def chunks(packer, indexes: list, bodies: list, results: list, max_message_bytes: int):
    """Packed BATCH bodies under the message limit, with the indexes each one holds.

    A chunk over the limit is halved until its halves fit; a single operation
    that does not fit gets its error in `results`.
    """
    try:
        yield indexes, pack_checked(packer, bodies, max_message_bytes)
        return
    except InmemError as exc:
        if len(bodies) == 1:
            results[indexes[0]] = bare(exc)
            return
    half = len(bodies) // 2
    yield from chunks(packer, indexes[:half], bodies[:half], results, max_message_bytes)
    yield from chunks(packer, indexes[half:], bodies[half:], results, max_message_bytes)


def apply_batch_reply(reply, indexes: list, ops, results: list) -> None:
    """Put one decoded BATCH reply (or the error that replaced it) in pipeline order."""
    if isinstance(reply, InmemError):
        for i in indexes:
            results[i] = reply
        return
    if type(reply) is not list or len(reply) != len(indexes):
        err = ProtocolError("a batch reply does not match its request")
        for i in indexes:
            results[i] = err
        return
    shapes = REPLY_SHAPES
    for i, r in zip(indexes, reply):
        op = ops[i][0]
        if op not in shapes or isinstance(r, InmemError):
            results[i] = r  # final as it came (an error, or a plain result)
        else:
            try:
                results[i] = shape(op, ops[i][1], r)
            except ProtocolError as exc:
                results[i] = bare(exc)


# -- shard health --------------------------------------------------------------------


def status_entry(status, shard: int) -> dict | None:
    """`shard`'s entry in a coordinator status reply, or None if the reply lacks it."""
    try:
        entry = status["shards"][shard]
    except (KeyError, IndexError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None


def shard_gone(shard: int, entry: dict | None, known_pids: dict) -> InmemError | None:
    """ShardUnavailable if the coordinator's `entry` says `shard` is down or is a newer process.

    `known_pids` (shard -> pid last seen) is updated with the entry's pid.
    None: the shard is up and the same process (or the entry is unknown).
    """
    if entry is None:
        return None  # the coordinator cannot say; the deadline decides
    if entry.get("state") != "ready":
        return ShardUnavailable(f"shard {shard} is {entry.get('state')}; retry shortly "
                                "(a request in flight may or may not have been applied)")
    pid, known = entry.get("pid"), known_pids.get(shard)
    known_pids[shard] = pid
    if known is not None and pid != known:
        return ShardUnavailable(f"shard {shard} restarted while the request was in flight; "
                                "it may or may not have been applied")
    return None


def shard_refused(shard: int, entry: dict | None) -> InmemError | None:
    """ShardUnavailable naming why, when the coordinator's `entry` says `shard`, whose
    address refused a connection, is not serving (None: it cannot say)."""
    if entry is None or entry.get("state") == "ready":
        return None
    why = entry.get("last_error")
    return ShardUnavailable(f"shard {shard} is {entry.get('state')}"
                            + (f" ({why})" if why else "")
                            + "; the request was not sent, retry shortly")


def shard_down(shard: int, entry: dict | None, known_pids: dict, url: str,
               request_timeout: float) -> InmemError:
    """Why a direct request got no answer from `shard` by its deadline."""
    if entry is None:
        return ShardUnavailable(f"shard {shard} does not answer and the coordinator at "
                                f"{url} could not say why")
    return shard_gone(shard, entry, known_pids) or Timeout(
        f"no reply from shard {shard} within {request_timeout:g} s")


def no_reply(url: str, request_timeout: float, batches: int | None = None) -> Timeout:
    """The Timeout of a request through the coordinator that got no reply in time."""
    tail = "" if batches is None else f" ({batches} batches unanswered)"
    return Timeout(f"no reply from {url} within {request_timeout:g} s{tail}")


def not_sent(url: str) -> Timeout:
    return Timeout(f"could not send to {url} within the deadline")


__all__ = ["packed_call", "URL_SCHEMES", "CONNECT_OPTIONS", "MIN_MESSAGE_BYTES", "BATCH_CHUNK_OPS", "NOT_READY_PAUSE_S",
           "DIRECT_CHECK_S", "REFRESH_MAX_S", "check_url", "check_number", "check_connect_options",
           "check_client_options", "bare", "SlotMap", "batch_segments", "plan_batch", "chunks",
           "apply_batch_reply", "status_entry", "shard_gone", "shard_refused", "shard_down", "no_reply",
           "not_sent"]
