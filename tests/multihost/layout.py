"""A cluster across hosts for tests: the coordinator (with shard 0) on one namespace, shards 1
and 2 on two others, clients on a fourth, every tcp endpoint on Curve.

The processes are the ones an operator runs: `inmem serve --config` on the
coordinator's host and `inmem shard serve --config ... --shard N` on each
shard's (with test hooks, for the API suite, the same modules started from
the resolved spec, since test hooks are never a config setting). Each host
has its own data directory. Clients run `driver.py` on the client host.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inmem import keys as keyfiles
from inmem.coordinator import config as cfg
from inmem.processes import child_env

from .netns import Network

HOSTS = ("coord", "s1", "s2", "client")
COORD_PORT = 7700
SHARD_PORT = 7711
DRIVER = str(Path(__file__).with_name("driver.py"))
ROOT = str(Path(__file__).resolve().parents[2])


class MultiHostCluster:
    def __init__(self, net: Network, root: Path, *, durability: str = "strict",
                 test_hooks: bool = False):
        self.net = net
        self.root = Path(root)
        self.test_hooks = test_hooks
        self.keys = str(self.root / "keys")
        keyfiles.generate(self.keys, 3)
        self.url = f"tcp://{net.address['coord']}:{COORD_PORT}"
        self.shard_endpoint = {n: f"tcp://{net.address[f's{n}']}:{SHARD_PORT}" for n in (1, 2)}
        self.config = str(self.root / "cluster.toml")
        Path(self.config).write_text(f"""
[cluster]
data_dir = "{self.root / 'coord'}"
shards = 3
endpoint = "{self.url}"
keys = "{self.keys}"
[durability]
mode = "{durability}"
[supervisor]
heartbeat_interval_s = 0.2
heartbeat_timeout_s = 1.0
[[shard]]
id = 0
[[shard]]
id = 1
endpoint = "{self.shard_endpoint[1]}"
remote = true
[[shard]]
id = 2
endpoint = "{self.shard_endpoint[2]}"
remote = true
""")
        self.env = child_env()
        for name in list(self.env):
            if name.startswith(("PYTEST_", "COV_")):
                del self.env[name]  # the client host's own pytest must not think it is a worker
        self.shards: dict = {}
        self.coordinator = None

    def _spec(self, data_dir) -> str:
        return json.dumps(cfg.load(self.config, data_dir=str(data_dir), test_hooks=True))

    def start_shard(self, n: int):
        host = f"s{n}"
        data_dir = self.root / host
        if self.test_hooks:
            argv = [sys.executable, "-m", "inmem.shard.worker", "--shard", str(n), "--spec",
                    self._spec(data_dir)]
        else:
            argv = [sys.executable, "-m", "inmem", "shard", "serve", "--config", self.config,
                    "--shard", str(n), "--data-dir", str(data_dir)]
        self.shards[n] = self.net.popen(host, argv, self.root / f"{host}.log", self.env)
        return self.shards[n]

    def kill_shard(self, n: int) -> None:
        self.net.kill(self.shards.pop(n))

    def start_coordinator(self):
        if self.test_hooks:
            argv = [sys.executable, "-m", "inmem.coordinator", "--spec",
                    self._spec(self.root / "coord")]
        else:
            argv = [sys.executable, "-m", "inmem", "serve", "--config", self.config]
        self.coordinator = self.net.popen("coord", argv, self.root / "coord.log", self.env)
        return self.coordinator

    def start(self) -> "MultiHostCluster":
        for n in (1, 2):
            self.start_shard(n)
        self.start_coordinator()
        self.client("ready", timeout=90, wait=60)
        return self

    # -- the client host -------------------------------------------------------------

    def client(self, command: str, timeout: float = 60, **args) -> dict:
        args.setdefault("url", self.url)
        args.setdefault("keys", self.keys)
        if command == "ready":
            args["timeout"] = args.pop("wait", 30)
        r = self.net.run("client", [sys.executable, DRIVER, command, json.dumps(args)],
                         timeout=timeout, env=self.env)
        if r.returncode != 0:
            raise AssertionError(f"driver {command} failed ({r.returncode}):\n{r.stderr[-3000:]}"
                                 f"\n{self.logs()}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def client_popen(self, command: str, log_name: str, **args):
        args.setdefault("url", self.url)
        args.setdefault("keys", self.keys)
        return self.net.popen("client", [sys.executable, DRIVER, command, json.dumps(args)],
                              self.root / log_name, self.env)

    def status(self) -> dict:
        return self.client("status", timeout=30)

    def shard_state(self, n: int) -> str:
        return self.status()["shards"][n]["state"]

    def logs(self, lines: int = 15) -> str:
        out = []
        for f in sorted(self.root.glob("*.log")):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {f.name}\n" + "\n".join(text))
        return "\n".join(out)


def runs_on_shard(shard: int, count: int, prefix: str, shards: int = 3) -> list:
    """Run ids whose slot a fresh cluster of `shards` shards gives to `shard`."""
    from inmem.coordinator.slotmap import SlotMap
    from inmem.protocol import slot_of
    owners = SlotMap.even(shards).owners
    runs = (f"{prefix}-{i}" for i in range(100_000))
    return [r for r in runs if owners[slot_of(r)] == shard][:count]


__all__ = ["MultiHostCluster", "HOSTS", "runs_on_shard", "ROOT", "DRIVER"]
