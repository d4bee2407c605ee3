"""Files and directories on disk: private permissions, durable creation, the lock, evidence copies.

Whatever inmem writes may hold an agent's data, so every file it creates is
0600 and every directory 0700, whatever the umask: the mode is set again with
chmod after creation, because a umask can only take bits away (and an odd one
takes the owner's too).

A directory entry is durable only once the directory holding it is fsynced:
`make_dirs` fsyncs every directory it creates and the parent of each, so that a
new store's directories survive a crash before its first acknowledged write.

This module holds the code base's one directory fsync (`fsync_dir`), its one
exclusive lock (`try_lock`), and the evidence copies that recovery keeps before
it repairs a file (`keep_evidence_copy`, `move_to_evidence`): numbered
`<name>.broken.1`, `.broken.2`, ..., fsynced, never written over.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat

from .errors import InmemError

FILE_MODE = 0o600
DIR_MODE = 0o700
EVIDENCE_SUFFIX = ".broken"

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_COPY_CHUNK = 1 << 20


# -- fsync of directories ---------------------------------------------------------

def _sync_dir(path: str, fsync) -> None:
    """The seam every directory fsync goes through (tests replace it to see which ones ran)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory, fsync=None) -> None:
    """fsync a directory so that a file created, renamed or removed in it is durable.

    `fsync` replaces os.fsync (the WAL passes its own, so that its fault tests
    see directory fsyncs too).
    """
    _sync_dir(os.path.abspath(os.fspath(directory)), os.fsync if fsync is None else fsync)


# -- private directories and files ------------------------------------------------

def make_dirs(path, fsync=None, tighten: bool = False) -> list[str]:
    """Create `path` and its missing parents as 0700 directories, durably; return what was made.

    Each directory made is fsynced, and so is the parent of each (the first
    one's parent existed already), before this returns. An existing directory
    is left as it is, unless `tighten` is set: then one that this user owns
    and that others may enter is made 0700 (for directories that only inmem
    creates, such as a store's wal/, written by an older release).
    """
    path = os.path.abspath(os.fspath(path))
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    made = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise NotADirectory(directory) from None
            continue  # made by someone else meanwhile: theirs to make durable
        os.chmod(directory, DIR_MODE)
        made.append(directory)
    for directory in made:
        fsync_dir(directory, fsync)
    if made:
        fsync_dir(os.path.dirname(made[0]), fsync)
    elif tighten:
        _tighten(path)
    return made


def _tighten(path: str) -> None:
    st = os.lstat(path)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, DIR_MODE)


def open_private(path, flags: int) -> int:
    """os.open(path, flags) for a file that only its owner may read: 0600 whatever the umask.

    A file that already exists with a wider mode (written by an older
    release) is narrowed too, when this user owns it.
    """
    fd = os.open(path, flags | _CLOEXEC, FILE_MODE)
    try:
        if flags & os.O_CREAT:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) != FILE_MODE and st.st_uid == os.geteuid():
                os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_opener(path, flags: int) -> int:
    """An `opener` for the built-in open() that creates the file 0600."""
    return open_private(path, flags)


def replace_durably(path: str, data, tmp_suffix: str = ".tmp") -> None:
    """Make `data` the file at `path`, all or nothing across a crash; owner-only.

    Written under a temporary name beside it and fsynced, renamed over
    `path`, then the directory fsynced: a crash leaves the old file or the
    new one, never a mix (at worst a stray temporary file).
    """
    tmp = path + tmp_suffix
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


class NotADirectory(FileExistsError):
    """Something other than a directory holds a name that must be a directory (a store's wal/,
    a data directory): `kind` says what ("a file", "a FIFO", ...), `filename` is the path.

    A FileExistsError, as the mkdir that met it raised; its text says what is wrong and where.
    """

    def __init__(self, path, kind: str | None = None):
        path = os.fspath(path)
        self.kind = kind if kind is not None else kind_of(path)
        super().__init__(errno.EEXIST, f"{self.kind}, not a directory", path)

    def __str__(self) -> str:
        return f"{self.filename} is {self.kind}, not a directory"


def kind_of(path) -> str:
    """What is at `path`, as a phrase: "a file", "a directory", "a FIFO", ... ("nothing")."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        try:
            os.lstat(path)
        except OSError:
            return "nothing"
        return "a dangling symbolic link"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return "something this user may not look at"
    if stat.S_ISREG(mode):
        return "a file"
    return next((k for test, k in _KINDS if test(mode)), "not a directory")


def describe_os_error(exc: OSError) -> str:
    """One line that says what is wrong on disk and where, for an OSError met opening a store.

    "<path> is a file, not a directory", "permission denied on <path> ...",
    and the like, instead of "[Errno 17] File exists: '<path>'".
    """
    if isinstance(exc, NotADirectory):
        return str(exc)
    if isinstance(exc, NotRegularFile):
        return f"{exc.filename} is {exc.kind}, not a regular file"
    path = exc.filename
    code = exc.errno
    if path is None:
        return exc.strerror or str(exc) or type(exc).__name__
    if code == errno.EEXIST and not os.path.isdir(path):
        return f"{path} is {kind_of(path)}, not a directory"
    if code == errno.ENOTDIR:
        blocker = _first_non_directory(path)
        if blocker is not None:
            return f"{path} is under {blocker}, which is {kind_of(blocker)}, not a directory"
        return f"{path}: a part of this path is not a directory"
    if code == errno.EISDIR:
        return f"{path} is a directory, not a regular file"
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied on {path}: this user (uid {os.geteuid()}) may not use it; "
                "fix its owner or mode")
    if code == errno.EROFS:
        return f"{path} is on a read-only file system"
    if code == errno.ENOSPC:
        return f"no space left on the device holding {path}"
    if code == errno.EDQUOT:
        return f"the disk quota is used up on the device holding {path}"
    if code == errno.ENOENT:
        return f"{path} does not exist"
    if code == errno.ENAMETOOLONG:
        return f"{path}: the path is too long"
    if code == errno.ELOOP:
        return f"{path}: too many symbolic links (a loop?)"
    return f"{path}: {exc.strerror or exc}"


def _first_non_directory(path: str) -> str | None:
    """The first existing ancestor of `path` (or `path`) that is not a directory, else None."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        here = os.sep.join(parts[:i]) or os.sep
        if os.path.lexists(here) and not os.path.isdir(here):
            return here
    return None


# -- directories inside others' ------------------------------------------------------

#: the file every durable store (an embedded store, a shard) holds locked in its directory
STORE_LOCK_NAME = "LOCK"


def is_store_dir(path) -> bool:
    """Whether `path` is a durable store's directory (an embedded store's or a shard's): its
    lock file, wal/ and snapshots/, which its first open makes."""
    return (os.path.isfile(os.path.join(path, STORE_LOCK_NAME))
            and all(os.path.isdir(os.path.join(path, sub)) for sub in ("wal", "snapshots")))


def is_cluster_dir(path) -> bool:
    """Whether `path` is a cluster's data directory (a coordinator has served it)."""
    return os.path.isfile(os.path.join(path, CLUSTER_LOCK_NAME))


def enclosing_data_dir(path, clusters: bool = True) -> tuple[str, str] | None:
    """(the directory, what it is) of the nearest cluster data directory or store directory
    that strictly contains `path`, else None; `clusters=False` looks for store directories
    only (a shard's directory is one).

    A shard's own directory (`<cluster>/shard-N`) is its cluster's: what
    encloses it is looked for above the cluster. What it is: "the data
    directory of a cluster", or "the directory of shard N of the cluster at
    <dir>", or "the directory of a store".
    """
    here = os.path.abspath(os.fspath(path))
    child = None
    while True:
        parent = os.path.dirname(here)
        if parent == here:
            return None
        child, here = here, parent
        if clusters and is_cluster_dir(here):
            if child == os.path.abspath(os.fspath(path)) and _shard_number(child) is not None:
                continue  # a cluster's own shard directory
            return here, "the data directory of a cluster"
        if is_store_dir(here):
            number = _shard_number(here)
            if number is not None and is_cluster_dir(os.path.dirname(here)):
                return here, (f"the directory of shard {number} of the cluster at "
                              f"{os.path.dirname(here)}")
            return here, "the directory of a store"


def _shard_number(path: str) -> int | None:
    name = os.path.basename(path)
    if name.startswith("shard-") and name[6:].isdigit():
        return int(name[6:])
    return None


# -- the lock -----------------------------------------------------------------------

def try_lock(path, holder: str | None = None) -> int | None:
    """An exclusive flock on the file `path` (made 0600 if new): its fd, or None if held elsewhere.

    The lock lasts until the fd is closed (or the process ends, however it
    ends). A second open of the same path in this process is refused too.
    `holder`: what holds it, written into the file with this process's id so
    that whoever is refused can say who has it (`lock_holder`); the file's
    content is only ever read for that message, never trusted for the lock.
    """
    # Something other than a file under the name: a socket cannot be opened at all, and a
    # FIFO opens but cannot be locked, each with a bare errno naming nothing.
    _refuse_non_file(path, os.stat)
    fd = open_private(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK)
    try:
        _refuse_non_file(path, lambda _: os.fstat(fd))
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if holder is not None:
            note = f"{os.getpid()} {holder}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_non_file(path, stat_of) -> None:
    """NotRegularFile if `stat_of(path)` finds something other than a regular file there."""
    try:
        mode = stat_of(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, next((k for test, k in _KINDS if test(mode)),
                                        "not a regular file"))


def lock_holder(path) -> tuple[int, str] | None:
    """(pid, holder) as the lock's holder wrote them (`try_lock`), or None if it wrote none.

    Only read while the lock is held elsewhere; a holder that has not written
    yet, or a file written by another program, reads as None.
    """
    pid, holder = _lock_note(path)
    return (pid, holder) if pid is not None and holder else None


def _lock_note(path) -> tuple[int | None, str]:
    """(the pid, the holder's words after it) of a lock file: "4242 an embedded store\n",
    or a bare pid as a coordinator writes it; (None, "") for anything else."""
    try:
        fd = open_regular(path)  # never waits on a FIFO under the name
    except OSError:
        return None, ""
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace")
    except OSError:
        return None, ""
    finally:
        os.close(fd)
    pid, _, holder = text.strip().partition(" ")
    if not pid.isdigit() or not int(pid):
        return None, ""
    return int(pid), holder.strip()


def lock_is_held(path) -> bool:
    """Whether another open file holds an flock on the existing file `path` (False if absent).

    Only looks: the file is not created, and no lock is kept.
    """
    try:
        fd = open_regular(path)  # a FIFO is no lock file, and opening it would wait
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the shared lock if it was taken
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process: only the lock can say
    return True


#: the file in a cluster's data directory that its coordinator holds locked while it serves
CLUSTER_LOCK_NAME = "coordinator.lock"


def lock_file_pid(path) -> int | None:
    """The pid a lock file records (its holder's while the lock is held), or None."""
    return _lock_note(path)[0]


def serving_cluster_root(path) -> str | None:
    """The data directory of a running cluster that `path` is (or is inside), else None.

    The lock is only tried when the pid the lock file records is alive: a
    look at the lock is itself a lock for an instant, and a coordinator
    starting on the directory just then would take it for a rival.
    """
    here = os.path.abspath(path)
    while True:
        lock = os.path.join(here, CLUSTER_LOCK_NAME)
        pid = lock_file_pid(lock)
        if pid is not None and _alive(pid) and lock_is_held(lock):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


# -- the extent of a file's data ----------------------------------------------------

def data_end(fd: int, size: int) -> int:
    """Where the data of a file ends, if everything after it is a hole; else `size`.

    A preallocated file's unwritten tail reads as zeros, and ext4 and xfs
    (among others) report it as a hole: it need not be read to know that.
    Nothing here is a guess: without hole support the answer is `size`.
    The file offset is left where it was.
    """
    position = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        return _first_hole_at_end(fd, size)
    finally:
        os.lseek(fd, position, os.SEEK_SET)


def _first_hole_at_end(fd: int, size: int) -> int:
    try:
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
        if hole >= size:
            return size
        try:
            os.lseek(fd, hole, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return hole  # no data after the first hole
            raise
        return size  # data after a hole: read it all
    except (OSError, AttributeError):
        return size


class NotRegularFile(OSError):
    """A name the store reads holds a directory, a FIFO, a socket or a device, not a file.

    `kind` says which ("a directory", "a FIFO", ...); `filename` is the path.
    """

    def __init__(self, path, kind: str):
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", os.fspath(path))
        self.kind = kind


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def open_regular(path) -> int:
    """A read-only descriptor on `path`, which must be a regular file, else NotRegularFile.

    Opened non-blocking: opening a FIFO for reading would wait for a writer
    for good, where a regular file ignores the flag.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
            raise NotRegularFile(path, kind)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_data(path) -> tuple[bytes, int]:
    """(the bytes of `path` up to `data_end`, the file size); what is left out reads as zeros.

    NotRegularFile if `path` is a directory, a FIFO or another non-file.
    """
    with open(open_regular(path), "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        end = data_end(fd, size)
        if end >= size:
            return f.readall(), size
        return f.read(end), size


# -- evidence -------------------------------------------------------------------------

def _evidence_names(path: str):
    n = 1
    while True:
        yield f"{path}{EVIDENCE_SUFFIX}.{n}"
        n += 1


def keep_evidence_copy(path) -> str:
    """Copy `path` to the first free `<path>.broken.N`, fsync it and its directory; return it.

    The copy has the original's size and bytes; a hole at the end of the
    original (a preallocated tail) stays a hole in the copy.
    """
    path = os.fspath(path)
    for target in _evidence_names(path):
        try:
            out = open_private(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            continue
        break
    try:
        with open(path, "rb", buffering=0) as src:
            size = os.fstat(src.fileno()).st_size
            end = data_end(src.fileno(), size)
            while src.tell() < end:
                chunk = src.read(min(_COPY_CHUNK, end - src.tell()))
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        os.ftruncate(out, size)
        os.fsync(out)
    except BaseException:
        os.close(out)
        try:
            os.unlink(target)
        except OSError:
            pass
        raise
    os.close(out)
    fsync_dir(os.path.dirname(os.path.abspath(target)))
    return target


def move_to_evidence(path) -> str:
    """Rename `path` to the first free `<path>.broken.N` and fsync its directory; return the name.

    A hard link takes the new name, so an existing one is never replaced even
    by a rename racing with this one; a filesystem without hard links gets a
    plain rename to a name checked to be free.
    """
    path = os.fspath(path)
    for target in _evidence_names(path):
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if os.path.lexists(target):
                continue
            os.rename(path, target)
            break
        os.unlink(path)
        break
    fsync_dir(os.path.dirname(os.path.abspath(target)))
    return target


# -- Unix socket files --------------------------------------------------------------


def socket_in_use(path: str) -> bool:
    """Whether a process listens on the Unix stream socket at `path` (a connect gets through)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except TimeoutError:
        return True  # a listener whose queue is full: still someone's
    except OSError:
        return False  # no file, nobody listening (a killed process's), or not a socket
    finally:
        probe.close()
    return True


def claim_socket_path(path: str, endpoint: str) -> None:
    """Make way at `path` for a socket this process binds: InmemError if another process
    listens there; a socket file nobody listens on (a killed process left it) is removed."""
    if socket_in_use(path):
        raise InmemError(f"cannot listen on {endpoint}: another process is serving it")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["FILE_MODE", "DIR_MODE", "fsync_dir", "make_dirs", "NotADirectory", "kind_of",
           "describe_os_error", "STORE_LOCK_NAME", "is_store_dir", "is_cluster_dir",
           "enclosing_data_dir", "open_private", "private_opener",
           "try_lock", "lock_holder", "lock_is_held", "CLUSTER_LOCK_NAME", "socket_in_use", "claim_socket_path", "lock_file_pid", "serving_cluster_root", "data_end", "read_data", "open_regular", "NotRegularFile", "keep_evidence_copy", "move_to_evidence"]
