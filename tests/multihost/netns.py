"""Hosts for tests: Linux network namespaces on one bridge, made and removed by the test.

`Network(["coord", "s1", ...])` makes one namespace per host, each with an
`eth0` on a private subnet, joined by veth pairs to a bridge that lives in a
namespace of its own (the "switch"). Nothing is added to the namespace the
tests run in: every interface is created inside a test namespace, so all
traffic between the hosts stays inside namespaces the test made, and the
addresses (10.231.7.0/24) exist only there. Names carry the pid and a random
tag, so parallel test processes never meet.

`cut(host)` takes the host's switch port down (a partition), `heal(host)`
brings it back. `popen(host, argv)` runs a process on a host
(`ip netns exec`, which execs the command: the Popen's pid is the process's).
`close()` kills every process started through it (by process group) and
deletes the namespaces, which removes their interfaces.

Needs root and iproute2: `unavailable()` says why namespaces cannot be made
here (None when they can), for a skip with a reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time

SUBNET = "10.231.7"
#: how long one ip command may take
IP_TIMEOUT_S = 20


def _ip(*args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def unavailable() -> str | None:
    """Why network namespaces cannot be created here, or None."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    probe = f"inmprobe{os.getpid()}{secrets.token_hex(2)}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if r.returncode != 0:
            return f"cannot create a bridge in a network namespace: {r.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class Network:
    def __init__(self, hosts):
        tag = f"inm{os.getpid()}{secrets.token_hex(3)}"
        self.switch = f"{tag}-sw"
        self.ns = {h: f"{tag}-{h}" for h in hosts}
        self.address = {h: f"{SUBNET}.{i + 1}" for i, h in enumerate(hosts)}
        self.port = {h: f"p{i}" for i, h in enumerate(hosts)}
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def up(self) -> "Network":
        try:
            self._make(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for host, ns in self.ns.items():
                self._make(ns)
                port = self.port[host]
                _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                    "netns", self.switch)
                _ip("-n", ns, "addr", "add", f"{self.address[host]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", self.switch, "link", "set", port, "master", "br0")
                _ip("-n", self.switch, "link", "set", port, "up")
        except BaseException:
            self.close()
            raise
        return self

    def _make(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    # -- faults ----------------------------------------------------------------------

    def cut(self, host: str) -> None:
        """Partition `host` from every other: its switch port goes down."""
        _ip("-n", self.switch, "link", "set", self.port[host], "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self.port[host], "up")

    # -- processes -------------------------------------------------------------------

    def popen(self, host: str, argv, log_path=None, env=None) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns[host], *argv],
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            if log_path:
                out.close()
        self.procs.append(proc)
        return proc

    def run(self, host: str, argv, timeout: float, env=None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns[host], *argv], capture_output=True,
                              text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL a process started by popen, and everything in its process group."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
            pass

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)
        self.procs.clear()
        # A namespace goes once no process is in it; give killed ones a moment to go.
        deadline = time.monotonic() + 10
        for ns in reversed(self.made):
            while _ip("netns", "del", ns, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        left = set(_ip("netns", "list", check=False).stdout.split()) & set(self.made)
        self.made.clear()
        if left:
            raise RuntimeError(f"network namespaces left behind: {sorted(left)}")
