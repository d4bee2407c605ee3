"""Cluster configuration: TOML files, the built-in defaults, overrides, and the resolved spec.

`load(path, **overrides)` reads a TOML config on top of the built-in defaults
(`inmem/default.toml`, shipped in the package so it works from any working
directory), applies overrides, checks every value, and returns a `spec`: a
plain JSON-able dict that the coordinator and each shard worker receive, so
that every process of a cluster acts on the same resolved values.

A config may list its shards explicitly (multi-host)::

    [[shard]]
    id = 1
    endpoint = "tcp://10.0.0.12:7711"
    remote = true        # started by hand on that host; the coordinator only connects

Every tcp endpoint is served with CurveZMQ: `[cluster] keys` names the key
directory (`inmem keys generate`, see `inmem.keys`); a config with a tcp
endpoint and no keys is refused unless it says `insecure = true`.

Shards not listed, or listed without an endpoint, run on the coordinator's
host on an ipc socket in the data directory (or, when its path is too long for
an ipc socket, in a private runtime directory: see `prepare_socket_dir`).
"""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import tempfile
import tomllib
from importlib import resources

import inmem.durability as durability
from inmem.errors import InmemError, InvalidOption
from inmem.files import DIR_MODE, make_dirs
from inmem.routing import MIN_MESSAGE_BYTES
from inmem.shard.history import history_limit

DURABILITY_MODES = durability.MODES
#: longest ipc path we use: the kernel's limit (sun_path) is 108 bytes with its NUL
IPC_PATH_MAX = 100

#: section -> key -> accepted types (bool is checked apart: it is an int subclass)
_SCHEMA = {
    "cluster": {"data_dir": (str,), "shards": (str, int), "endpoint": (str,),
                "max_message_bytes": (int,), "keys": (str,), "insecure": (bool,)},
    "durability": {"mode": (str,), "max_value_bytes": (int,), "history": (str, int),
                   **{name: option.types for name, option in durability.OPTIONS.items()}},
    "supervisor": {"restart_backoff_ms": (int, float), "restart_backoff_max_ms": (int, float),
                   "stop_timeout_s": (int, float), "heartbeat_interval_s": (int, float),
                   "heartbeat_timeout_s": (int, float),
                   "restart_unresponsive_after_s": (int, float)},
}
#: flat override name -> (section, key); "durability" is the mode
_FLAT = {key: (section, key) for section, keys in _SCHEMA.items() for key in keys}
_FLAT["durability"] = ("durability", "mode")
del _FLAT["mode"]


class ConfigError(InmemError):
    """A config file or override that cannot be used; the message names the fix.

    `setting` is the (section, key) at fault when one setting is, so that
    `load` can say where its value came from (the file, or an override).
    """

    setting: tuple[str, str] | None = None


def _bad(section: str, key: str, message: str) -> ConfigError:
    """A ConfigError about one setting: `[section] key ...` and what is wrong with it."""
    err = ConfigError(f"[{section}] {message}")
    err.setting = (section, key)
    return err


def defaults() -> dict:
    text = resources.files("inmem").joinpath("default.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def read_toml(path) -> dict:
    """The tables of a config file; ConfigError for anything but a readable UTF-8 TOML file."""
    try:
        # Without waiting: a FIFO given as the config would hold the open for good.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            kind = "a directory" if os.path.isdir(path) else "not a regular file"
            raise ConfigError(f"config file {path} is {kind}; pass a TOML file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: not UTF-8 text (byte "
                          f"{exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load(path=None, **overrides) -> dict:
    """The resolved spec of a config file (None: the defaults) with overrides applied."""
    raw = defaults()
    if path is not None:
        _merge(raw, read_toml(path), str(path))
    # Test hooks (wipe, pinned clock) exist for the test suite only, so they are an
    # override of inmem.Cluster and never a setting of a config file.
    test_hooks = bool(overrides.pop("test_hooks", False))
    overridden = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in _FLAT:
            raise ConfigError(f"unknown setting {name!r}; known: {sorted(_FLAT)}")
        section, key = _FLAT[name]
        raw.setdefault(section, {})[key] = value
        overridden[(section, key)] = name
    try:
        spec = resolve(raw)
    except ConfigError as exc:
        # Say where the bad value was written: an operator fixes a file, or a flag.
        if exc.setting in overridden:
            raise _with_origin(exc, f"{exc} (given as the {overridden[exc.setting]} "
                                    "override)") from None
        if path is not None:
            raise _with_origin(exc, f"{path}: {exc}") from None
        raise
    spec["test_hooks"] = test_hooks
    return spec


def _with_origin(exc: ConfigError, message: str) -> ConfigError:
    err = ConfigError(message)
    err.setting = exc.setting
    return err


def _merge(base: dict, extra: dict, where: str) -> None:
    for section, table in extra.items():
        if section == "shard":
            if not isinstance(table, list):
                raise ConfigError(f"{where}: [[shard]] must be an array of tables")
            base["shard"] = copy.deepcopy(table)
            continue
        if section not in _SCHEMA:
            raise ConfigError(f"{where}: unknown section [{section}]; known: {sorted(_SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key, value in table.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"{where}: unknown setting {key!r} in [{section}]; known: "
                                  f"{sorted(_SCHEMA[section])}")
            base[section][key] = value


def _check(section: str, key: str, value):
    types = _SCHEMA[section][key]
    ok = (type(value) is bool) if types == (bool,) else (
        type(value) is not bool and isinstance(value, types))
    if not ok:
        names = " or ".join(t.__name__ for t in types)
        article = "an" if names[0] in "aeiou" else "a"
        raise _bad(section, key, f"{key} must be {article} {names}, got {value!r}")
    return value


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def resolve(raw: dict) -> dict:
    for section, keys in _SCHEMA.items():
        for key in keys:
            if key not in raw.get(section, {}):
                raise _bad(section, key, f"{key} is missing")
            _check(section, key, raw[section][key])
    c, d, s = raw["cluster"], raw["durability"], raw["supervisor"]
    if not c["data_dir"].strip():
        # abspath("") is the working directory: an empty value is a slip, not a choice.
        raise _bad("cluster", "data_dir", 'data_dir is empty; name a directory (e.g. "./data")')
    data_dir = os.path.abspath(os.path.expanduser(c["data_dir"]))
    mode = d["mode"]
    if mode not in DURABILITY_MODES:
        raise _bad("durability", "mode",
                   f"mode must be one of {DURABILITY_MODES}, got {mode!r}")
    for key in durability.OPTIONS:
        why = durability.problem(key, d[key])
        if why:
            raise _bad("durability", key, why)
    if d["max_value_bytes"] < 1:
        raise _bad("durability", "max_value_bytes",
                   f"max_value_bytes must be at least 1, got {d['max_value_bytes']}")
    try:
        history_limit(d["history"])
    except InvalidOption as exc:
        raise _bad("durability", "history", str(exc)) from None
    if d["history"] != "full" and mode != "inmemory":
        raise _bad("durability", "history",
                   f'history = {d["history"]!r} limits inmemory shards; a {mode} shard '
                   f'keeps every run\'s history on disk: use "full"')
    for key in ("max_message_bytes",):
        if c[key] < MIN_MESSAGE_BYTES:
            raise _bad("cluster", key, f"{key} must be at least {MIN_MESSAGE_BYTES}, got {c[key]}")
    for key in ("heartbeat_interval_s", "heartbeat_timeout_s", "stop_timeout_s"):
        if s[key] <= 0:
            raise _bad("supervisor", key, f"{key} must be above 0, got {s[key]}")
    for key in ("restart_backoff_ms", "restart_backoff_max_ms"):
        if s[key] < 0:
            raise _bad("supervisor", key, f"{key} must be 0 or more, got {s[key]}")
    if s["restart_backoff_max_ms"] < s["restart_backoff_ms"]:
        raise _bad("supervisor", "restart_backoff_max_ms",
                   f"restart_backoff_max_ms must be at least restart_backoff_ms "
                   f"({s['restart_backoff_ms']}), got {s['restart_backoff_max_ms']}")
    kill_after = s["restart_unresponsive_after_s"]
    if kill_after != 0 and kill_after <= s["heartbeat_timeout_s"]:
        # Only a shard already known to be unresponsive is killed: a limit within the
        # heartbeat timeout would kill on the first missed ping.
        raise _bad("supervisor", "restart_unresponsive_after_s",
                   f"restart_unresponsive_after_s must be 0 (never) or above "
                   f"heartbeat_timeout_s ({s['heartbeat_timeout_s']}), got {kill_after}")
    _check_endpoint("[cluster] endpoint", c["endpoint"], auto=True,
                    setting=("cluster", "endpoint"))
    listed = raw.get("shard") or []
    shards_auto = c["shards"] == "auto"
    if isinstance(c["shards"], str) and not shards_auto:
        raise _bad("cluster", "shards", f'shards must be a number or "auto", got {c["shards"]!r}')
    if listed:
        count = len(listed)
        if not shards_auto and c["shards"] != count:
            raise ConfigError(f"[cluster] shards = {c['shards']} but {count} [[shard]] "
                              "tables are listed; make them agree")
        shards_auto = False
    else:
        count = cpu_count() if shards_auto else c["shards"]
    if not 1 <= count <= 1024:
        raise _bad("cluster", "shards", f"shards must be between 1 and 1024, got {count}")
    keys = os.path.abspath(os.path.expanduser(c["keys"])) if c["keys"] else None
    spec = {
        "data_dir": data_dir,
        "endpoint": c["endpoint"],
        "keys": keys,
        "insecure": c["insecure"],
        "max_message_bytes": c["max_message_bytes"],
        "durability": mode,
        "options": {k: d[k] for k in durability.OPTIONS},
        "max_value_bytes": d["max_value_bytes"],
        "history": d["history"],
        "supervisor": dict(s),
        "shards_auto": shards_auto,
        "shard_table": _shard_table(listed),
    }
    return with_shard_count(spec, count)


def _shard_table(listed) -> dict:
    table = {}
    for entry in listed:
        if not isinstance(entry, dict):
            raise ConfigError("each [[shard]] must be a table")
        unknown = entry.keys() - {"id", "endpoint", "remote"}
        if unknown:
            raise ConfigError(f"[[shard]] has unknown settings {sorted(unknown)}")
        sid = entry.get("id")
        if type(sid) is not int or sid in table:
            raise ConfigError(f"[[shard]] id must be a distinct int, got {sid!r}")
        endpoint = entry.get("endpoint", "auto")
        remote = entry.get("remote", False)
        if type(endpoint) is not str or type(remote) is not bool:
            raise ConfigError(f"[[shard]] {sid}: endpoint is a str and remote a bool")
        if remote and endpoint == "auto":
            raise ConfigError(f"[[shard]] {sid} is remote, so it needs a tcp endpoint")
        _check_endpoint(f"[[shard]] {sid} endpoint", endpoint, auto=not remote)
        table[sid] = {"endpoint": endpoint, "remote": remote}
    if table and sorted(table) != list(range(len(table))):
        raise ConfigError(f"[[shard]] ids must be 0..{len(table) - 1}, got {sorted(table)}")
    return {str(k): v for k, v in table.items()}


def with_shard_count(spec: dict, count: int) -> dict:
    """The spec with `count` shards and every endpoint filled in."""
    spec = dict(spec)
    table = spec["shard_table"]
    if table and len(table) != count:
        raise ConfigError(f"the data directory holds {count} shards but the config lists "
                          f"{len(table)}; list {count}")
    sock_dir = socket_dir(spec["data_dir"])
    if spec["endpoint"] == "auto":
        spec["client_endpoint"] = f"ipc://{os.path.join(sock_dir, 'coordinator.sock')}"
    else:
        spec["client_endpoint"] = spec["endpoint"]
    shards = []
    for i in range(count):
        entry = table.get(str(i), {"endpoint": "auto", "remote": False})
        endpoint = entry["endpoint"]
        if endpoint == "auto":
            endpoint = f"ipc://{os.path.join(sock_dir, f'shard-{i}.sock')}"
        shards.append({"id": i, "endpoint": endpoint, "remote": entry["remote"]})
    spec["shards"] = shards
    _check_distinct(spec)
    check_transport(spec)
    return spec


def _check_distinct(spec: dict) -> None:
    """ConfigError when two parts of the cluster are given one endpoint: the second to bind
    would fail and be restarted forever, or answer for the wrong shard."""
    seen = {}
    for label, endpoint in [("[cluster] endpoint", spec["client_endpoint"]),
                            *((f"[[shard]] {s['id']} endpoint", s["endpoint"])
                              for s in spec["shards"])]:
        if endpoint in seen:
            raise ConfigError(f"{label} is {endpoint}, which {seen[endpoint]} is too; give "
                              "each shard and the coordinator an endpoint of its own")
        seen[endpoint] = label


#: the longest path of an ipc endpoint: a Unix socket's sun_path (108 bytes) less its NUL
IPC_ENDPOINT_PATH_MAX = 107


def _check_endpoint(label: str, endpoint: str, auto: bool, setting=None) -> None:
    """ConfigError unless `endpoint` is "auto" (where allowed), tcp://HOST:PORT or ipc://PATH
    with a path a Unix socket can have; `label` names the setting ("[cluster] endpoint")."""
    def bad(what: str) -> ConfigError:
        err = ConfigError(f"{label} {what}")
        err.setting = setting
        return err
    if auto and endpoint == "auto":
        return
    if endpoint.startswith("tcp://"):
        host, sep, port = endpoint[len("tcp://"):].rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise bad(f"{endpoint!r} must be tcp://HOST:PORT with a port from 1 to 65535")
        return
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        size = len(path.encode("utf-8", "surrogateescape"))
        if not path:
            raise bad(f"{endpoint!r} names no socket path")
        if size > IPC_ENDPOINT_PATH_MAX:
            raise bad(f"{endpoint!r}: its path is {size} bytes, and a Unix socket's may be at "
                      f"most {IPC_ENDPOINT_PATH_MAX}; use a shorter path"
                      + (' or "auto"' if auto else ""))
        return
    wanted = '"auto", ' if auto else ""
    raise bad(f"must be {wanted}tcp://HOST:PORT or ipc://PATH, got {endpoint!r}")


def check_not_nested(data_dir: str, source: str) -> None:
    """ConfigError when `data_dir` is an embedded store's directory, or lies inside another
    cluster's data directory, inside one of its shard directories, or inside an embedded
    store's directory: the files of the two would mix (a shard's WAL and snapshots are its
    directory's alone). `source` says where the value came from."""
    from inmem.files import enclosing_data_dir, is_cluster_dir, is_store_dir
    if is_store_dir(data_dir) and not _has_shard_dirs(data_dir):
        # Its shards would be made inside the store's directory and refused there, after
        # the coordinator had left its lock, slot map and logs among the store's files.
        here = os.path.abspath(data_dir)
        name, parent = os.path.basename(here), os.path.dirname(here)
        what = (f"the directory of shard {name[6:]} of the cluster at {parent}"
                if name.startswith("shard-") and name[6:].isdigit() and is_cluster_dir(parent)
                else "the directory of an embedded store (inmem.open)")
        raise ConfigError(f"{source}: [cluster] data_dir {data_dir} is {what}; a cluster "
                          "keeps its data in a directory of its own: name another one")
    found = enclosing_data_dir(data_dir)
    if found is not None:
        root, what = found
        raise ConfigError(f"{source}: [cluster] data_dir {data_dir} is inside {root}, {what}; "
                          "a data directory may not be inside another's, as their files would "
                          "mix: name a directory outside it")


def _has_shard_dirs(data_dir: str) -> bool:
    try:
        names = os.listdir(data_dir)
    except OSError:
        return False
    return any(n.startswith("shard-") and n[6:].isdigit()
               and os.path.isdir(os.path.join(data_dir, n)) for n in names)


def check_data_dir(spec: dict, source: str) -> None:
    """ConfigError when the data directory cannot be one: a file is there (or on its path),
    its parent does not exist, this user may not create or write it, or it is inside
    another data directory (`check_not_nested`). `source` says where its value came from."""
    data_dir = spec["data_dir"]
    check_not_nested(data_dir, source)
    probe = data_dir
    while not os.path.isdir(probe):
        if os.path.lexists(probe):
            what = "is a file" if probe == data_dir else f"is under {probe}, which is a file"
            raise ConfigError(f"{source}: [cluster] data_dir {data_dir} {what}, not a "
                              "directory; name a directory")
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    parent = os.path.dirname(data_dir)
    if not os.path.isdir(parent):
        # The data directory itself is made; a missing chain above it is more
        # likely a typo (/var/lib/inmme/data) than a wish, as for Redis's dir.
        raise ConfigError(f"{source}: [cluster] data_dir {data_dir}: its parent directory "
                          f"{parent} does not exist; create it first (or check the path)")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "" if probe == data_dir else f" (its parent {probe} exists and)"
        raise ConfigError(f"{source}: [cluster] data_dir {data_dir}{what} is not writable by "
                          f"this user (uid {os.geteuid()}); name another, or fix its "
                          "permissions")


def check_endpoints_free(spec: dict, source: str) -> None:
    """ConfigError when an endpoint this host would serve is taken already: a tcp port
    another process listens on, an ipc socket another process serves (a second cluster
    given the same endpoint). Checked before any shard starts, so the refusal costs no
    recovery; `source` says where the settings came from."""
    from inmem.files import CLUSTER_LOCK_NAME, lock_is_held, socket_in_use
    if lock_is_held(os.path.join(spec["data_dir"], CLUSTER_LOCK_NAME)):
        return  # its coordinator's own endpoints: the lock refuses the start, naming its pid
    local = [("[cluster] endpoint", spec["client_endpoint"])]
    local += [(f"[[shard]] {s['id']} endpoint", s["endpoint"]) for s in spec["shards"]
              if not s["remote"]]
    for label, endpoint in local:
        if endpoint.startswith("ipc://"):
            if socket_in_use(endpoint[len("ipc://"):]):
                raise ConfigError(f"{source}: {label} {endpoint} is served by another process "
                                  "already (another cluster given the same endpoint?)")
        elif endpoint.startswith("tcp://"):
            why = _tcp_bind_problem(endpoint)
            if why:
                raise ConfigError(f"{source}: {label} {endpoint}: {why}")


def check_shard_can_serve(spec: dict, shard: int, source: str) -> None:
    """ConfigError when `inmem shard serve --shard N` could only fail after its recovery:
    no such shard, its tcp endpoint without its keys or taken, its ipc socket served."""
    import inmem.keys as keys
    from inmem.files import socket_in_use
    count = len(spec["shards"])
    if not 0 <= shard < count:
        raise ConfigError(f"{source}: the cluster has shards 0 to {count - 1}, not {shard}")
    endpoint = spec["shards"][shard]["endpoint"]
    label = f"[[shard]] {shard} endpoint"
    if endpoint.startswith("tcp://"):
        if spec.get("keys"):
            try:
                keys.ServerKeys(spec["keys"], keys.shard_name(shard))
            except keys.KeyFileError as exc:
                raise ConfigError(f"{source}: [cluster] keys: {exc}") from None
        why = _tcp_bind_problem(endpoint)
        if why:
            raise ConfigError(f"{source}: {label} {endpoint}: {why}")
    elif endpoint.startswith("ipc://") and socket_in_use(endpoint[len("ipc://"):]):
        raise ConfigError(f"{source}: {label} {endpoint} is served by another process already")


def interface_address(name: str) -> str | None:
    """The IPv4 address of this host's network interface `name` ("lo", "eth0"), as ZeroMQ
    binds tcp://NAME:PORT; None if no interface has that name, or it has no IPv4 address
    (or this system cannot say: the ioctl is Linux's)."""
    import fcntl
    import socket
    import struct
    if not _is_interface(name):
        return None
    siocgifaddr = 0x8915  # Linux: the IPv4 address of an interface
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(probe.fileno(), siocgifaddr,
                             struct.pack("256s", name.encode("utf-8")[:15]))
        return socket.inet_ntoa(packed[20:24])
    except OSError:
        return None
    finally:
        probe.close()


def _is_interface(name: str) -> bool:
    """Whether this host has a network interface called `name` (ZeroMQ binds those first)."""
    import socket
    try:
        return name in {n for _, n in socket.if_nameindex()}
    except (OSError, AttributeError):
        return False


def connect_endpoint(endpoint: str) -> str:
    """Where a client on this host connects to reach `endpoint` as bound here.

    A tcp endpoint may name a network interface (tcp://eth0:7700), which
    ZeroMQ binds on that interface's address but cannot connect to: the
    address takes its place. Any other endpoint is returned as it is.
    """
    if not endpoint.startswith("tcp://"):
        return endpoint
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    address = interface_address(host) if host else None
    return endpoint if address is None else f"tcp://{address}:{port}"


def _tcp_bind_problem(endpoint: str) -> str | None:
    """Why this host cannot listen on a tcp endpoint now (None: it can, as far as we see).

    A host that names a network interface (ZeroMQ binds tcp://lo:7700 and
    tcp://eth0:7700 on the interface's address) is probed at that address;
    one without an IPv4 address is left to the bind itself to report.
    """
    import errno
    import socket
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    if host == "*":
        host = ""
    elif _is_interface(host):
        address = interface_address(host)
        if address is None:
            return None
        host = address
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot resolve {host!r}: {exc}"
    probe = socket.socket(family, kind, proto)
    try:
        # As ZeroMQ's listener does: a port left in TIME_WAIT is free to take.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} is in use by another process; stop it or choose another port"
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"this host has no address {host}; bind one of its own (or *)"
        if exc.errno == errno.EACCES:
            return f"this user may not listen on port {port}"
        return f"cannot listen there: {exc.strerror or exc}"
    finally:
        probe.close()
    return None


def tcp_endpoints(spec: dict) -> list:
    """The cluster's tcp endpoints: the coordinator's and the shards' that are on tcp."""
    return [e for e in [spec["client_endpoint"], *(s["endpoint"] for s in spec["shards"])]
            if e.startswith("tcp://")]


def check_transport(spec: dict) -> None:
    """ConfigError when a tcp endpoint would be open to anyone: no keys and no `insecure = true`.

    A tcp endpoint is reached from the network, so it serves only with Curve
    keys (every peer authenticated, every message encrypted), unless the
    config says explicitly that it may run without.
    """
    tcp = tcp_endpoints(spec)
    if tcp and not spec.get("keys") and not spec.get("insecure"):
        raise ConfigError(
            f"{tcp[0]} is a tcp endpoint and the config names no key directory, so anyone "
            f"who can reach it could read and write the store: run `inmem keys generate "
            f"DIR --shards {len(spec['shards'])}` and set [cluster] keys = \"DIR\" (or, on a "
            f"network you trust, set [cluster] insecure = true)")


def socket_dir(data_dir: str) -> str:
    """Where the cluster's ipc sockets live: the data directory, unless its path is too long.

    A long data directory (deep temporary directories are common in tests)
    would overflow the kernel's limit on socket paths; then the sockets go to
    a short directory named by a hash of the data directory, still unique to it.
    """
    if len(os.path.join(data_dir, "coordinator.sock")) + 8 <= IPC_PATH_MAX:
        return data_dir
    digest = hashlib.sha1(data_dir.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"inmem-{digest}")


def prepare_socket_dir(spec: dict) -> None:
    """Make the directories of this host's ipc endpoints: private, and ours.

    The short runtime directory (see `socket_dir`) has a predictable name in
    the shared temporary directory, so another user could create it first and
    watch or replace the sockets in it: one that exists already must be a
    real directory owned by this user with mode 0700, or the cluster refuses
    to start. Other socket directories are made 0700 if they do not exist.
    """
    data_dir = spec["data_dir"]
    runtime = socket_dir(data_dir)
    endpoints = [spec["client_endpoint"]]
    endpoints += [s["endpoint"] for s in spec["shards"] if not s["remote"]]
    for directory in sorted({os.path.dirname(e[6:]) for e in endpoints
                             if e.startswith("ipc://")}):
        if directory == runtime and runtime != data_dir:
            _private_runtime_dir(runtime)
        else:
            make_dirs(directory)


def runtime_dir_problem(path: str) -> str | None:
    """Why an existing socket directory may not be used (None: it is ours and private)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return None


def _private_runtime_dir(path: str) -> None:
    try:
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE)
        return
    except FileExistsError:
        pass
    problem = runtime_dir_problem(path)
    if problem:
        raise ConfigError(
            f"the socket directory {path} (used because the data directory's path is too "
            f"long for an ipc socket) {problem}, so others could reach this cluster's "
            f"sockets; remove it (or have its owner remove it), or use a shorter data "
            f"directory path")


def shard_dir(spec: dict, shard: int) -> str:
    return os.path.join(spec["data_dir"], f"shard-{shard}")


__all__ = ["ConfigError", "load", "resolve", "with_shard_count", "defaults", "socket_dir",
           "check_data_dir", "check_not_nested", "check_endpoints_free", "check_shard_can_serve",
           "check_transport", "tcp_endpoints", "connect_endpoint", "interface_address",
           "prepare_socket_dir", "runtime_dir_problem", "shard_dir", "cpu_count",
           "DURABILITY_MODES"]
