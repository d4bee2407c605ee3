"""A cluster's CurveZMQ keys: the key directory, its files, and the Curve set-up of a socket.

Every tcp endpoint of a cluster with keys is a Curve server: traffic is
encrypted, and a peer is served only if its public key is one of the
cluster's. The key directory holds one keypair per party, in the certificate
format ZeroMQ tools read (`zmq.auth.load_certificate`)::

    coordinator.key   coordinator.key_secret
    shard-0.key       shard-0.key_secret       (one pair per shard)
    client.key        client.key_secret        (the default client, always; more with --clients)

`NAME.key` holds a public key, `NAME.key_secret` the keypair (mode 0600, in a
0700 directory). The public keys in the directory are the peers a server
admits: to let a new client in, generate its pair and copy its `.key` file to
every server's key directory; to shut one out, remove its `.key` and restart.
A host needs only its own `.key_secret` and everyone's `.key` files.

Servers check keys in a ZAP handler (`_ZapHandler`) on its own thread in the
process's ZeroMQ context: it answers only during a connection's handshake,
so it costs nothing per message. A peer whose key is
not admitted never completes the handshake: it gets no reply at all.

ipc endpoints are not touched: they are files in owner-only directories.
"""

from __future__ import annotations

import datetime
import os
import stat
import threading

import zmq
import zmq.auth
import zmq.utils.z85

from .errors import InmemError
from .files import DIR_MODE, FILE_MODE, NotRegularFile, fsync_dir, make_dirs, open_regular

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
COORDINATOR = "coordinator"
CLIENT = "client"
#: the ZAP domain of every Curve server socket of a cluster
ZAP_DOMAIN = "inmem"


class KeyFileError(InmemError):
    """A key directory or key file that cannot be used; the message says which and why."""

    #: a server that fails its start with it fails the same way every time, until
    #: someone fixes the file (see inmem.processes.lasting_failure)
    lasting = True


def shard_name(shard: int) -> str:
    return f"shard-{shard}"


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def insecure_warning(endpoints) -> str | None:
    """The start-up warning of a process serving tcp without keys (None if it serves no tcp)."""
    tcp = [e for e in endpoints if is_tcp(e)]
    if not tcp:
        return None
    return (f"{', '.join(tcp)} served WITHOUT authentication or encryption (insecure = true): "
            "anyone who can reach it can read and write this store")


# -- writing -----------------------------------------------------------------------

def _write_new(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _certificate(kind: str, public: bytes, secret: bytes | None) -> str:
    lines = [f"#   inmem cluster key, {kind}, generated {datetime.datetime.now():%Y-%m-%d %H:%M:%S}",
             "#   " + ("KEEP THIS FILE SECRET: it proves this party's identity."
                      if secret else "Public: copy it to every host that should admit this party."),
             "", "metadata", "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


#: the longest keypair name of a client (its file names stay far below a file system's limit)
CLIENT_NAME_MAX = 64


def names_for(shards: int, clients=(CLIENT,)) -> list[str]:
    """The keypair names of a cluster with `shards` shards and these clients.

    The default client's pair is always among them: `inmem.Cluster`, `inmem
    status --keys DIR` and `connect(url, keys=DIR)` use it, so a directory
    written for named clients alone would leave the cluster's own launcher
    locked out.
    """
    if type(shards) is not int or not 1 <= shards <= 1024:
        raise KeyFileError(f"a cluster has 1 to 1024 shards, got {shards!r}")
    names = [COORDINATOR] + [shard_name(i) for i in range(shards)] + [CLIENT]
    for client in clients:
        name = client if client == CLIENT or client.startswith(CLIENT + "-") else f"{CLIENT}-{client}"
        if (type(client) is not str or not client or name == CLIENT + "-"
                or not name.replace("-", "").replace("_", "").isalnum()
                or not name.isascii() or len(name) > CLIENT_NAME_MAX):
            raise KeyFileError(f"a client name is 1 to {CLIENT_NAME_MAX - len(CLIENT) - 1} "
                               f"letters, digits, - and _, got {client!r}")
        if name not in names:
            names.append(name)
    return names


def generate(directory, shards: int, clients=(CLIENT,)) -> list[tuple[str, str]]:
    """Write the keypairs a cluster needs into `directory` (made 0700); keep the ones there.

    Returns (name, "written" | "kept") for each keypair. A pair whose files
    exist is never overwritten: running this again after adding shards or
    clients only adds theirs.
    """
    directory = os.path.abspath(os.fspath(directory))
    names = names_for(shards, clients)  # refused names leave no directory behind
    made = make_dirs(directory)
    if not made:
        st = os.stat(directory)
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(directory, DIR_MODE)
    # Every pair already there is checked before anything is written: one a cluster would
    # refuse (or that admits another party than its secret proves) is no pair to keep.
    kept = set()
    for name in names:
        public_path = os.path.join(directory, name + PUBLIC_SUFFIX)
        secret_path = os.path.join(directory, name + SECRET_SUFFIX)
        have = [os.path.lexists(p) for p in (public_path, secret_path)]
        if any(have) and not all(have):
            raise KeyFileError(f"{directory} holds only one of {name}{PUBLIC_SUFFIX} and "
                               f"{name}{SECRET_SUFFIX}; remove it to have the pair made again")
        if all(have):
            _check_kept_pair(name, public_path, secret_path)
            kept.add(name)
    done = []
    for name in names:
        if name in kept:
            done.append((name, "kept"))
            continue
        public_path = os.path.join(directory, name + PUBLIC_SUFFIX)
        secret_path = os.path.join(directory, name + SECRET_SUFFIX)
        public, secret = zmq.curve_keypair()
        _write_new(secret_path, _certificate(name, public, secret))
        _write_new(public_path, _certificate(name, public, None))
        done.append((name, "written"))
    fsync_dir(directory)
    return done


def _check_kept_pair(name: str, public_path: str, secret_path: str) -> None:
    """KeyFileError unless the pair at these paths is one a cluster can use as it is."""
    again = (f"remove {name}{PUBLIC_SUFFIX} and {name}{SECRET_SUFFIX} to have the pair made "
             "again (then copy the new .key to every host)")
    try:
        public, _ = _load(secret_path, True)
        listed = _load(public_path, False)[0]
    except KeyFileError as exc:
        raise KeyFileError(f"{exc}; or {again}") from None
    if listed != public:
        raise KeyFileError(f"{public_path} is not the public key of {secret_path}: the cluster "
                           f"would admit another party than {name}; {again}")


# -- reading -----------------------------------------------------------------------

def _load(path: str, want_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        if want_secret:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                raise KeyFileError(f"the secret key {path} has mode {mode:04o}; others may read "
                                   f"it, so it is not used: chmod 600 it (or generate a new one)")
        # A FIFO (or a device) would block the open for good, deaf to signals: only
        # a regular file is read.
        os.close(open_regular(path))
        public, secret = zmq.auth.load_certificate(path)
    except NotRegularFile as exc:
        raise KeyFileError(f"the key file {path} is {exc.kind}, not a regular file") from None
    except FileNotFoundError:
        raise KeyFileError(f"no key file {path}; `inmem keys generate` writes it") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}") from None
    if len(public) != 40 or (want_secret and (secret is None or len(secret) != 40)):
        raise KeyFileError(f"{path} does not hold a Curve "
                           + ("keypair" if want_secret else "public key"))
    return public, secret


def keypair(directory, name: str) -> tuple[bytes, bytes]:
    """(public, secret) of `name` in the key directory (Z85 bytes)."""
    return _load(os.path.join(os.fspath(directory), name + SECRET_SUFFIX), True)


def public_key(directory, name: str) -> bytes:
    return _load(os.path.join(os.fspath(directory), name + PUBLIC_SUFFIX), False)[0]


def admitted_keys(directory) -> frozenset:
    """Every public key in the key directory: the peers a server of the cluster admits."""
    directory = os.fspath(directory)
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise KeyFileError(f"cannot read the key directory {directory}: {exc}") from None
    keys = {_load(os.path.join(directory, e), False)[0] for e in entries
            if e.endswith(PUBLIC_SUFFIX)}
    if not keys:
        raise KeyFileError(f"the key directory {directory} holds no public keys (*.key); "
                           "`inmem keys generate` writes them")
    return frozenset(keys)


# -- sockets -----------------------------------------------------------------------

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


class _ZapHandler(threading.Thread):
    """The context's ZAP handler: admits a Curve peer whose public key is one of the cluster's.

    A plain blocking loop over a REP socket (what ZeroMQ's ZAP protocol asks
    for), answering every request waiting before it sleeps again; it wakes
    only during handshakes. The socket is bound before the thread starts, so
    no Curve server of the context can handshake before a handler is there.
    """

    def __init__(self, ctx: zmq.Context, admitted: frozenset):
        super().__init__(name="inmem-zap", daemon=True)
        self.admitted = admitted
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        wake = f"inproc://inmem-zap-stop-{id(self)}"
        self._stop_send = ctx.socket(zmq.PAIR)
        self._stop_send.setsockopt(zmq.LINGER, 0)
        self._stop_send.bind(wake)
        self._stop_recv = ctx.socket(zmq.PAIR)
        self._stop_recv.setsockopt(zmq.LINGER, 0)
        self._stop_recv.connect(wake)

    def answer(self, msg: list) -> list:
        """The ZAP reply to one request: 200 for an admitted Curve key, 400 for anything else."""
        rid = msg[1] if len(msg) > 1 else b""
        if len(msg) >= 7 and msg[0] == b"1.0" and msg[5] == b"CURVE" and len(msg[6]) == 32:
            key = zmq.utils.z85.encode(msg[6])
            if key in self.admitted:
                return [b"1.0", rid, b"200", b"OK", key, b""]
        return [b"1.0", rid, b"400", b"not a key of this cluster", b"", b""]

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._stop_recv, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if self._stop_recv in events:
                    return
                while True:
                    try:
                        msg = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.sock.send_multipart(self.answer(msg))
        except zmq.ContextTerminated:
            return
        finally:
            self.sock.close(0)
            self._stop_recv.close(0)

    def stop(self) -> None:
        try:
            self._stop_send.send(b"")
        except zmq.ZMQError:
            pass
        self.join(5)
        self._stop_send.close(0)


class ServerKeys:
    """What a process needs to serve Curve: its keypair, the admitted keys, its ZAP handler."""

    def __init__(self, directory, name: str):
        self.directory = os.path.abspath(os.fspath(directory))
        self.name = name
        self.public, self.secret = keypair(self.directory, name)
        self.admitted = admitted_keys(self.directory)
        self._auth = None

    def start(self, ctx: zmq.Context) -> None:
        """Start this context's ZAP handler (once): from then on its Curve servers check keys."""
        if self._auth is not None:
            return
        self._auth = _ZapHandler(ctx, self.admitted)
        self._auth.start()

    def serve(self, sock: zmq.Socket) -> None:
        """Make `sock` (not bound yet) a Curve server that admits only the cluster's keys."""
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def connect_as_client(self, sock: zmq.Socket, server_public: bytes) -> None:
        """Make `sock` (not connected yet) a Curve client of the server with that key."""
        client(sock, self.public, self.secret, server_public)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def client(sock: zmq.Socket, public: bytes, secret: bytes, server_public: bytes) -> None:
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public


class ClientKeys:
    """A client's keypair and the coordinator's public key, from a key directory.

    `keys` is the key directory (the `client` pair is used) or the path of
    one client's `.key_secret` file, with the coordinator's `.key` beside it.
    """

    def __init__(self, keys):
        path = os.path.abspath(os.fspath(keys))
        if os.path.isdir(path):
            directory, name = path, CLIENT
        elif path.endswith(SECRET_SUFFIX):
            directory = os.path.dirname(path)
            name = os.path.basename(path)[:-len(SECRET_SUFFIX)]
        else:
            raise KeyFileError(f"keys is a key directory or a {SECRET_SUFFIX} file, got {path}")
        self.directory = directory
        self.public, self.secret = keypair(directory, name)
        self.coordinator = public_key(directory, COORDINATOR)

    def shard_key(self, shard: int) -> bytes | None:
        """A shard's public key from the directory, when it is there (else None)."""
        try:
            return public_key(self.directory, shard_name(shard))
        except KeyFileError:
            return None

    def apply(self, sock: zmq.Socket, server_public: bytes) -> None:
        client(sock, self.public, self.secret, server_public)


__all__ = ["generate", "names_for", "keypair", "public_key", "admitted_keys", "ServerKeys",
           "ClientKeys", "KeyFileError", "shard_name", "is_tcp", "insecure_warning", "client",
           "COORDINATOR", "CLIENT", "PUBLIC_SUFFIX", "SECRET_SUFFIX"]
